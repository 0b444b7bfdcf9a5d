"""Invoice payments (``stripe_invoice_payments``): the invoice <-> payment link.

https://docs.stripe.com/api/invoice-payment/object

Since API version 2025-03-31.basil ``invoice.payment_intent`` / ``invoice.charge`` and
``payment_intent.invoice`` are gone: an InvoicePayment ties one payment
(``payment.type`` ``payment_intent``, ``charge`` or ``payment_record``) to one invoice.
It is ``open`` until its payment succeeds (``paid``; ``amount_paid`` stays null until
then) or is detached from the invoice (``canceled``). Stripe creates the invoice's
default one (``is_default``) when the invoice is finalized. Preview API versions
(2025-11-17.preview) move ``payment_intent`` / ``charge`` to the top; both are read.

They arrive as ``invoice_payment.paid`` (the only event type: a failed attempt fires
none), in an invoice's expanded ``payments`` list, from ``GET /v1/invoice_payments``
(reconciliation) and, for a failed payment of a basil payload, from a lookup by
PaymentIntent through an :class:`~stripe_pipeline.catalog.model.InvoicePaymentSource`
(the rate-limited API client), so the link is stored before dunning sees the failure.

Their rows fill the links (:class:`~stripe_pipeline.catalog.model.Link`):
``stripe_payments.invoice_id`` and ``stripe_invoices.payment_intent_id`` /
``charge_id``, preferring a paid payment, then an open one, then the invoice's
default, then the newest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stripe_pipeline.catalog import sql_readers as q
from stripe_pipeline.catalog.model import (
    Column,
    EventContext,
    Fetch,
    Link,
    Listing,
    PeerFailed,
    Policy,
    Resource,
    Route,
    RowWrite,
    SqlWrite,
)
from stripe_pipeline.catalog.readers import (
    amount,
    boolean,
    currency,
    integer,
    list_data,
    livemode,
    object_id,
    object_or_empty,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripeInvoicePayment

N, K = Policy.NEWEST, Policy.NEWEST_KNOWN
TABLE = StripeInvoicePayment.__tablename__
PAID_EVENT = "invoice_payment.paid"

COLUMNS = (
    Column("invoice_id", K, audit=True),
    Column("payment_type", K),
    Column("payment_intent_id", K, audit=True),
    Column("charge_id", K, audit=True),
    Column("status", N, audit=True),
    Column("is_default", K),
    # kept in step with the invoice's amount_remaining while open
    Column("amount_requested_minor", N, audit=True),
    # null until paid
    Column("amount_paid_minor", N, audit=True),
    Column("currency", K, audit=True),
    Column("paid_at", K, audit=True),
    Column("canceled_at", K, audit=True),
    Column("stripe_created", K),
    Column("livemode", N),
)

# failure events whose basil payload names no invoice: the invoice payment is looked up
LOOKUP_EVENTS = frozenset({"payment_intent.payment_failed", "charge.failed"})
NO_LOOKUP_NOTE = (
    "invoice link unknown (basil payload, no Stripe API client to list its invoice "
    "payments): a recovery keyed by PaymentIntent is merged into the invoice's once an "
    "invoice payment links them"
)
LOOKUP_UNAVAILABLE_NOTE = (
    "invoice link unknown: the Stripe API cannot list invoice payments by PaymentIntent"
)


def invoice_payment_row(
    ip: dict[str, Any],
    *,
    livemode: bool,
    invoice_id: str | None = None,
    paid_event_time: int | None = None,
) -> RowWrite:
    """An InvoicePayment of any API version. ``invoice_id``: the invoice whose expanded
    list held it (an entry may leave its invoice out); ``paid_event_time``: the time of
    an ``invoice_payment.paid`` event, for a paid payment without ``paid_at``."""
    payment = object_or_empty(ip, "payment")
    transitions = object_or_empty(ip, "status_transitions")
    status = text(ip.get("status"))
    paid_at = unix_time(transitions.get("paid_at"))
    if paid_at is None and paid_event_time is not None and status == "paid":
        paid_at = unix_time(paid_event_time)
    invoice = ref_id(ip.get("invoice")) or invoice_id
    if not invoice:
        raise ValueError("invoice payment without an invoice")
    values = {
        "invoice_id": invoice,
        "payment_type": text(payment.get("type")),
        "payment_intent_id": ref_id(payment.get("payment_intent"))
        or ref_id(ip.get("payment_intent")),
        "charge_id": ref_id(payment.get("charge")) or ref_id(ip.get("charge")),
        "status": status,
        "is_default": boolean(ip.get("is_default")),
        "amount_requested_minor": amount(ip.get("amount_requested")),
        "amount_paid_minor": amount(ip.get("amount_paid")),
        "currency": currency(ip.get("currency")),
        "paid_at": paid_at,
        "canceled_at": unix_time(transitions.get("canceled_at")),
        "stripe_created": integer(ip.get("created")),
        "livemode": livemode,
    }
    return RowWrite(TABLE, object_id(ip), values)


def apply_invoice_payment_event(ctx: EventContext) -> Iterable[RowWrite]:
    """``invoice_payment.paid`` (and any later ``invoice_payment.*`` type)."""
    paid_time = ctx.created if ctx.event_type == PAID_EVENT else None
    return [invoice_payment_row(ctx.obj, livemode=ctx.livemode, paid_event_time=paid_time)]


def expanded_invoice_payments(ctx: EventContext, invoice_id: str) -> list[RowWrite]:
    """Full InvoicePayment objects of an invoice's expanded ``payments`` list.

    Entries without an id (a bare ``{"payment": ...}``) state no storable object; the
    invoice parser still reads their payment references.
    """
    rows = []
    for entry in list_data(ctx.obj.get("payments")):
        if isinstance(entry, dict) and entry.get("id") is not None:
            entry_livemode = livemode(entry, ctx.event.payload)
            rows.append(invoice_payment_row(entry, livemode=entry_livemode, invoice_id=invoice_id))
    return rows


def looked_up_invoice_payments(
    ctx: EventContext, payment_intent_id: str | None, customer_id: str | None
) -> list[RowWrite]:
    """The invoice payments of a failed PaymentIntent whose basil payload names no invoice.

    A subscription's failed payment arrives as ``invoice.payment_failed`` (an invoice
    without its PaymentIntent) and ``payment_intent.payment_failed`` / ``charge.failed``
    (without their invoice); no invoice payment event fires for a failed attempt. One
    lookup per failure event links them before dunning sees either, so one failure
    opens one recovery. The rows are unversioned: an API answer read during processing
    only fills what the invoice payment's own events have not said.
    """
    obj = ctx.obj
    if ctx.event_type not in LOOKUP_EVENTS or "invoice" in obj:
        return []
    if not payment_intent_id or not customer_id:  # an invoice always has a customer
        return []
    source = ctx.invoice_payment_source
    if source is None:
        ctx.notes.append(NO_LOOKUP_NOTE)
        return []
    try:
        found = source.list_payment_intent_invoice_payments(payment_intent_id)
    except Exception as exc:
        raise PeerFailed(exc) from exc
    if found is None:
        ctx.notes.append(LOOKUP_UNAVAILABLE_NOTE)
        return []
    rows = []
    for ip in found:
        if not isinstance(ip, dict):
            raise TypeError("the invoice payment lookup answered a non-object")
        row = invoice_payment_row(ip, livemode=livemode(ip, ctx.event.payload))
        if row.values["payment_intent_id"] == payment_intent_id:  # a peer ignoring filters
            rows.append(RowWrite(row.table, row.key, row.values, versioned=False))
    return rows


# --- SQL twin (``extract_sql``): the same row, read by PostgreSQL ---

_PAYMENT = q.object_or_empty(q.field("o", "payment"))
_TRANSITIONS = q.object_or_empty(q.field("o", "status_transitions"))
_STATUS = q.text(q.field("o", "status"))
_PAID_AT = q.unix_time(q.field(_TRANSITIONS.value, "paid_at"))
_INVOICE = q.ref_id(q.field("o", "invoice"))

TWIN = SqlWrite(
    TABLE,
    key=q.object_id(),
    ok=q.Expr("true", f"({_PAYMENT.ok} AND {_TRANSITIONS.ok})"),
    values={
        # ``ref_id(...) or None``, then required
        "invoice_id": q.Expr(
            _INVOICE.value, f"({_INVOICE.ok} AND coalesce({_INVOICE.value} <> '', false))"
        ),
        "payment_type": q.text(q.field(_PAYMENT.value, "type")),
        "payment_intent_id": q.either(
            q.ref_id(q.field(_PAYMENT.value, "payment_intent")),
            q.ref_id(q.field("o", "payment_intent")),
        ),
        "charge_id": q.either(
            q.ref_id(q.field(_PAYMENT.value, "charge")), q.ref_id(q.field("o", "charge"))
        ),
        "status": _STATUS,
        "is_default": q.boolean(q.field("o", "is_default")),
        "amount_requested_minor": q.amount(q.field("o", "amount_requested")),
        "amount_paid_minor": q.amount(q.field("o", "amount_paid")),
        "currency": q.currency(q.field("o", "currency")),
        "paid_at": q.Expr(
            f"coalesce({_PAID_AT.value}, CASE WHEN e.event_type = '{PAID_EVENT}' "
            f"AND {_STATUS.value} = 'paid' THEN {q.event_time().value} END)",
            _PAID_AT.ok,
        ),
        "canceled_at": q.unix_time(q.field(_TRANSITIONS.value, "canceled_at")),
        "stripe_created": q.integer(q.field("o", "created")),
        "livemode": q.livemode(),
    },
)

# a paid payment decides the link, then an open one (a canceled one was detached),
# then the invoice's default one, then the newest
PREFER = (("status", "paid"), ("status", "open"), ("is_default", True))

RESOURCE = Resource(
    object_type="invoice_payment",
    table=StripeInvoicePayment.__table__,
    key="stripe_invoice_payment_id",
    columns=COLUMNS,
    routes=(
        Route(
            ("invoice_payment.*",),
            apply_invoice_payment_event,
            frozenset({"invoice_payment"}),
            (TWIN,),
        ),
    ),
    # localstripe has no /v1/invoice_payments: tests reconciling against it leave
    # invoice_payment out of their object types
    listings=(
        Listing("invoice_payments", "/v1/invoice_payments", read_as="invoice_payment.updated"),
    ),
    fetch=(Fetch("/v1/invoice_payments/{id}", "invoice_payment.updated"),),
    docs="https://docs.stripe.com/api/invoice-payment/object",
    links=(
        # a legacy charge (no PaymentIntent) is its own payment's key
        Link(
            "payment",
            "invoice_id",
            value="invoice_id",
            match=("payment_intent_id", "charge_id"),
            prefer=PREFER,
        ),
        Link("invoice", "payment_intent_id", "payment_intent_id", ("invoice_id",), PREFER),
        Link("invoice", "charge_id", "charge_id", ("invoice_id",), PREFER),
    ),
)
