"""Dunning wired into event processing through its post-apply hook.

Processing writes payments, invoices, customers and payment methods set-based and
then calls every registered hook with the rows that changed, inside the same
transaction. This hook turns those changes into recovery decisions: a payment or
invoice that failed opens (or escalates) a recovery, one that succeeded closes it, a
void invoice cancels it, and a customer's new default card resumes recoveries that
waited for them. Importing this module registers the hook (the recovery Dagster area
imports it, so every run in the code location has it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from stripe_pipeline.process.registry import RowChange, register_post_apply_hook
from stripe_pipeline.recover.open import (
    FailedPayment,
    RecoveryDecision,
    close_recovery,
    open_recovery,
    resume_for_customer,
    send_notifications,
)
from stripe_pipeline.recover.strategies import DEFAULT_POLICY, RecoveryPolicy

log = logging.getLogger(__name__)

FAILED_PAYMENT_STATUSES = ("requires_payment_method", "failed", "requires_action")
_state: dict[str, Any] = {"notifier": None, "policy": DEFAULT_POLICY}


def configure(*, notifier: Any | None = None, policy: RecoveryPolicy | None = None) -> None:
    """Set the notifier (customer-action and ticket messages) and the policy of the hook."""
    if notifier is not None:
        _state["notifier"] = notifier
    if policy is not None:
        _state["policy"] = policy


def _changed(before: Mapping[str, Any] | None, after: Mapping[str, Any], *keys: str) -> bool:
    return before is None or any(before.get(k) != after.get(k) for k in keys)


def decisions_for(conn: Connection, change: RowChange) -> list[RecoveryDecision | None]:
    """The recovery consequences of one changed domain row."""
    after, before, event_id = change.after, change.before, change.stripe_event_id
    actor = f"event:{event_id}"
    policy: RecoveryPolicy = _state["policy"]
    if change.table == "stripe_payments":
        # the table key is the PaymentIntent id (or a legacy charge id): not an audit field
        after = {**after, "payment_intent_id": change.object_id}
        status = after.get("status")
        if status == "succeeded" and _changed(before, after, "status"):
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
            return [open_recovery(conn, failure, policy=policy, actor=actor)]
    elif change.table == "stripe_invoices":
        status = after.get("status")
        invoice_id = after.get("stripe_invoice_id") or change.object_id
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
            return [open_recovery(conn, failure, policy=policy, actor=actor)]
    elif change.table == "stripe_customers":
        new_card = after.get("default_payment_method_id")
        if new_card and before is not None and _changed(before, after, "default_payment_method_id"):
            resume_for_customer(
                conn,
                after.get("stripe_customer_id") or change.object_id,
                stripe_event_id=event_id,
                payment_method_id=new_card,
                actor=actor,
            )
    elif change.table == "stripe_payment_methods":
        attached = after.get("attached") and after.get("customer_id")
        if attached and _changed(before, after, "attached"):
            resume_for_customer(
                conn,
                after["customer_id"],
                stripe_event_id=event_id,
                payment_method_id=after.get("stripe_payment_method_id") or change.object_id,
                actor=actor,
            )
    return []


@register_post_apply_hook
def recovery_post_apply_hook(conn: Connection, changes: list[RowChange]) -> None:
    """Open, escalate, close or resume recoveries for a processed batch."""
    decisions: list[RecoveryDecision | None] = []
    for change in changes:
        decisions.extend(decisions_for(conn, change))
    notifier = _state["notifier"]
    if notifier is None:
        from stripe_pipeline.support.notify import LogNotifier

        notifier = _state["notifier"] = LogNotifier()
    # sent inside the batch: a rolled-back batch may repeat a message, never lose one
    send_notifications(notifier, decisions)
