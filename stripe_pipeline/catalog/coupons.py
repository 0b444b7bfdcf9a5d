"""Coupons (``stripe_coupons``).

https://docs.stripe.com/api/coupons/object

A coupon takes ``percent_off`` or ``amount_off`` with its ``currency``; ``duration``
is once, repeating (``duration_in_months``) or forever. ``times_redeemed`` only grows.
``coupon.deleted`` keeps the row, marked deleted (discounts keep naming it); Stripe
lists deleted coupons no more and answers 404 by id. Discounts and promotion codes of
most API versions embed their coupon whole: their parsers store it as an unversioned
row. Python only, as products (see ``products.py``).
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
    amount,
    boolean,
    currency,
    deleted_stub,
    integer,
    number,
    object_id,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripeCoupon

N, K, G, L = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.GREATEST, Policy.LEAST
TABLE = StripeCoupon.__tablename__

COLUMNS = (
    Column("name", N, audit=True),
    Column("percent_off", K, audit=True),
    Column("amount_off_minor", K, audit=True),
    Column("currency", K),
    Column("duration", K),
    Column("duration_in_months", K),
    Column("max_redemptions", N),
    Column("times_redeemed", G),
    Column("valid", N, audit=True),
    Column("redeem_by", N),
    Column("deleted_at", L, audit=True),
    Column("stripe_created", K),
    Column("livemode", N),
)


def coupon_row(
    coupon: dict[str, Any], *, deleted: bool, created: int, livemode: bool, versioned: bool = True
) -> RowWrite:
    percent_off = number(coupon.get("percent_off"))
    if percent_off is not None and not 0 <= percent_off <= 100:
        raise ValueError(f"percent_off {percent_off} outside 0-100")
    values = {
        "name": text(coupon.get("name")),
        "percent_off": percent_off,
        "amount_off_minor": amount(coupon.get("amount_off")),
        "currency": currency(coupon.get("currency")),
        "duration": text(coupon.get("duration")),
        "duration_in_months": integer(coupon.get("duration_in_months")),
        "max_redemptions": integer(coupon.get("max_redemptions")),
        "times_redeemed": integer(coupon.get("times_redeemed")),
        "valid": boolean(coupon.get("valid")),
        "redeem_by": unix_time(coupon.get("redeem_by")),
        "deleted_at": unix_time(created) if deleted or coupon.get("deleted") is True else None,
        "stripe_created": integer(coupon.get("created")),
        "livemode": livemode,
    }
    return RowWrite(
        TABLE, object_id(coupon), values, versioned=versioned and not deleted_stub(coupon)
    )


def embedded_coupon_rows(coupon: Any, *, created: int, livemode: bool) -> list[RowWrite]:
    """A coupon another object embeds whole (a discount's), as an unversioned row."""
    if isinstance(coupon, dict) and coupon.get("id") and coupon.get("object") in ("coupon", None):
        return [
            coupon_row(coupon, deleted=False, created=created, livemode=livemode, versioned=False)
        ]
    return []


def apply_coupon_event(ctx: EventContext) -> Iterable[RowWrite]:
    """coupon.created / coupon.updated / coupon.deleted."""
    deleted = ctx.event_type == "coupon.deleted"
    return [coupon_row(ctx.obj, deleted=deleted, created=ctx.created, livemode=ctx.livemode)]


RESOURCE = Resource(
    object_type="coupon",
    table=StripeCoupon.__table__,
    key="stripe_coupon_id",
    columns=COLUMNS,
    routes=(Route(("coupon.*",), apply_coupon_event, frozenset({"coupon"})),),
    listings=(Listing("coupons", "/v1/coupons", read_as="coupon.updated", full=True),),
    fetch=(Fetch("/v1/coupons/{id}", "coupon.updated"),),
    gone_means_deleted=lambda row: True,
    docs="https://docs.stripe.com/api/coupons/object",
    deleted_marker="deleted_at",
)
