"""Subscriptions (``stripe_subscriptions``), old and new shapes.

https://docs.stripe.com/api/subscriptions/object

Old API versions carry ``plan``, ``quantity`` and ``current_period_*`` on the
subscription; today's carry them per item (``items.data[].price`` and the item's
``current_period_*``). Every item goes into the ``items`` JSON list (for MRR); the
first item also fills the flat price columns. ``trial_will_end`` records when Stripe
warned (3 days before the trial ends); ``customer.subscription.deleted`` marks the
row deleted for good.

The ``items`` JSON list is the one source of truth for subscription items (the
``stg_stripe__subscription_items`` model reads it): a separate items table would be a
second copy to keep equal. Every price (or plan) an item embeds is stored as an
unversioned ``stripe_prices`` row, and every discount object the subscription carries
as an unversioned ``stripe_discounts`` row; the items' prices and products are
references, so processing stores one it has not seen (``Reference``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stripe_pipeline.catalog.discounts import embedded_discount_rows
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
    event_fact,
)
from stripe_pipeline.catalog.prices import embedded_price_rows
from stripe_pipeline.catalog.readers import (
    amount,
    boolean,
    currency,
    dig,
    integer,
    list_data,
    object_id,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripeSubscription

N, K, L = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.LEAST
TABLE = StripeSubscription.__tablename__

COLUMNS = (
    Column("customer_id", K),
    Column("status", N, audit=True),
    Column("price_id", N, audit=True),
    Column("product_id", N),
    Column("quantity", N, audit=True),
    Column("unit_amount_minor", N, audit=True),
    Column("currency", K, audit=True),
    Column("billing_interval", N),
    Column("billing_interval_count", N),
    Column("items", N),
    Column("trial_start", N),
    Column("trial_end", N, audit=True),
    Column("current_period_start", N),
    Column("current_period_end", N, audit=True),
    Column("cancel_at_period_end", N, audit=True),
    Column("cancel_at", N, audit=True),
    Column("canceled_at", N, audit=True),
    Column("ended_at", N, audit=True),
    event_fact(
        "trial_will_end_at",
        K,
        "time Stripe sent customer.subscription.trial_will_end (3 days before the trial "
        "ends); the object does not say it",
    ),
    # a canceled subscription is deleted for good: when it ended
    Column("deleted_at", L, audit=True),
    Column("stripe_created", K),
    Column("livemode", N),
)


def _item(item: dict[str, Any], fallback_currency: str | None) -> dict[str, Any]:
    """One item as the MRR models read it: price, product, quantity, amount, interval."""
    price = item.get("price") or item.get("plan")
    price_obj = price if isinstance(price, dict) else {}
    recurring = price_obj.get("recurring") or {}
    unit_amount = price_obj.get("unit_amount")
    if unit_amount is None:
        unit_amount = price_obj.get("amount")  # a plan
    code = price_obj.get("currency")
    return {
        "price_id": ref_id(price),
        "product_id": ref_id(price_obj.get("product")),
        "quantity": integer(item.get("quantity")),
        "unit_amount_minor": amount(unit_amount),
        "currency": currency(code) if code is not None else fallback_currency,
        "interval": text(recurring.get("interval") or price_obj.get("interval")),
        "interval_count": integer(
            recurring.get("interval_count") or price_obj.get("interval_count")
        ),
    }


def _raw_items(sub: dict[str, Any]) -> list[dict[str, Any]]:
    raw = [i for i in list_data(sub.get("items")) if isinstance(i, dict)]
    if not raw and sub.get("plan"):  # the oldest shape: one plan on the subscription
        raw = [{"plan": sub["plan"], "quantity": sub.get("quantity")}]
    return raw


def subscription_items(sub: dict[str, Any]) -> list[dict[str, Any]]:
    fallback_currency = currency(sub.get("currency"))
    return [_item(item, fallback_currency) for item in _raw_items(sub)]


def _item_ids(row: Any, column: str) -> list[str | None]:
    """Ids the stored row's items (and flat columns) name: its references."""
    items = row.get("items") or []
    return [row.get(column), *(i.get(column) for i in items if isinstance(i, dict))]


