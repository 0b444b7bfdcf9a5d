"""Invoices (``stripe_invoices``), old and new shapes.

https://docs.stripe.com/api/invoices/object

Since 2025-03-31.basil an invoice no longer carries ``subscription``, ``charge`` or
``payment_intent`` at the top: the subscription is under
``parent.subscription_details.subscription`` and payments under ``payments.data[]
.payment``. Old versions (and localstripe) carry them at the top, and very old ones
have ``paid`` / ``forgiven`` / ``closed`` flags and ``date`` instead of ``status`` and
``created``.

Discount objects the invoice or its lines carry (``discount``, or expanded
``discounts``) are stored as unversioned ``stripe_discounts`` rows; the SQL twin
leaves such invoices to Python (most carry none, or only discount ids).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stripe_pipeline.catalog.discounts import embedded_discount_rows
from stripe_pipeline.catalog.invoice_payments import expanded_invoice_payments
from stripe_pipeline.catalog.model import (
    Column,
    EventContext,
    Fetch,
    Listing,
    Policy,
    Resource,
    Route,
    RowWrite,
)
from stripe_pipeline.catalog.readers import (
    amount,
    currency,
    dig,
    integer,
    list_data,
    object_id,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripeInvoice

N, K, L = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.LEAST
TABLE = StripeInvoice.__tablename__

COLUMNS = (
    Column("customer_id", K),
    Column("subscription_id", K),
    # since basil filled from invoice payments (``invoice_payments.RESOURCE.links``)
    Column("payment_intent_id", K, audit=True),
    Column("charge_id", K, audit=True),
    Column("status", N, audit=True),
    Column("billing_reason", K),
    Column("currency", K),
    Column("amount_due_minor", N, audit=True),
    Column("amount_paid_minor", N, audit=True),
    Column("amount_remaining_minor", N, audit=True),
    Column("attempt_count", N, audit=True),
    Column("next_payment_attempt", N, audit=True),
    Column("period_start", N),
    Column("period_end", N),
    Column("due_date", N),
    Column("paid_at", K, audit=True),
    Column("marked_uncollectible_at", K, audit=True),
    # a deleted draft (``invoice.deleted``; Stripe then answers 404 for it)
    Column("deleted_at", L, audit=True),
    Column("stripe_created", K),
    Column("livemode", N),
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


def _legacy_status(invoice: dict[str, Any]) -> str:
    """Before 2018-11-08 invoices had flags, not a status. An unpaid one was open (a
    ``closed`` one had only stopped retrying: today's ``auto_advance: false``, not void)."""
    if invoice.get("paid"):
        return "paid"
    if invoice.get("forgiven"):
        return "uncollectible"
    return "open"


def _legacy_amount(invoice: dict[str, Any], key: str, due: int | None) -> int | None:
    """``amount_paid`` / ``amount_remaining`` of an invoice older than those fields (2013):
    all of the amount due was paid, or none of it."""
    if key in invoice:
        return amount(invoice[key])
    if due is None:
        return None
    paid = bool(invoice.get("paid"))
    if key == "amount_paid":
        return due if paid else 0
    return 0 if paid else due


ROUTED = (
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
    "invoice.deleted",
)


def apply_invoice_event(ctx: EventContext) -> Iterable[RowWrite]:
    invoice = ctx.obj
    new_pi, new_charge = _payment_refs(invoice)
    transitions = invoice.get("status_transitions") or {}
    status = text(invoice.get("status")) or _legacy_status(invoice)
    due = amount(invoice.get("amount_due"))
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
        "amount_due_minor": due,
        "amount_paid_minor": _legacy_amount(invoice, "amount_paid", due),
        "amount_remaining_minor": _legacy_amount(invoice, "amount_remaining", due),
        "attempt_count": integer(invoice.get("attempt_count")),
        "next_payment_attempt": unix_time(invoice.get("next_payment_attempt")),
        "period_start": unix_time(invoice.get("period_start")),
        "period_end": unix_time(invoice.get("period_end")),
        "due_date": unix_time(invoice.get("due_date")),
        "paid_at": paid_at,
        "marked_uncollectible_at": uncollectible_at,
        "deleted_at": unix_time(ctx.created) if ctx.event_type == "invoice.deleted" else None,
        "stripe_created": integer(invoice.get("created", invoice.get("date"))),
        "livemode": ctx.livemode,
    }
    invoice_id = object_id(invoice)
    return [
        RowWrite(TABLE, invoice_id, values),
        *expanded_invoice_payments(ctx, invoice_id),
        *embedded_discount_rows(invoice, created=ctx.created, livemode=ctx.livemode),
    ]


RESOURCE = Resource(
    object_type="invoice",
    table=StripeInvoice.__table__,
    key="stripe_invoice_id",
    columns=COLUMNS,
    # no SQL twin: invoice events also carry the invoice's totals and lines (joined
    # routes, nested lists), parsed in Python; the invoice row alone measured no faster
    # in SQL than in Python (tests/test_extract_sql.py)
    routes=(Route(ROUTED, apply_invoice_event, frozenset({"invoice"})),),
    listings=(Listing("invoices", "/v1/invoices", read_as="invoice.updated"),),
    fetch=(Fetch("/v1/invoices/{id}", "invoice.updated"),),
    # only a draft can be deleted; Stripe then answers 404 for it
    gone_means_deleted=lambda row: row.get("status") == "draft",
    docs="https://docs.stripe.com/api/invoices/object",
    deleted_marker="deleted_at",
)
