"""Setup intents (``stripe_setup_intents``): saving a payment method for later.

https://docs.stripe.com/api/setup_intents/object

``setup_intent.created``, ``requires_action``, ``setup_failed``, ``succeeded``,
``canceled``. A failed attempt leaves ``last_setup_error`` (its code and, for a card,
the issuer's decline code); the next attempt clears it.
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
)
from stripe_pipeline.catalog.readers import dig, integer, object_id, ref_id, text
from stripe_pipeline.db.models import StripeSetupIntent

N, K = Policy.NEWEST, Policy.NEWEST_KNOWN
TABLE = StripeSetupIntent.__tablename__

COLUMNS = (
    Column("status", N, audit=True),
    Column("customer_id", K),
    Column("payment_method_id", K, audit=True),
    Column("usage", K),
    Column("cancellation_reason", N, audit=True),
    Column("last_error_code", N, audit=True),
    Column("last_error_decline_code", N),
    Column("stripe_created", K),
    Column("livemode", N),
)


def apply_setup_intent_event(ctx: EventContext) -> Iterable[RowWrite]:
    intent = ctx.obj
    error = intent.get("last_setup_error")
    status = text(intent.get("status"))
    if not status:
        raise ValueError("setup intent without a status")
    values = {
        "status": status,
        "customer_id": ref_id(intent.get("customer")),
        "payment_method_id": ref_id(intent.get("payment_method")),
        "usage": text(intent.get("usage")),
        "cancellation_reason": text(intent.get("cancellation_reason")),
        "last_error_code": text(dig(error, "code")),
        "last_error_decline_code": text(dig(error, "decline_code")),
        "stripe_created": integer(intent.get("created")),
        "livemode": ctx.livemode,
    }
    return [RowWrite(TABLE, object_id(intent), values)]


_STATUS = q.text(q.field("o", "status"))
_ERROR = q.field("o", "last_setup_error")

TWIN = SqlWrite(
    TABLE,
    key=q.object_id(),
    values={
        "status": q.Expr(
            _STATUS.value, f"({_STATUS.ok} AND coalesce({_STATUS.value} <> '', false))"
        ),
        "customer_id": q.ref_id(q.field("o", "customer")),
        "payment_method_id": q.ref_id(q.field("o", "payment_method")),
        "usage": q.text(q.field("o", "usage")),
        "cancellation_reason": q.text(q.field("o", "cancellation_reason")),
        "last_error_code": q.text(q.field(_ERROR, "code")),
        "last_error_decline_code": q.text(q.field(_ERROR, "decline_code")),
        "stripe_created": q.integer(q.field("o", "created")),
        "livemode": q.livemode(),
    },
)

RESOURCE = Resource(
    object_type="setup_intent",
    table=StripeSetupIntent.__table__,
    key="stripe_setup_intent_id",
    columns=COLUMNS,
    routes=(
        Route(("setup_intent.*",), apply_setup_intent_event, frozenset({"setup_intent"}), (TWIN,)),
    ),
    listings=(Listing("setup_intents", "/v1/setup_intents", read_as="setup_intent.updated"),),
    fetch=(Fetch("/v1/setup_intents/{id}", "setup_intent.updated"),),
    docs="https://docs.stripe.com/api/setup_intents/object",
)