def apply_subscription_event(ctx: EventContext) -> Iterable[RowWrite]:
    """created, updated, deleted, trial_will_end, paused, resumed, ..."""
    sub = ctx.obj
    items = subscription_items(sub)
    first = items[0] if items else {}
    raw_items = list_data(sub.get("items"))
    first_raw = raw_items[0] if raw_items and isinstance(raw_items[0], dict) else {}
    status = text(sub.get("status"))
    deleted = ctx.event_type == "customer.subscription.deleted" or status == "canceled"
    # the deletion happened when the subscription ended (the event comes a moment later;
    # a listed canceled subscription says the same)
    ended = unix_time(sub.get("ended_at")) or unix_time(sub.get("canceled_at"))
    period_start = sub.get("current_period_start", dig(first_raw, "current_period_start"))
    period_end = sub.get("current_period_end", dig(first_raw, "current_period_end"))
    values = {
        "customer_id": ref_id(sub.get("customer")),
        "status": status or ("canceled" if deleted else "unknown"),
        "price_id": first.get("price_id"),
        "product_id": first.get("product_id"),
        "quantity": first.get("quantity", integer(sub.get("quantity"))),
        "unit_amount_minor": first.get("unit_amount_minor"),
        "currency": first.get("currency") or currency(sub.get("currency")),
        "billing_interval": first.get("interval"),
        "billing_interval_count": first.get("interval_count"),
        "items": items,
        "trial_start": unix_time(sub.get("trial_start")),
        "trial_end": unix_time(sub.get("trial_end")),
        "current_period_start": unix_time(period_start),
        "current_period_end": unix_time(period_end),
        "cancel_at_period_end": boolean(sub.get("cancel_at_period_end")),
        "cancel_at": unix_time(sub.get("cancel_at")),
        "canceled_at": unix_time(sub.get("canceled_at")),
        "ended_at": unix_time(sub.get("ended_at")),
        "trial_will_end_at": unix_time(ctx.created)
        if ctx.event_type == "customer.subscription.trial_will_end"
        else None,
        "deleted_at": (ended or unix_time(ctx.created)) if deleted else None,
        "stripe_created": integer(sub.get("created")),
        "livemode": ctx.livemode,
    }
    # the subscription first, and lazily: reconciliation reads only this row
    yield RowWrite(TABLE, object_id(sub), values)
    prices = [item.get("price") or item.get("plan") for item in _raw_items(sub)]
    yield from embedded_price_rows(prices, created=ctx.created, livemode=ctx.livemode)
    yield from embedded_discount_rows(sub, created=ctx.created, livemode=ctx.livemode)


RESOURCE = Resource(
    object_type="subscription",
    table=StripeSubscription.__table__,
    key="stripe_subscription_id",
    columns=COLUMNS,
    # no SQL twin on purpose: measured ~375 us per event in SQL (items read through
    # nested set-returning subqueries) against ~80-100 us loading and parsing in Python
    routes=(
        Route(("customer.subscription.*",), apply_subscription_event, frozenset({"subscription"})),
    ),
    listings=(
        # Stripe leaves canceled subscriptions out of the list unless status=all
        Listing(
            "subscriptions",
            "/v1/subscriptions",
            read_as="customer.subscription.updated",
            params={"status": "all"},
        ),
    ),
    fetch=(Fetch("/v1/subscriptions/{id}", "customer.subscription.updated"),),
    docs="https://docs.stripe.com/api/subscriptions/object",
    deleted_marker="deleted_at",
    references=(
        Reference("price", lambda row: _item_ids(row, "price_id")),
        Reference("product", lambda row: _item_ids(row, "product_id")),
    ),
)
