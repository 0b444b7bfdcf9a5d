"""Dunning wired into event processing through its post-apply hook.

Processing writes payments, invoices, customers and payment methods set-based and
then calls every registered hook with the rows that changed, inside the same
transaction. This hook turns those changes into recovery decisions: a payment or
invoice that failed opens (or escalates) a recovery, one that succeeded closes it, a
void invoice cancels it, and a customer's new default card resumes recoveries that
waited for them. A change that makes an invoice <-> PaymentIntent link known (basil
accounts: an invoice payment arrived) first merges the two recoveries one failure may
have opened before the link was known (``merge``). Entry points pass
``RecoveryHook(policy)`` in their ``Processor``; its notifications (customer action
needed, recovery blocked or exhausted) go back to the runner, which sends them after
the batch commits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from stripe_pipeline.process.hooks import RowChange
from stripe_pipeline.recover.merge import merge_linked
from stripe_pipeline.recover.open import (
    LIVE_STATUSES,
    RECOVERIES,
    FailedPayment,
    RecoveryDecision,
    close_recovery,
    notifications_of,
    open_recovery,
    resume_for_customer,
)
from stripe_pipeline.recover.strategies import DEFAULT_POLICY, RecoveryPolicy
from stripe_pipeline.support.notify import Notification

log = logging.getLogger(__name__)

FAILED_PAYMENT_STATUSES = ("requires_payment_method", "failed", "requires_action")


@dataclass
class LiveRecoveries:
    """Which payments, invoices and customers of a batch have a live recovery.

    Found with one query per batch, so that the usual event (a payment that simply
    succeeded, a card attached by a customer in good standing) costs no round trip.
    """

    payment_intents: set[str] = field(default_factory=set)
    invoices: set[str] = field(default_factory=set)
    awaiting_customers: set[str] = field(default_factory=set)
    # PaymentIntents whose recovery, opened before their invoice was known, recovered:
    # a link made known now may have to merge it with the invoice's
    recovered_payment_intents: set[str] = field(default_factory=set)
    complete: bool = False  # True: assume every key may have one (no prefilter)

    @classmethod
    def everything(cls) -> LiveRecoveries:
        return cls(complete=True)

    def has(self, *, payment_intent_id: str | None = None, invoice_id: str | None = None) -> bool:
        return (
            self.complete
            or payment_intent_id in self.payment_intents
            or invoice_id in self.invoices
        )

    def may_merge(self, payment_intent_id: str, invoice_id: str) -> bool:
        return (
            self.has(payment_intent_id=payment_intent_id, invoice_id=invoice_id)
            or payment_intent_id in self.recovered_payment_intents
        )

    def awaits(self, customer_id: str) -> bool:
        return self.complete or customer_id in self.awaiting_customers

    def add(self, failure: FailedPayment) -> None:
        """A recovery opened in this batch: a later change of the batch may close it."""
        if failure.payment_intent_id:
            self.payment_intents.add(failure.payment_intent_id)
        if failure.invoice_id:
            self.invoices.add(failure.invoice_id)


def live_recoveries(conn: Connection, changes: list[RowChange]) -> LiveRecoveries:
    payment_intents, invoices, customers = set(), set(), set()
    for change in changes:
        after = change.after
        if change.table == "stripe_payments":
            payment_intents.add(change.object_id)
            if after.get("invoice_id"):
                invoices.add(after["invoice_id"])
        elif change.table == "stripe_invoices":
            invoices.add(change.object_id)
            if after.get("payment_intent_id"):
                payment_intents.add(after["payment_intent_id"])
        elif change.table == "stripe_customers":
            customers.add(change.object_id)
        elif change.table == "stripe_payment_methods" and after.get("customer_id"):
            customers.add(after["customer_id"])
    found = LiveRecoveries()
    if not (payment_intents or invoices or customers):
        return found
    r = RECOVERIES.c
    rows = conn.execute(
        select(r.payment_intent_id, r.invoice_id, r.customer_id, r.status).where(
            or_(
                and_(
                    r.status.in_(LIVE_STATUSES),
                    or_(
                        r.payment_intent_id.in_(sorted(payment_intents)),
                        r.invoice_id.in_(sorted(invoices)),
                        r.customer_id.in_(sorted(customers)),
                    ),
                ),
                and_(
                    r.status == "recovered",
                    r.invoice_id.is_(None),
                    r.payment_intent_id.in_(sorted(payment_intents)),
                ),
            )
        )
    )
    for pi, invoice, customer, status in rows:
        if status == "recovered":
            found.recovered_payment_intents.add(pi)
            continue
        if pi:
            found.payment_intents.add(pi)
        if invoice:
            found.invoices.add(invoice)
        if customer and status == "awaiting_customer":
            found.awaiting_customers.add(customer)
    return found


def _changed(before: Mapping[str, Any] | None, after: Mapping[str, Any], *keys: str) -> bool:
    return before is None or any(before.get(k) != after.get(k) for k in keys)


def newly_linked(change: RowChange) -> tuple[str, str] | None:
    """(PaymentIntent, invoice) when this change made their link known: a payment that
    now names its invoice, an invoice that now names its PaymentIntent."""
    before, after = change.before or {}, change.after
    if change.table == "stripe_payments":
        invoice_id = after.get("invoice_id")
        if invoice_id and before.get("invoice_id") != invoice_id:
            return change.object_id, invoice_id
    elif change.table == "stripe_invoices":
        payment_intent_id = after.get("payment_intent_id")
        if payment_intent_id and before.get("payment_intent_id") != payment_intent_id:
            return payment_intent_id, change.object_id
    return None


def merges_for(
    conn: Connection,
    changes: list[RowChange],
    live: LiveRecoveries,
    policy: RecoveryPolicy = DEFAULT_POLICY,
) -> list[RecoveryDecision | None]:
    """Merge the recoveries of every link the batch made known, before any other
    decision: a success must close the one recovery left, a failure update it."""
    decisions: list[RecoveryDecision | None] = []
    seen: set[tuple[str, str]] = set()
    for change in changes:
        pair = newly_linked(change)
        if pair is None or pair in seen:
            continue
        seen.add(pair)
        payment_intent_id, invoice_id = pair
        if live.may_merge(payment_intent_id, invoice_id):
            decisions.append(
                merge_linked(
                    conn,
                    payment_intent_id=payment_intent_id,
                    invoice_id=invoice_id,
                    policy=policy,
                    actor=f"event:{change.stripe_event_id}",
                    stripe_event_id=change.stripe_event_id or None,
                )
            )
    return decisions


def decisions_for(
    conn: Connection,
    change: RowChange,
    live: LiveRecoveries | None = None,
    policy: RecoveryPolicy = DEFAULT_POLICY,
) -> list[RecoveryDecision | None]:
    """The recovery consequences of one changed domain row.

    ``live`` (what :func:`live_recoveries` found for the batch) lets the common case,
    a success or a new card with no recovery waiting, skip its database round trip.
    """
    live = live or LiveRecoveries.everything()
    after, before, event_id = change.after, change.before, change.stripe_event_id
    actor = f"event:{event_id}"
    if change.table == "stripe_payments":
        # the table key is the PaymentIntent id (or a legacy charge id): not an audit field
        after = {**after, "payment_intent_id": change.object_id}
        status = after.get("status")
        if status == "succeeded" and _changed(before, after, "status"):
            if not live.has(
                payment_intent_id=after["payment_intent_id"], invoice_id=after.get("invoice_id")
            ):
                return []
            return [
                close_recovery(
                    conn,
                    payment_intent_id=after.get("payment_intent_id"),
                    invoice_id=after.get("invoice_id"),
                    stripe_event_id=event_id,
                    actor=actor,
                    via="payment_succeeded",
                )
            ]
        failed = status in FAILED_PAYMENT_STATUSES and (
            after.get("failure_code") or after.get("decline_code")
        )
        if failed and _changed(before, after, "status", "failure_code", "decline_code"):
            failure = FailedPayment(
                payment_intent_id=after.get("payment_intent_id"),
                invoice_id=after.get("invoice_id"),
                customer_id=after.get("customer_id"),
                payment_method_id=after.get("payment_method_id"),
                card_fingerprint=after.get("card_fingerprint"),
                failure_code=after.get("failure_code"),
                decline_code=after.get("decline_code"),
                payment_status=status,
                amount_minor=after.get("amount_minor"),
                currency=after.get("currency"),
                stripe_event_id=event_id,
            )
            live.add(failure)
            return [open_recovery(conn, failure, policy=policy, actor=actor)]
    elif change.table == "stripe_invoices":
        status = after.get("status")
        invoice_id = after.get("stripe_invoice_id") or change.object_id
        closing = status in ("paid", "void", "uncollectible") and _changed(before, after, "status")
        if closing and not live.has(invoice_id=invoice_id):
            return []
        if status == "paid" and _changed(before, after, "status"):
            return [
                close_recovery(
                    conn, invoice_id=invoice_id, stripe_event_id=event_id, actor=actor, via="paid"
                )
            ]
        if status in ("void", "uncollectible") and _changed(before, after, "status"):
            return [
                close_recovery(
                    conn,
                    invoice_id=invoice_id,
                    status="canceled",
                    stripe_event_id=event_id,
                    actor=actor,
                    via=status,
                )
            ]
        attempts = after.get("attempt_count") or 0
        grew = attempts > ((before or {}).get("attempt_count") or 0)
        if status == "open" and grew and (after.get("amount_remaining_minor") or 0) > 0:
            failure = FailedPayment(
                payment_intent_id=after.get("payment_intent_id"),
                invoice_id=invoice_id,
                customer_id=after.get("customer_id"),
                amount_minor=after.get("amount_remaining_minor"),
                currency=after.get("currency"),
                stripe_event_id=event_id,
            )
            live.add(failure)
            return [open_recovery(conn, failure, policy=policy, actor=actor)]
    elif change.table == "stripe_customers":
        new_card = after.get("default_payment_method_id")
        customer_id = after.get("stripe_customer_id") or change.object_id
        if (
            new_card
            and before is not None
            and _changed(before, after, "default_payment_method_id")
            and live.awaits(customer_id)
        ):
            resume_for_customer(
                conn,
                customer_id,
                stripe_event_id=event_id,
                payment_method_id=new_card,
                actor=actor,
            )
    elif change.table == "stripe_payment_methods":
        attached = after.get("attached") and after.get("customer_id")
        if attached and _changed(before, after, "attached") and live.awaits(after["customer_id"]):
            resume_for_customer(
                conn,
                after["customer_id"],
                stripe_event_id=event_id,
                payment_method_id=after.get("stripe_payment_method_id") or change.object_id,
                actor=actor,
            )
    return []


@dataclass(frozen=True)
class RecoveryHook:
    """The post-apply hook of dunning: open, escalate, close or resume recoveries for a
    processed batch, and return what to tell people once the batch commits."""

    policy: RecoveryPolicy = DEFAULT_POLICY

    def __call__(self, conn: Connection, changes: list[RowChange]) -> list[Notification]:
        live = live_recoveries(conn, changes)
        decisions = merges_for(conn, changes, live, self.policy)
        for change in changes:
            decisions.extend(decisions_for(conn, change, live, self.policy))
        return notifications_of(decisions)
