"""Payment methods (``stripe_payment_methods``): attached, detached, card details.

https://docs.stripe.com/api/payment_methods/object

A detached method keeps its last customer id (history), with ``attached`` false and
``detached_at`` set; attaching it again clears ``detached_at``.
"""

from __future__ import annotations

from collections.abc import Iterable

from stripe_pipeline.db.models import StripePaymentMethod
from stripe_pipeline.process import sql_fields as q
from stripe_pipeline.process.extract_sql import SqlWrite, sql_twin
from stripe_pipeline.process.registry import EventContext, RowWrite, handles
from stripe_pipeline.process.resources.fields import (
    card_fingerprint,
    dig,
    integer,
    object_id,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.process.upsert import Policy, TableSpec

N, K = Policy.NEWEST, Policy.NEWEST_KNOWN

SPEC = TableSpec(
    table=StripePaymentMethod.__table__,
    key="stripe_payment_method_id",
    policies={
        "customer_id": K,
        "type": K,
        "card_brand": K,
        "card_last4": K,
        "card_exp_month": K,
        "card_exp_year": K,
        "card_fingerprint": K,
        "attached": N,
        "detached_at": N,
        "stripe_created": K,
        "livemode": N,
    },
    object_type="payment_method",
    audit_fields=("customer_id", "attached", "detached_at", "card_last4", "card_exp_year"),
)


@handles("payment_method.*")
def apply_payment_method_event(ctx: EventContext) -> Iterable[RowWrite]:
    """attached, detached, updated, automatically_updated."""
    method = ctx.obj
    # a detached method no longer names its customer; the event's previous attributes do
    customer_id = ref_id(method.get("customer")) or ref_id(
        dig(ctx.event.payload, "data", "previous_attributes", "customer")
    )
    detached = ctx.event_type == "payment_method.detached"
    attached = not detached and (
        ctx.event_type == "payment_method.attached" or bool(ref_id(method.get("customer")))
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
        "detached_at": unix_time(ctx.created) if detached else None,
        "stripe_created": integer(method.get("created")),
        "livemode": ctx.livemode,
    }
    return [RowWrite(SPEC.name, object_id(method), values)]


# --- SQL twin (``extract_sql``): the same row, read by PostgreSQL from the payload ---

_CUSTOMER = q.ref_id(q.field("o", "customer"))
_DETACHED = "(e.event_type = 'payment_method.detached')"
_CARD = q.field("o", "card")

sql_twin(
    apply_payment_method_event,
    SqlWrite(
        SPEC.name,
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
    ),
)
