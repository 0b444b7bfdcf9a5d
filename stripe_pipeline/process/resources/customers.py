"""Customers (``stripe_customers``).

https://docs.stripe.com/api/customers/object

A deleted customer stays deleted: ``deleted_at`` keeps the earliest deletion seen,
whatever order events arrive in, even when an update shares the deletion's second.
"""

from __future__ import annotations

from collections.abc import Iterable

from stripe_pipeline.db.models import StripeCustomer
from stripe_pipeline.process import sql_fields as q
from stripe_pipeline.process.extract_sql import SqlWrite, sql_twin
from stripe_pipeline.process.registry import EventContext, RowWrite, handles
from stripe_pipeline.process.resources.fields import (
    boolean,
    currency,
    dig,
    integer,
    object_id,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.process.upsert import Policy, TableSpec

N, K, L = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.LEAST

SPEC = TableSpec(
    table=StripeCustomer.__table__,
    key="stripe_customer_id",
    policies={
        "email": N,
        "name": N,
        "default_payment_method_id": N,
        "delinquent": N,
        "currency": K,
        "deleted_at": L,
        "stripe_created": K,
        "livemode": N,
    },
    object_type="customer",
    audit_fields=("email", "name", "default_payment_method_id", "delinquent", "deleted_at"),
    deleted_marker="deleted_at",
)


@handles("customer.created", "customer.updated", "customer.deleted")
def apply_customer_event(ctx: EventContext) -> Iterable[RowWrite]:
    customer = ctx.obj
    deleted = ctx.event_type == "customer.deleted" or customer.get("deleted") is True
    values = {
        "email": text(customer.get("email")),
        "name": text(customer.get("name")),
        "default_payment_method_id": ref_id(
            dig(customer, "invoice_settings", "default_payment_method")
        )
        or ref_id(customer.get("default_source")),
        "delinquent": boolean(customer.get("delinquent")),
        "currency": currency(customer.get("currency")),
        "deleted_at": unix_time(ctx.created) if deleted else None,
        "stripe_created": integer(customer.get("created")),
        "livemode": ctx.livemode,
    }
    return [RowWrite(SPEC.name, object_id(customer), values)]


_DELETED = "(e.event_type = 'customer.deleted' OR (o -> 'deleted') = 'true'::jsonb)"

sql_twin(
    apply_customer_event,
    SqlWrite(
        SPEC.name,
        key=q.object_id(),
        values={
            "email": q.text(q.field("o", "email")),
            "name": q.text(q.field("o", "name")),
            "default_payment_method_id": q.either(
                q.ref_id(q.field("o", "invoice_settings", "default_payment_method")),
                q.ref_id(q.field("o", "default_source")),
            ),
            "delinquent": q.boolean(q.field("o", "delinquent")),
            "currency": q.currency(q.field("o", "currency")),
            "deleted_at": q.constant(f"(CASE WHEN {_DELETED} THEN {q.event_time().value} END)"),
            "stripe_created": q.integer(q.field("o", "created")),
            "livemode": q.livemode(),
        },
    ),
)
