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

from stripe_pipeline.catalog import sql_readers as q
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
    SqlWrite,
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


# --- SQL twin (``extract_sql``): the same row, read by PostgreSQL ---


# ``list_data(invoice.get("payments"))``
_PAYMENTS = q.list_data(q.field("o", "payments"))

# one entry ``p`` of ``_payment_refs``'s loop: ``payment = p.get("payment") or {}``
_PAY = "(p -> 'payment')"
_PAY_PI = q.ref_id(q.field(_PAY, "payment_intent"))
_PAY_CHARGE = q.ref_id(q.field(_PAY, "charge"))
# the entry raises: a truthy non-object payment, or an id of the wrong type
_PAY_ERROR = (
    f"(CASE WHEN jsonb_typeof({_PAY}) = 'object' THEN NOT ({_PAY_PI.ok} AND {_PAY_CHARGE.ok}) "
    f"ELSE NOT {q.falsy_or(_PAY, 'object')} END)"
)
_PAY_MATCH = (
    f"(CASE WHEN jsonb_typeof({_PAY}) = 'object' AND {_PAY_PI.ok} AND {_PAY_CHARGE.ok} "
    f"THEN coalesce(nullif({_PAY_PI.value}, ''), nullif({_PAY_CHARGE.value}, '')) IS NOT NULL "
    f"ELSE false END)"
)


def _first_payment(column: str) -> str:
    """``column`` of the entry the loop stops at (a match or a raise): paid ones first,
    each group newest (last) first, as ``sort`` + ``reversed`` visit them."""
    return (
        f"(SELECT {column} FROM jsonb_array_elements({_PAYMENTS.value}) "
        f"WITH ORDINALITY AS pe(p, n) "
        f"WHERE jsonb_typeof(p) = 'object' AND ({_PAY_ERROR} OR {_PAY_MATCH}) "
        f"ORDER BY coalesce((p -> 'status') = '\"paid\"'::jsonb, false) DESC, n DESC LIMIT 1)"
    )


_NEW_PI = q.Expr(_first_payment(f"(CASE WHEN {_PAY_MATCH} THEN {_PAY_PI.value} END)"))
_NEW_CHARGE = q.Expr(_first_payment(f"(CASE WHEN {_PAY_MATCH} THEN {_PAY_CHARGE.value} END)"))
_PAYMENT_REFS_OK = f"({_PAYMENTS.ok} AND NOT coalesce({_first_payment(_PAY_ERROR)}, false))"

_TRANSITIONS = q.object_or_empty(q.field("o", "status_transitions"))
_PAID_AT = q.unix_time(q.field(_TRANSITIONS.value, "paid_at"))
_UNCOLLECTIBLE_AT = q.unix_time(q.field(_TRANSITIONS.value, "marked_uncollectible_at"))

_PAID, _FORGIVEN = (q.json_truth(q.field("o", k)) for k in ("paid", "forgiven"))
_LEGACY_STATUS = q.Expr(
    f"(CASE WHEN {_PAID.value} THEN 'paid' WHEN {_FORGIVEN.value} THEN 'uncollectible' "
    f"ELSE 'open' END)",
    q.all_ok(_PAID, _FORGIVEN),
)
_DUE = q.amount(q.field("o", "amount_due"))


def _legacy_amount_sql(key: str, if_paid: str, if_unpaid: str) -> q.Expr:
    """``_legacy_amount``: the field when present, else all or nothing of the amount due."""
    found = q.amount(q.field("o", key))
    return q.Expr(
        f"(CASE WHEN o ? '{key}' THEN {found.value} WHEN {_DUE.value} IS NULL THEN NULL "
        f"WHEN {_PAID.value} THEN {if_paid} ELSE {if_unpaid} END)",
        f"({_DUE.ok} AND CASE WHEN o ? '{key}' THEN {found.ok} ELSE {_PAID.ok} END)",
    )


_STATUS = q.either(q.text(q.field("o", "status")), _LEGACY_STATUS)
_PAID_EVENT_TYPES = ", ".join(f"'{t}'" for t in sorted(PAID_EVENTS))
_CREATED = "(CASE WHEN o ? 'created' THEN (o -> 'created') ELSE (o -> 'date') END)"

# an expanded list of full InvoicePayment objects (a listing or fetch asked for them;
# webhooks do not include ``payments``): their rows are Python's
_EXPANDED_PAYMENTS = (
    f"EXISTS (SELECT 1 FROM jsonb_array_elements({_PAYMENTS.value}) AS listed(p) "
    "WHERE jsonb_typeof(p) = 'object' AND coalesce(jsonb_typeof(p -> 'id') <> 'null', false))"
)


