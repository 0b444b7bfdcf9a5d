"""Customers (``stripe_customers``).

https://docs.stripe.com/api/customers/object

A deleted customer stays deleted: ``deleted_at`` keeps the earliest deletion seen,
whatever order events arrive in, even when an update shares the deletion's second.
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
from stripe_pipeline.catalog.readers import (
    boolean,
    currency,
    dig,
    integer,
    object_id,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripeCustomer

N, K, L = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.LEAST

COLUMNS = (
    Column("email", N, audit=True, personal=True),
    Column("name", N, audit=True, personal=True),
    Column("default_payment_method_id", N, audit=True),
    Column("delinquent", N, audit=True),
    Column("currency", K),
    # customer.deleted's time; Stripe lists no deleted customer, so reconciliation
    # fetches a missing one by id, and dates a deletion found that way when it found it
    Column("deleted_at", L, audit=True),
    Column("stripe_created", K),
    Column("livemode", N),
)


def customer_row(customer: dict, *, deleted: bool, created: int, livemode: bool) -> RowWrite:
    values = {
        "email": text(customer.get("email")),
        "name": text(customer.get("name")),
        "default_payment_method_id": ref_id(
            dig(customer, "invoice_settings", "default_payment_method")
        )
        or ref_id(customer.get("default_source")),
        "delinquent": boolean(customer.get("delinquent")),
        "currency": currency(customer.get("currency")),
        "deleted_at": unix_time(created) if deleted else None,
        "stripe_created": integer(customer.get("created")),
        "livemode": livemode,
    }
    return RowWrite(StripeCustomer.__tablename__, object_id(customer), values)


def apply_customer_event(ctx: EventContext) -> Iterable[RowWrite]:
    customer = ctx.obj
    deleted = ctx.event_type == "customer.deleted" or customer.get("deleted") is True
    return [customer_row(customer, deleted=deleted, created=ctx.created, livemode=ctx.livemode)]


_DELETED = "(e.event_type = 'customer.deleted' OR (o -> 'deleted') = 'true'::jsonb)"

TWIN = SqlWrite(
    StripeCustomer.__tablename__,
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
)

RESOURCE = Resource(
    object_type="customer",
    table=StripeCustomer.__table__,
    key="stripe_customer_id",
    columns=COLUMNS,
    routes=(
        Route(
            ("customer.created", "customer.updated", "customer.deleted"),
            apply_customer_event,
            frozenset({"customer"}),
            (TWIN,),
        ),
    ),
    listings=(Listing("customers", "/v1/customers", read_as="customer.updated"),),
    fetch=(Fetch("/v1/customers/{id}", "customer.updated"),),
    docs="https://docs.stripe.com/api/customers/object",
    deleted_marker="deleted_at",
    local_columns={
        "fraud_flagged_at": "set by the fraud rules (recover/fraud.py)",
        "fraud_reason": "set by the fraud rules (recover/fraud.py)",
    },
)
