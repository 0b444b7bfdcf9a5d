"""The processor a run applies batches with: handlers, post-apply hooks, peer, notifier.

Each entry point (the Dagster processing asset, ``stripe-pipeline process``, the
benchmarks) builds one and hands it to ``runner.process_pending``; nothing is found
by import or kept in module state, so what a run does is what its caller passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from stripe_pipeline.catalog import CATALOG
from stripe_pipeline.catalog.model import Catalog, InvoicePaymentSource
from stripe_pipeline.process.apply import ApplyResult, apply_events
from stripe_pipeline.process.events import QueuedEvent
from stripe_pipeline.process.hooks import PostApplyHook
from stripe_pipeline.support.notify import LogNotifier, Notifier


@dataclass(frozen=True)
class Processor:
    """What a processing run needs besides the queue.

    ``catalog`` routes each event type to its resource's parser; ``hooks`` see every
    batch's changed rows and return the notifications they want sent; ``peer`` is
    the run's Stripe API peer (a charge's refunds, a PaymentIntent's invoice payments,
    invoice lines, objects a row names), ``None`` without an API key; ``notifier``
    sends hook and dead-letter notifications after each batch commits.
    """

    notifier: Notifier = field(default_factory=LogNotifier)
    hooks: tuple[PostApplyHook, ...] = ()
    catalog: Catalog = CATALOG
    peer: Any = None

    def apply(
        self, conn: Connection, events: Sequence[QueuedEvent], *, actor_prefix: str = "event"
    ) -> ApplyResult:
        """Apply a claimed batch inside the caller's transaction (never commits)."""
        invoice_payments = self.peer if isinstance(self.peer, InvoicePaymentSource) else None
        return apply_events(
            conn,
            events,
            catalog=self.catalog,
            refund_source=self.peer,
            invoice_payment_source=invoice_payments,
            actor_prefix=actor_prefix,
            hooks=self.hooks,
        )
