"""The processor every processing entry point runs, assembled in one place.

The Dagster processing asset, ``stripe-pipeline process`` and the processing
benchmarks each call ``build_processor`` with the notifier and Stripe peer they were
configured with: the catalog's handlers, dunning as the post-apply hook. Adding a
hook is one line here, and every entry point gets it.
"""

from __future__ import annotations

from typing import Any

from stripe_pipeline.catalog import CATALOG
from stripe_pipeline.process.processor import Processor
from stripe_pipeline.recover.hook import RecoveryHook
from stripe_pipeline.recover.strategies import DEFAULT_POLICY, RecoveryPolicy
from stripe_pipeline.support.notify import Notifier


def build_processor(
    notifier: Notifier,
    *,
    peer: Any = None,
    recovery_policy: RecoveryPolicy = DEFAULT_POLICY,
) -> Processor:
    """The catalog's handlers with dunning, reporting to ``notifier`` after each commit."""
    return Processor(
        notifier=notifier,
        hooks=(RecoveryHook(recovery_policy),),
        catalog=CATALOG,
        peer=peer,
    )
