"""Discounts (``stripe_discounts``): a coupon applied to a customer, a subscription,
a subscription item, an invoice or an invoice item.

https://docs.stripe.com/api/discounts/object

Sources: ``customer.discount.created/updated/deleted`` (the discount itself, for
customer and subscription discounts alike), and the discounts that customers,
subscriptions, invoices and invoice line items carry (old API versions: one
``discount`` object; later ones: ``discounts``, a list of ids unless expanded). A
carried discount object is stored as an unversioned row (it fills what nobody stored
and never overrides the discount's own events); a bare id says nothing storable.
The coupon comes whole in ``coupon`` before API 2025-09 and as ``source.coupon``
since; a whole coupon is stored too, an id is referenced (fetched when not stored).

Keys: ``di_...``. Discounts of API versions before 2019 have no id; they are keyed
``di_legacy_`` + the first 24 hex digits of the SHA-256 of what identifies them
(customer, subscription, invoice, invoice item, coupon and start), so the same
discount seen on a customer event, a subscription and its invoices is one row.

Reconciliation: Stripe has no discount list and no discount endpoint. Three listings
read the discounts the customers, subscriptions (``status=all``, discounts expanded)
and invoices (discounts expanded) of the window carry (``Listing.embedded``); a
stored discount none of them returned is looked up on its invoice, subscription or
customer (``Fetch.parent``), and one its parent no longer carries (or whose parent is
gone) was removed: it is marked deleted. ``customer.discount.deleted`` keeps the row
with ``deleted_at``. Python only, as products (see ``products.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
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
from stripe_pipeline.catalog.promotion_codes import coupon_of
from stripe_pipeline.catalog.readers import integer, list_data, ref_id, unix_time
from stripe_pipeline.db.models import StripeDiscount

K, L = Policy.NEWEST_KNOWN, Policy.LEAST
TABLE = StripeDiscount.__tablename__
LEGACY_PREFIX = "di_legacy_"
READ_AS = "customer.discount.updated"

COLUMNS = (
    Column("coupon_id", K, audit=True),
    Column("promotion_code_id", K),
    Column("customer_id", K),
    Column("subscription_id", K),
    Column("subscription_item_id", K),
    Column("invoice_id", K),
    Column("invoice_item_id", K),
    Column("start_at", K),
    Column("end_at", K, audit=True),
    # customer.discount.deleted's time, or when reconciliation found it removed
    Column("deleted_at", L, audit=True),
    # a discount has no created time: its start
    Column("stripe_created", K),
    Column("livemode", Policy.NEWEST),
)


def discount_key(discount: dict[str, Any], coupon_id: str | None, values: dict[str, Any]) -> str:
    """``di_...``, or the derived key of an id-less discount of an old API version."""
    found = discount.get("id")
    if found is not None:
        if not isinstance(found, str) or not found:
            raise ValueError("discount id is not a non-empty string")
        return found
    if coupon_id is None:
        raise ValueError("discount without an id or a coupon")
    parts = [
        values["customer_id"],
        values["subscription_id"],
        values["invoice_id"],
        values["invoice_item_id"],
        coupon_id,
        str(integer(discount.get("start"))),
    ]
    digest = hashlib.sha256("|".join(p or "" for p in parts).encode()).hexdigest()
    return LEGACY_PREFIX + digest[:24]


def discount_rows(
    discount: dict[str, Any],
    *,
    deleted: bool,
    created: int,
    livemode: bool,
    versioned: bool = True,
) -> list[RowWrite]:
    """The discount's row, and its coupon's when the discount embeds it whole."""
    coupon = coupon_of(discount, "source")
    coupon_id = ref_id(coupon)
    values = {
        "coupon_id": coupon_id,
        "promotion_code_id": ref_id(discount.get("promotion_code")),
        "customer_id": ref_id(discount.get("customer")),
        "subscription_id": ref_id(discount.get("subscription")),
        "subscription_item_id": ref_id(discount.get("subscription_item")),
        "invoice_id": ref_id(discount.get("invoice")),
        "invoice_item_id": ref_id(discount.get("invoice_item")),
        "start_at": unix_time(discount.get("start")),
        "end_at": unix_time(discount.get("end")),
        "deleted_at": unix_time(created) if deleted else None,
        "stripe_created": integer(discount.get("start")),
        "livemode": livemode,
    }
    row = RowWrite(TABLE, discount_key(discount, coupon_id, values), values, versioned)
    return [row, *embedded_coupon_rows(coupon, created=created, livemode=livemode)]


def carried_discounts(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Discount objects a customer, subscription or invoice carries (its own, its
    items' or lines'); ids without the object are skipped (nothing to store)."""
    candidates: list[Any] = [obj.get("discount"), *list_data(obj.get("discounts"))]
    for field in ("items", "lines"):
        for item in list_data(obj.get(field)):
            if isinstance(item, dict):
                candidates.append(item.get("discount"))
                candidates.extend(list_data(item.get("discounts")))
    for candidate in candidates:
        if isinstance(candidate, dict) and candidate.get("object") in ("discount", None):
            yield candidate


def embedded_discount_rows(
    parent: dict[str, Any], *, created: int, livemode: bool
) -> list[RowWrite]:
    """Unversioned rows of the discounts (and coupons) a parent object carries, once each."""
    rows: dict[tuple[str, str], RowWrite] = {}
    for discount in carried_discounts(parent):
        for row in discount_rows(
            discount, deleted=False, created=created, livemode=livemode, versioned=False
        ):
            rows.setdefault((row.table, row.key), row)
    return list(rows.values())


def apply_discount_event(ctx: EventContext) -> Iterable[RowWrite]:
    """customer.discount.created / updated / deleted."""
    deleted = ctx.event_type == "customer.discount.deleted"
    return discount_rows(ctx.obj, deleted=deleted, created=ctx.created, livemode=ctx.livemode)


_EXPAND = ["data.discounts"]

RESOURCE = Resource(
    object_type="discount",
    table=StripeDiscount.__table__,
    key="stripe_discount_id",
    columns=COLUMNS,
    routes=(Route(("customer.discount.*",), apply_discount_event, frozenset({"discount"})),),
    listings=(
        Listing("customer_discounts", "/v1/customers", READ_AS, embedded=carried_discounts),
        Listing(
            "subscription_discounts",
            "/v1/subscriptions",
            READ_AS,
            params={"status": "all", "expand": _EXPAND},
            embedded=carried_discounts,
        ),
        Listing(
            "invoice_discounts",
            "/v1/invoices",
            READ_AS,
            params={"expand": _EXPAND},
            embedded=carried_discounts,
        ),
    ),
    fetch=(
        Fetch(
            "/v1/invoices/{parent}?expand[]=discounts",
            READ_AS,
            parent="invoice_id",
            embedded=carried_discounts,
        ),
        Fetch(
            "/v1/subscriptions/{parent}?expand[]=discounts",
            READ_AS,
            parent="subscription_id",
            embedded=carried_discounts,
        ),
        Fetch("/v1/customers/{parent}", READ_AS, parent="customer_id", embedded=carried_discounts),
    ),
    # its parent no longer carries it, or the parent is gone: the discount was removed
    gone_means_deleted=lambda row: True,
    docs="https://docs.stripe.com/api/discounts/object",
    deleted_marker="deleted_at",
    references=(
        Reference("coupon", lambda row: (row.get("coupon_id"),)),
        Reference("promotion_code", lambda row: (row.get("promotion_code_id"),)),
    ),
)

__all__ = ["RESOURCE", "carried_discounts", "discount_rows", "embedded_discount_rows"]