def _no_discount_objects(base: str) -> str:
    """``base`` carries no discount object: no ``discount``, and ``discounts`` absent,
    null or an array of ids (anything else goes to Python, which stores or refuses it)."""
    one, many = q.field(base, "discount"), q.field(base, "discounts")
    return (
        f"(coalesce(jsonb_typeof({one}), 'null') = 'null' AND "
        f"(coalesce(jsonb_typeof({many}), 'null') = 'null' OR "
        f"(jsonb_typeof({many}) = 'array' AND NOT EXISTS (SELECT 1 FROM "
        f"jsonb_array_elements({many}) AS carried(d) WHERE jsonb_typeof(d) <> 'string'))))"
    )


_LINES, _LINE_DATA = q.field("o", "lines"), q.field("o", "lines", "data")
# ``embedded_discount_rows``: the invoice or one of its listed lines carries a discount
# object (or a shape only Python can judge); the handler stores it
_CARRIES_DISCOUNTS = (
    f"NOT ({_no_discount_objects('o')} AND (coalesce(jsonb_typeof({_LINES}), 'null') = 'null' "
    f"OR (jsonb_typeof({_LINES}) = 'object' AND coalesce(jsonb_typeof({_LINE_DATA}), 'null') "
    f"IN ('null', 'array') AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN "
    f"jsonb_typeof({_LINE_DATA}) = 'array' THEN {_LINE_DATA} ELSE '[]'::jsonb END) AS line(l) "
    f"WHERE jsonb_typeof(l) = 'object' AND NOT {_no_discount_objects('l')}))))"
)

TWIN = SqlWrite(
    TABLE,
    key=q.object_id(),
    ok=q.Expr("true", f"({_PAYMENT_REFS_OK} AND {_TRANSITIONS.ok})"),
    defer=f"({_EXPANDED_PAYMENTS} OR {_CARRIES_DISCOUNTS})",
    values={
        "customer_id": q.ref_id(q.field("o", "customer")),
        "subscription_id": q.either(
            q.ref_id(q.field("o", "subscription")),
            q.ref_id(q.field("o", "parent", "subscription_details", "subscription")),
        ),
        "payment_intent_id": q.either(q.ref_id(q.field("o", "payment_intent")), _NEW_PI),
        "charge_id": q.either(q.ref_id(q.field("o", "charge")), _NEW_CHARGE),
        "status": _STATUS,
        "billing_reason": q.text(q.field("o", "billing_reason")),
        "currency": q.currency(q.field("o", "currency")),
        "amount_due_minor": _DUE,
        "amount_paid_minor": _legacy_amount_sql("amount_paid", _DUE.value, "0"),
        "amount_remaining_minor": _legacy_amount_sql("amount_remaining", "0", _DUE.value),
        "attempt_count": q.integer(q.field("o", "attempt_count")),
        "next_payment_attempt": q.unix_time(q.field("o", "next_payment_attempt")),
        "period_start": q.unix_time(q.field("o", "period_start")),
        "period_end": q.unix_time(q.field("o", "period_end")),
        "due_date": q.unix_time(q.field("o", "due_date")),
        "paid_at": q.Expr(
            f"coalesce({_PAID_AT.value}, CASE WHEN e.event_type IN ({_PAID_EVENT_TYPES}) "
            f"AND {_STATUS.value} = 'paid' THEN {q.event_time().value} END)",
            _PAID_AT.ok,
        ),
        "marked_uncollectible_at": q.Expr(
            f"coalesce({_UNCOLLECTIBLE_AT.value}, CASE WHEN e.event_type = "
            f"'invoice.marked_uncollectible' THEN {q.event_time().value} END)",
            _UNCOLLECTIBLE_AT.ok,
        ),
        "deleted_at": q.constant(
            f"(CASE WHEN e.event_type = 'invoice.deleted' THEN {q.event_time().value} END)"
        ),
        "stripe_created": q.integer(_CREATED),
        "livemode": q.livemode(),
    },
)

RESOURCE = Resource(
    object_type="invoice",
    table=StripeInvoice.__table__,
    key="stripe_invoice_id",
    columns=COLUMNS,
    routes=(Route(ROUTED, apply_invoice_event, frozenset({"invoice"}), (TWIN,)),),
    listings=(Listing("invoices", "/v1/invoices", read_as="invoice.updated"),),
    fetch=(Fetch("/v1/invoices/{id}", "invoice.updated"),),
    # only a draft can be deleted; Stripe then answers 404 for it
    gone_means_deleted=lambda row: row.get("status") == "draft",
    docs="https://docs.stripe.com/api/invoices/object",
    deleted_marker="deleted_at",
)
