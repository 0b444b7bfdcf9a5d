"""Products (``stripe_products``).

https://docs.stripe.com/api/products/object

``product.deleted`` keeps the row and marks it (``deleted_at``, terminal, as for
customers): prices, subscriptions and invoices keep naming the product. A deleted
product is listed no more and answers 404 by id, which reconciliation takes as its
deletion. Prices, products and coupons are few, so every run lists all of them
(``Listing.full``): a subscription may name a price created years ago.

Python only (no SQL twin): catalog objects change a few times a day, not thousands of
times a second; a twin would be code without a measurable gain.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
    boolean,
    deleted_stub,
    integer,
    object_id,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripeProduct

N, K, L = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.LEAST
TABLE = StripeProduct.__tablename__

COLUMNS = (
    Column("name", N, audit=True),
    Column("description", N),
    Column("active", N, audit=True),
    Column("type", K),
    Column("default_price_id", N),
    Column("unit_label", N),
    Column("deleted_at", L, audit=True),
    Column("stripe_created", K),
    Column("livemode", N),
)


def product_row(
    product: dict[str, Any], *, event_type: str, created: int, livemode: bool
) -> RowWrite:
    """A product; a bare ``deleted: true`` answer only marks the row deleted."""
    deleted = event_type.endswith(".deleted") or product.get("deleted") is True
    values = {
        "name": text(product.get("name")),
        "description": text(product.get("description")),
        "active": boolean(product.get("active")),
        "type": text(product.get("type")),
        "default_price_id": ref_id(product.get("default_price")),
        "unit_label": text(product.get("unit_label")),
        "deleted_at": unix_time(created) if deleted else None,
        "stripe_created": integer(product.get("created")),
        "livemode": livemode,
    }
    return RowWrite(TABLE, object_id(product), values, versioned=not deleted_stub(product))


def apply_product_event(ctx: EventContext) -> Iterable[RowWrite]:
    """product.created / product.updated / product.deleted."""
    return [
        product_row(ctx.obj, event_type=ctx.event_type, created=ctx.created, livemode=ctx.livemode)
    ]


RESOURCE = Resource(
    object_type="product",
    table=StripeProduct.__table__,
    key="stripe_product_id",
    columns=COLUMNS,
    routes=(Route(("product.*",), apply_product_event, frozenset({"product"})),),
    listings=(Listing("products", "/v1/products", read_as="product.updated", full=True),),
    fetch=(Fetch("/v1/products/{id}", "product.updated"),),
    gone_means_deleted=lambda row: True,
    docs="https://docs.stripe.com/api/products/object",
    deleted_marker="deleted_at",
)
