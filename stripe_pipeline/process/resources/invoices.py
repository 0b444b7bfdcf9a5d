"""Invoices (``stripe_invoices``), old and new shapes.

https://docs.stripe.com/api/invoices/object

Since 2025-03-31.basil an invoice no longer carries ``subscription``, ``charge`` or
``payment_intent`` at the top: the subscription is under
``parent.subscription_details.subscription`` and payments under ``payments.data[]
.payment``. Old versions (and localstripe) carry them at the top, and very old ones
have ``paid`` / ``forgiven`` / ``closed`` flags and ``date`` instead of ``status`` and
``created``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stripe_pipeline.db.models import StripeInvoice
from stripe_pipeline.process.registry import EventContext, RowWrite, handles
from stripe_pipeline.process.resources.fields import (
    currency,
    dig,
    integer,
    list_data,
    object_id,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.process.upsert import Policy, TableSpec

N, K = Policy.NEWEST, Policy.NEWEST_KNOWN

SPEC = TableSpec(
    table=StripeInvoice.__table__,
    key="stripe_invoice_id",
    policies={
        "customer_id": K,
        "subscription_id": K,
        "payment_intent_id": K,
        "charge_id": K,
        "status": N,
        "billing_reason": K,
        "currency": K,
        "amount_due_minor": N,
        "amount_paid_minor": N,
        "amount_remaining_minor": N,
        "attempt_count": N,
        "next_payment_attempt": N,
        "period_start": N,
        "period_end": N,
        "due_date": N,
        "paid_at": K,
        "marked_uncollectible_at": K,
        "stripe_created": K,
        "livemode": N,
    },
    object_type="invoice",
    audit_fields=(
        "status",
        "amount_due_minor",
        "amount_paid_minor",
        "amount_remaining_minor",
        "attempt_count",
        "next_payment_attempt",
        "paid_at",
        "marked_uncollectible_at",
    ),
)

PAID_EVENTS = frozenset({"invoice.paid", "invoice.payment_succeeded"})


def _payment_refs(invoice: dict[str, Any]) -> tuple[str | None, str | None]:
    """(payment_intent, charge) of today's ``payments`` list, preferring the paid payment."""
    entries = [p for p in list_data(invoice.get("payments")) if isinstance(p, dict)]
    entries.sort(key=lambda p: p.get("status") == "paid")  # stable: paid ones last
    for entry in reversed(entries):
        payment = entry.get("payment") or {}
        pi, charge = ref_id(payment.get("payment_intent")), ref_id(payment.get("charge"))
        if pi or charge:
            return pi, charge
    return None, None


def _legacy_status(invoice: dict[str, Any]) -> str | None:
    if invoice.get("paid"):
        return "paid"
    if invoice.get("forgiven"):
        return "uncollectible"
    if invoice.get("closed"):
        return "void"
    return None


@handles(
    "invoice.created",
    "invoice.updated",
    "invoice.finalized",
    "invoice.finalization_failed",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.marked_uncollectible",
    "invoice.voided",
    "invoice.sent",
    "invoice.overdue",
)
def apply_invoice_event(ctx: EventContext) -> Iterable[RowWrite]:
    invoice = ctx.obj
    new_pi, new_charge = _payment_refs(invoice)
    transitions = invoice.get("status_transitions") or {}
    status = text(invoice.get("status")) or _legacy_status(invoice)
    paid_at = unix_time(transitions.get("paid_at"))
    if paid_at is None and ctx.event_type in PAID_EVENTS and status == "paid":
        paid_at = unix_time(ctx.created)
    uncollectible_at = unix_time(transitions.get("marked_uncollectible_at"))
    if uncollectible_at is None and ctx.event_type == "invoice.marked_uncollectible":
        uncollectible_at = unix_time(ctx.created)
    values = {
        "customer_id": ref_id(invoice.get("customer")),
        "subscription_id": ref_id(invoice.get("subscription"))
        or ref_id(dig(invoice, "parent", "subscription_details", "subscription")),
        "payment_intent_id": ref_id(invoice.get("payment_intent")) or new_pi,
        "charge_id": ref_id(invoice.get("charge")) or new_charge,
        "status": status,
        "billing_reason": text(invoice.get("billing_reason")),
        "currency": currency(invoice.get("currency")),
        "amount_due_minor": integer(invoice.get("amount_due")),
        "amount_paid_minor": integer(invoice.get("amount_paid")),
        "amount_remaining_minor": integer(invoice.get("amount_remaining")),
        "attempt_count": integer(invoice.get("attempt_count")),
        "next_payment_attempt": unix_time(invoice.get("next_payment_attempt")),
        "period_start": unix_time(invoice.get("period_start")),
        "period_end": unix_time(invoice.get("period_end")),
        "due_date": unix_time(invoice.get("due_date")),
        "paid_at": paid_at,
        "marked_uncollectible_at": uncollectible_at,
        "stripe_created": integer(invoice.get("created", invoice.get("date"))),
        "livemode": ctx.livemode,
    }
    return [RowWrite(SPEC.name, object_id(invoice), values)]
