"""Checkout sessions (``stripe_checkout_sessions``): opened, completed, expired.

https://docs.stripe.com/api/checkout/sessions/object

``checkout.session.completed`` (the customer finished; an asynchronous payment
method may still be ``unpaid``), ``async_payment_succeeded`` / ``async_payment_failed``
(that payment's outcome) and ``expired``. The session object has no completion time,
so the completion and expiry events' times are kept as event facts. Sessions of API
versions before 2020-08-27 have no ``status`` (derived from the event: completed,
expired, else open), no ``payment_status`` and no amounts. ``customer_details`` is
what the customer typed in: personal data.
"""

from __future__ import annotations

from collections.abc import Iterable

from stripe_pipeline.catalog import sql_readers as q
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
    event_fact,
)
from stripe_pipeline.catalog.readers import (
    currency,
    dig,
    integer,
    object_id,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripeCheckoutSession

N, K = Policy.NEWEST, Policy.NEWEST_KNOWN
TABLE = StripeCheckoutSession.__tablename__
COMPLETED, EXPIRED = "checkout.session.completed", "checkout.session.expired"

COLUMNS = (
    Column("status", N, audit=True),
    Column("payment_status", N, audit=True),
    Column("mode", K),
    Column("currency", K),
    Column("amount_subtotal_minor", N),
    Column("amount_total_minor", N, audit=True),
    Column("customer_id", K),
    Column("customer_email", N, personal=True),
    Column("customer_name", N, personal=True),
    Column("payment_intent_id", K),
    Column("subscription_id", K),
    Column("setup_intent_id", K),
    Column("invoice_id", K),
    Column("payment_link_id", K),
    Column("expires_at", N),
    event_fact(
        "completed_at",
        K,
        "time of checkout.session.completed; the session object has no completion time",
        audit=True,
    ),
    event_fact(
        "expired_at",
        K,
        "time of checkout.session.expired (expires_at is when it was due to expire; "
        "a session can be expired earlier)",
    ),
    Column("stripe_created", K),
    Column("livemode", N),
)


def _legacy_status(event_type: str) -> str:
    if event_type == COMPLETED:
        return "complete"
    return "expired" if event_type == EXPIRED else "open"


def apply_checkout_session_event(ctx: EventContext) -> Iterable[RowWrite]:
    """completed, async_payment_succeeded, async_payment_failed, expired."""
    session = ctx.obj
    details = session.get("customer_details")
    values = {
        "status": text(session.get("status")) or _legacy_status(ctx.event_type),
        "payment_status": text(session.get("payment_status")),
        "mode": text(session.get("mode")),
        "currency": currency(session.get("currency")),
        "amount_subtotal_minor": integer(session.get("amount_subtotal")),
        "amount_total_minor": integer(session.get("amount_total")),
        "customer_id": ref_id(session.get("customer")),
        "customer_email": text(dig(details, "email")) or text(session.get("customer_email")),
        "customer_name": text(dig(details, "name")),
        "payment_intent_id": ref_id(session.get("payment_intent")),
        "subscription_id": ref_id(session.get("subscription")),
        "setup_intent_id": ref_id(session.get("setup_intent")),
        "invoice_id": ref_id(session.get("invoice")),
        "payment_link_id": ref_id(session.get("payment_link")),
        "expires_at": unix_time(session.get("expires_at")),
        "completed_at": unix_time(ctx.created) if ctx.event_type == COMPLETED else None,
        "expired_at": unix_time(ctx.created) if ctx.event_type == EXPIRED else None,
        "stripe_created": integer(session.get("created")),
        "livemode": ctx.livemode,
    }
    return [RowWrite(TABLE, object_id(session), values)]


# --- SQL twin (``extract_sql``): the same row, read by PostgreSQL ---

_DETAILS = q.field("o", "customer_details")


def _at_event(event_type: str) -> q.Expr:
    return q.constant(f"(CASE WHEN e.event_type = '{event_type}' THEN {q.event_time().value} END)")


TWIN = SqlWrite(
    TABLE,
    key=q.object_id(),
    values={
        "status": q.either(
            q.text(q.field("o", "status")),
            q.constant(
                f"(CASE e.event_type WHEN '{COMPLETED}' THEN 'complete' "
                f"WHEN '{EXPIRED}' THEN 'expired' ELSE 'open' END)"
            ),
        ),
        "payment_status": q.text(q.field("o", "payment_status")),
        "mode": q.text(q.field("o", "mode")),
        "currency": q.currency(q.field("o", "currency")),
        "amount_subtotal_minor": q.integer(q.field("o", "amount_subtotal")),
        "amount_total_minor": q.integer(q.field("o", "amount_total")),
        "customer_id": q.ref_id(q.field("o", "customer")),
        # ``dig``: NULL unless customer_details is an object
        "customer_email": q.either(
            q.text(q.field(_DETAILS, "email")), q.text(q.field("o", "customer_email"))
        ),
        "customer_name": q.text(q.field(_DETAILS, "name")),
        "payment_intent_id": q.ref_id(q.field("o", "payment_intent")),
        "subscription_id": q.ref_id(q.field("o", "subscription")),
        "setup_intent_id": q.ref_id(q.field("o", "setup_intent")),
        "invoice_id": q.ref_id(q.field("o", "invoice")),
        "payment_link_id": q.ref_id(q.field("o", "payment_link")),
        "expires_at": q.unix_time(q.field("o", "expires_at")),
        "completed_at": _at_event(COMPLETED),
        "expired_at": _at_event(EXPIRED),
        "stripe_created": q.integer(q.field("o", "created")),
        "livemode": q.livemode(),
    },
)

RESOURCE = Resource(
    object_type="checkout_session",
    table=StripeCheckoutSession.__table__,
    key="stripe_checkout_session_id",
    columns=COLUMNS,
    routes=(
        Route(
            ("checkout.session.*",),
            apply_checkout_session_event,
            frozenset({"checkout.session"}),
            (TWIN,),
        ),
    ),
    listings=(
        Listing("checkout_sessions", "/v1/checkout/sessions", read_as="checkout.session.updated"),
    ),
    fetch=(Fetch("/v1/checkout/sessions/{id}", "checkout.session.updated"),),
    docs="https://docs.stripe.com/api/checkout/sessions/object",
)
