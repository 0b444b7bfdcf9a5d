"""Payment methods (``stripe_payment_methods``): attached, detached, card details.

https://docs.stripe.com/api/payment_methods/object

A detached method keeps its last customer id (history), with ``attached`` false and
``detached_at`` set; attaching it again clears ``detached_at``. ``detached_at`` is a
fact about the current ``attached`` state (``Policy.FOLLOWS``): a
``payment_method.detached`` event that arrives after a newer state of the same
detached method (a late delivery, or the nightly backfill after a repair) still dates
the detachment.
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
    card_fingerprint,
    dig,
    integer,
    object_id,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripePaymentMethod

N, K, F = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.FOLLOWS
TABLE = StripePaymentMethod.__tablename__

COLUMNS = (
    Column("customer_id", K, audit=True),
    Column("type", K),
    Column("card_brand", K),
    # the printed card details identify a person; brand and fingerprint do not
    Column("card_last4", K, audit=True, personal=True),
    Column("card_exp_month", K, personal=True),
    Column("card_exp_year", K, audit=True, personal=True),
    Column("card_fingerprint", K),
    Column("attached", N, audit=True),
    event_fact(
        "detached_at",
        F,
        "time of payment_method.detached; the object only says it has no customer "
        "(reconciliation repairs 'attached'; the nightly event backfill dates it)",
        audit=True,
    ),
    Column("stripe_created", K),
    Column("livemode", N),
)


def payment_method_row(
    method: dict, *, event_type: str, created: int, livemode: bool, previous_customer=None
) -> RowWrite:
    """A PaymentMethod; read from a listing as ``payment_method.updated``."""
    # a detached method no longer names its customer; the event's previous attributes do
    customer_id = ref_id(method.get("customer")) or ref_id(previous_customer)
    detached = event_type == "payment_method.detached"
    attached = not detached and (
        event_type == "payment_method.attached" or bool(ref_id(method.get("customer")))
    )
    values = {
        "customer_id": customer_id,
        "type": text(method.get("type")),
        "card_brand": text(dig(method, "card", "brand")),
        "card_last4": text(dig(method, "card", "last4")),
        "card_exp_month": integer(dig(method, "card", "exp_month")),
        "card_exp_year": integer(dig(method, "card", "exp_year")),
        "card_fingerprint": card_fingerprint(method),
        "attached": attached,
        "detached_at": unix_time(created) if detached else None,
        "stripe_created": integer(method.get("created")),
        "livemode": livemode,
    }
    return RowWrite(TABLE, object_id(method), values)


def apply_payment_method_event(ctx: EventContext) -> Iterable[RowWrite]:
    """attached, detached, updated, automatically_updated."""
    previous = dig(ctx.event.payload, "data", "previous_attributes", "customer")
    return [
        payment_method_row(
            ctx.obj,
            event_type=ctx.event_type,
            created=ctx.created,
            livemode=ctx.livemode,
            previous_customer=previous,
        )
    ]


def apply_customer_source_event(ctx: EventContext) -> Iterable[RowWrite]:
    """Legacy card sources (``customer.source.created/updated/deleted/expiring``).

    Before PaymentMethods, a customer's cards were ``card_...`` sources; they are
    stored with the payment methods so recovery and fraud rules see every card.
    Other source kinds (bank accounts, bitcoin receivers) are not cards: ignored.
    """
    source = ctx.obj
    if source.get("object") != "card":
        ctx.notes.append(f"source of kind {source.get('object')!r} is not a card: not stored")
        return []
    deleted = ctx.event_type == "customer.source.deleted"
    values = {
        "customer_id": ref_id(source.get("customer")),
        "type": "card",
        "card_brand": text(source.get("brand")),
        "card_last4": text(source.get("last4")),
        "card_exp_month": integer(source.get("exp_month")),
        "card_exp_year": integer(source.get("exp_year")),
        "card_fingerprint": text(source.get("fingerprint")),
        "attached": not deleted,
        "detached_at": unix_time(ctx.created) if deleted else None,
        "stripe_created": None,  # cards have no creation time
        "livemode": ctx.livemode,
    }
    return [RowWrite(TABLE, object_id(source), values)]


_CUSTOMER = q.ref_id(q.field("o", "customer"))
_DETACHED = "(e.event_type = 'payment_method.detached')"
_CARD = q.field("o", "card")

TWIN = SqlWrite(
    TABLE,
    key=q.object_id(),
    values={
        "customer_id": q.either(
            _CUSTOMER,
            q.ref_id(q.field("e.payload", "data", "previous_attributes", "customer")),
        ),
        "type": q.text(q.field("o", "type")),
        "card_brand": q.text(q.field(_CARD, "brand")),
        "card_last4": q.text(q.field(_CARD, "last4")),
        "card_exp_month": q.integer(q.field(_CARD, "exp_month")),
        "card_exp_year": q.integer(q.field(_CARD, "exp_year")),
        "card_fingerprint": q.card_fingerprint_of("o"),
        "attached": q.Expr(
            f"(NOT {_DETACHED} AND (e.event_type = 'payment_method.attached' "
            f"OR coalesce({_CUSTOMER.value} <> '', false)))",
            _CUSTOMER.ok,
        ),
        "detached_at": q.constant(f"(CASE WHEN {_DETACHED} THEN {q.event_time().value} END)"),
        "stripe_created": q.integer(q.field("o", "created")),
        "livemode": q.livemode(),
    },
)

RESOURCE = Resource(
    object_type="payment_method",
    table=StripePaymentMethod.__table__,
    key="stripe_payment_method_id",
    columns=COLUMNS,
    routes=(
        Route(
            ("payment_method.*",),
            apply_payment_method_event,
            frozenset({"payment_method"}),
            (TWIN,),
        ),
        Route(
            ("customer.source.*",),
            apply_customer_source_event,
            frozenset({"card", "source", "bank_account", "bitcoin_receiver", "alipay_account"}),
        ),
    ),
    listings=(
        # Stripe lists payment methods per customer (the list without one returns
        # little); cards are listed, any other kind stored locally is fetched by id
        Listing(
            "payment_methods",
            "/v1/payment_methods",
            read_as="payment_method.updated",
            params={"type": "card"},
            per_customer=True,
            created_filter=False,
        ),
    ),
    fetch=(Fetch("/v1/payment_methods/{id}", "payment_method.updated"),),
    docs="https://docs.stripe.com/api/payment_methods/object",
    follows={"detached_at": "attached"},
)
