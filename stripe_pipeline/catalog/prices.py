"""Prices and legacy plans (``stripe_prices``).

https://docs.stripe.com/api/prices/object, https://docs.stripe.com/api/plans/object

Plans land in the prices table: Stripe's prices API returns every plan as a price
with the same id (``amount`` is its ``unit_amount``, ``interval`` its
``recurring.interval``), subscriptions of any API version name the same id as
``plan`` or ``price``, and one row per id keeps one source of truth for the marts.
``plan.*`` events are read into the price shape; ``/v1/prices`` lists both.
A plan states no ``lookup_key`` or ``tax_behavior``: those are "newest known", so a
plan event never erases what the prices listing said.

Subscriptions and invoices embed their prices whole: their parsers store those as
unversioned rows (they fill a price nobody stored, and never override the price's own
events). A price names its product; processing stores a product it has not seen
(``Reference``). ``price.deleted`` / ``plan.deleted`` keep the row, marked deleted.
Python only, as products (see ``products.py``).
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
    Reference,
    Resource,
    Route,
    RowWrite,
)
from stripe_pipeline.catalog.readers import (
    amount,
    boolean,
    currency,
    deleted_stub,
    integer,
    object_id,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripePrice

N, K, L = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.LEAST
TABLE = StripePrice.__tablename__

COLUMNS = (
    Column("product_id", K),
    Column("active", N, audit=True),
    Column("currency", K),
    Column("unit_amount_minor", K, audit=True),
    Column("unit_amount_decimal", K),
    Column("billing_scheme", K),
    Column("type", K),
    Column("recurring_interval", K),
    Column("recurring_interval_count", K),
    Column("recurring_usage_type", K),
    Column("nickname", N),
    Column("lookup_key", K),
    Column("tax_behavior", K),
    Column("deleted_at", L, audit=True),
    Column("stripe_created", K),
    Column("livemode", N),
)


def price_row(
    price: dict[str, Any], *, deleted: bool, created: int, livemode: bool, versioned: bool = True
) -> RowWrite:
    """A price, or a plan read as the price Stripe's prices API shows for it."""
    if price.get("object") == "plan":
        recurring: dict[str, Any] = {
            "interval": price.get("interval"),
            "interval_count": price.get("interval_count"),
            "usage_type": price.get("usage_type"),
        }
        unit_amount, unit_decimal = price.get("amount"), price.get("amount_decimal")
        kind: str | None = "recurring"
    else:
        found = price.get("recurring")
        if found is not None and not isinstance(found, dict):
            raise TypeError("price recurring is not an object")
        recurring = found or {}
        unit_amount, unit_decimal = price.get("unit_amount"), price.get("unit_amount_decimal")
        kind = text(price.get("type"))
    values = {
        "product_id": ref_id(price.get("product")),
        "active": boolean(price.get("active")),
        "currency": currency(price.get("currency")),
        "unit_amount_minor": amount(unit_amount),
        "unit_amount_decimal": text(unit_decimal),
        "billing_scheme": text(price.get("billing_scheme")),
        "type": kind,
        "recurring_interval": text(recurring.get("interval")),
        "recurring_interval_count": integer(recurring.get("interval_count")),
        "recurring_usage_type": text(recurring.get("usage_type")),
        "nickname": text(price.get("nickname")),
        "lookup_key": text(price.get("lookup_key")),
        "tax_behavior": text(price.get("tax_behavior")),
        "deleted_at": unix_time(created) if deleted or price.get("deleted") is True else None,
        "stripe_created": integer(price.get("created")),
        "livemode": livemode,
    }
    return RowWrite(
        TABLE, object_id(price), values, versioned=versioned and not deleted_stub(price)
    )


def embedded_price_rows(prices: Iterable[Any], *, created: int, livemode: bool) -> list[RowWrite]:
    """Prices (or plans) another object embeds whole, as unversioned rows, once per id.

    A price given only as its id stores nothing here: the row that names it references
    it, and processing fetches it (``Reference``)."""
    rows: dict[str, RowWrite] = {}
    for price in prices:
        if isinstance(price, dict) and price.get("id") and price.get("object") in ("price", "plan"):
            row = price_row(
                price, deleted=False, created=created, livemode=livemode, versioned=False
            )
            rows.setdefault(row.key, row)
    return list(rows.values())


def apply_price_event(ctx: EventContext) -> Iterable[RowWrite]:
    """price.* and plan.* (created, updated, deleted)."""
    deleted = ctx.event_type.endswith(".deleted")
    return [price_row(ctx.obj, deleted=deleted, created=ctx.created, livemode=ctx.livemode)]


RESOURCE = Resource(
    object_type="price",
    table=StripePrice.__table__,
    key="stripe_price_id",
    columns=COLUMNS,
    routes=(Route(("price.*", "plan.*"), apply_price_event, frozenset({"price", "plan"})),),
    listings=(Listing("prices", "/v1/prices", read_as="price.updated", full=True),),
    # a legacy plan id is fetched as a plan (an account whose plans predate prices,
    # and fakes that speak only the plans API); every other id as a price
    fetch=(
        Fetch("/v1/prices/{id}", "price.updated"),
        Fetch("/v1/plans/{id}", "plan.updated", prefix="plan_"),
    ),
    gone_means_deleted=lambda row: True,
    docs="https://docs.stripe.com/api/prices/object",
    deleted_marker="deleted_at",
    references=(Reference("product", lambda row: (row.get("product_id"),)),),
)
