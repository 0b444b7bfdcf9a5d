"""Promotion codes (``stripe_promotion_codes``): customer-facing codes for a coupon.

https://docs.stripe.com/api/promotion_codes/object

API versions before 2025-09 name the coupon as ``coupon`` (embedded whole); later
ones as ``promotion.coupon`` (an id, or the coupon when expanded). An embedded coupon
is stored as an unversioned row; a coupon named only by id is referenced (fetched
when not stored). Promotion codes are never deleted, only deactivated
(``active``). Python only, as products (see ``products.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stripe_pipeline.catalog.coupons import embedded_coupon_rows
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
    boolean,
    dig,
    integer,
    object_id,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripePromotionCode

N, K, G = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.GREATEST
TABLE = StripePromotionCode.__tablename__

COLUMNS = (
    Column("code", K, audit=True),
    Column("coupon_id", K),
    Column("customer_id", K),
    Column("active", N, audit=True),
    Column("max_redemptions", N),
    Column("times_redeemed", G),
    Column("expires_at", N),
    Column("stripe_created", K),
    Column("livemode", N),
)


def coupon_of(obj: dict[str, Any], new_home: str) -> Any:
    """The coupon of a promotion code or discount: ``coupon`` before API 2025-09,
    ``<new_home>.coupon`` (``promotion`` / ``source``) since."""
    found = obj.get("coupon")
    return found if found is not None else dig(obj, new_home, "coupon")


def promotion_code_rows(code: dict[str, Any], *, created: int, livemode: bool) -> list[RowWrite]:
    coupon = coupon_of(code, "promotion")
    values = {
        "code": text(code.get("code")),
        "coupon_id": ref_id(coupon),
        "customer_id": ref_id(code.get("customer")),
        "active": boolean(code.get("active")),
        "max_redemptions": integer(code.get("max_redemptions")),
        "times_redeemed": integer(code.get("times_redeemed")),
        "expires_at": unix_time(code.get("expires_at")),
        "stripe_created": integer(code.get("created")),
        "livemode": livemode,
    }
    row = RowWrite(TABLE, object_id(code), values)
    return [row, *embedded_coupon_rows(coupon, created=created, livemode=livemode)]


def apply_promotion_code_event(ctx: EventContext) -> Iterable[RowWrite]:
    """promotion_code.created / promotion_code.updated."""
    return promotion_code_rows(ctx.obj, created=ctx.created, livemode=ctx.livemode)


RESOURCE = Resource(
    object_type="promotion_code",
    table=StripePromotionCode.__table__,
    key="stripe_promotion_code_id",
    columns=COLUMNS,
    routes=(
        Route(("promotion_code.*",), apply_promotion_code_event, frozenset({"promotion_code"})),
    ),
    listings=(
        Listing(
            "promotion_codes", "/v1/promotion_codes", read_as="promotion_code.updated", full=True
        ),
    ),
    fetch=(Fetch("/v1/promotion_codes/{id}", "promotion_code.updated"),),
    docs="https://docs.stripe.com/api/promotion_codes/object",
    references=(Reference("coupon", lambda row: (row.get("coupon_id"),)),),
)
