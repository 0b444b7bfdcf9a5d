"""Subscriptions (``stripe_subscriptions``), old and new shapes.

https://docs.stripe.com/api/subscriptions/object

Old API versions carry ``plan``, ``quantity`` and ``current_period_*`` on the
subscription; today's carry them per item (``items.data[].price`` and the item's
``current_period_*``). Every item goes into the ``items`` JSON list (for MRR); the
first item also fills the flat price columns. ``trial_will_end`` records when Stripe
warned (3 days before the trial ends); ``customer.subscription.deleted`` marks the
row deleted for good.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stripe_pipeline.db.models import StripeSubscription
from stripe_pipeline.process import sql_fields as q
from stripe_pipeline.process.extract_sql import SqlWrite, sql_twin
from stripe_pipeline.process.registry import EventContext, RowWrite, handles
from stripe_pipeline.process.resources.fields import (
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
from stripe_pipeline.process.upsert import Policy, TableSpec

N, K, L = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.LEAST

SPEC = TableSpec(
    table=StripeSubscription.__table__,
    key="stripe_subscription_id",
    policies={
        "customer_id": K,
        "status": N,
        "price_id": N,
        "product_id": N,
        "quantity": N,
        "unit_amount_minor": N,
        "currency": K,
        "billing_interval": N,
        "billing_interval_count": N,
        "items": N,
        "trial_start": N,
        "trial_end": N,
        "current_period_start": N,
        "current_period_end": N,
        "cancel_at_period_end": N,
        "cancel_at": N,
        "canceled_at": N,
        "ended_at": N,
        "trial_will_end_at": K,
        "deleted_at": L,
        "stripe_created": K,
        "livemode": N,
    },
    object_type="subscription",
    audit_fields=(
        "status",
        "price_id",
        "quantity",
        "unit_amount_minor",
        "currency",
        "trial_end",
        "current_period_end",
        "cancel_at_period_end",
        "cancel_at",
        "canceled_at",
        "ended_at",
        "deleted_at",
    ),
    deleted_marker="deleted_at",
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
        "unit_amount_minor": integer(unit_amount),
        "currency": currency(code) if code is not None else fallback_currency,
        "interval": text(recurring.get("interval") or price_obj.get("interval")),
        "interval_count": integer(
            recurring.get("interval_count") or price_obj.get("interval_count")
        ),
    }


def subscription_items(sub: dict[str, Any]) -> list[dict[str, Any]]:
    fallback_currency = currency(sub.get("currency"))
    raw = [i for i in list_data(sub.get("items")) if isinstance(i, dict)]
    if not raw and sub.get("plan"):  # the oldest shape: one plan on the subscription
        raw = [{"plan": sub["plan"], "quantity": sub.get("quantity")}]
    return [_item(item, fallback_currency) for item in raw]


@handles("customer.subscription.*")
def apply_subscription_event(ctx: EventContext) -> Iterable[RowWrite]:
    """created, updated, deleted, trial_will_end, paused, resumed, ..."""
    sub = ctx.obj
    items = subscription_items(sub)
    first = items[0] if items else {}
    raw_items = list_data(sub.get("items"))
    first_raw = raw_items[0] if raw_items and isinstance(raw_items[0], dict) else {}
    deleted = ctx.event_type == "customer.subscription.deleted"
    period_start = sub.get("current_period_start", dig(first_raw, "current_period_start"))
    period_end = sub.get("current_period_end", dig(first_raw, "current_period_end"))
    values = {
        "customer_id": ref_id(sub.get("customer")),
        "status": text(sub.get("status")) or ("canceled" if deleted else "unknown"),
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
        "deleted_at": unix_time(ctx.created) if deleted else None,
        "stripe_created": integer(sub.get("created")),
        "livemode": ctx.livemode,
    }
    return [RowWrite(SPEC.name, object_id(sub), values)]


# --- SQL twin (``extract_sql``): the same row, read by PostgreSQL ---


def _truthy(path: str) -> q.Expr:
    """Python's ``bool()`` of a JSON value (missing: false); numbers only when zero or
    far from it (Python reads a literal like 1e-400 as 0.0, numeric does not)."""
    kind = f"jsonb_typeof({path})"
    number = f"(CASE WHEN {kind} = 'number' THEN ({path})::numeric END)"
    return q.Expr(
        f"coalesce(CASE {kind} WHEN 'object' THEN {path} <> '{{}}'::jsonb "
        f"WHEN 'array' THEN {path} <> '[]'::jsonb "
        f"WHEN 'string' THEN {path} <> '\"\"'::jsonb "
        f"WHEN 'boolean' THEN {path} = 'true'::jsonb "
        f"WHEN 'number' THEN {number} <> 0 END, false)",
        f"coalesce({kind} <> 'number' OR {number} = 0 OR abs({number}) >= 1e-300, true)",
    )


def _or(first: str, second: str) -> q.Expr:
    """Python's ``first or second`` of raw JSON values."""
    truth = _truthy(first)
    return q.Expr(f"(CASE WHEN {truth.value} THEN {first} ELSE {second} END)", truth.ok)


# ``list_data(sub.get("items"))``: a plain list or a list object's data (falsy: empty);
# anything else raises. ``_LIST`` is always an array ('[]' where Python raises).
_ITEMS = q.field("o", "items")
_DATA = q.field(_ITEMS, "data")
_DATA_TRUTH = _truthy(_DATA)
_LIST = (
    f"(CASE jsonb_typeof({_ITEMS}) WHEN 'array' THEN {_ITEMS} "
    f"WHEN 'object' THEN (CASE WHEN jsonb_typeof({_DATA}) = 'array' THEN {_DATA} "
    f"ELSE '[]'::jsonb END) ELSE '[]'::jsonb END)"
)
_LIST_OK = (
    f"(CASE jsonb_typeof({_ITEMS}) WHEN 'object' THEN coalesce(jsonb_typeof({_DATA}) = 'array', "
    f"false) OR (({_DATA_TRUTH.ok}) AND NOT {_DATA_TRUTH.value}) "
    f"ELSE coalesce(jsonb_typeof({_ITEMS}) IN ('array', 'null'), true) END)"
)

# ``subscription_items``' raw items as rows ``si(i, n)``: the list's objects, else the
# oldest shape's one plan (when truthy) with the subscription's quantity
_PLAN = q.field("o", "plan")
_PLAN_TRUTH = _truthy(_PLAN)
_RAW = (
    f"(SELECT a.i, a.n FROM jsonb_array_elements({_LIST}) WITH ORDINALITY AS a(i, n) "
    f"WHERE jsonb_typeof(a.i) = 'object' "
    f"UNION ALL SELECT jsonb_build_object('plan', {_PLAN}, "
    f"'quantity', {q.field('o', 'quantity')}), 1 "
    f"WHERE {_PLAN_TRUTH.value} AND NOT EXISTS (SELECT FROM jsonb_array_elements({_LIST}) "
    f"AS b(j) WHERE jsonb_typeof(b.j) = 'object')) AS si"
)

# ``_item``, one step per lateral: price (``price or plan``), price_obj, recurring
# (``or {}``), unit amount (``unit_amount`` unless None, else ``amount``), interval
_PRICE = _or(q.field("si.i", "price"), q.field("si.i", "plan"))
_RECURRING = _truthy("s3.rec")
_INTERVAL = _or(q.field("s4.reco", "interval"), q.field("s2.po", "interval"))
_INTERVAL_COUNT = _or(q.field("s4.reco", "interval_count"), q.field("s2.po", "interval_count"))
_UNIT = q.field("s2.po", "unit_amount")
_CHAIN = (
    f"{_RAW} "
    f"CROSS JOIN LATERAL (SELECT {_PRICE.value} AS p OFFSET 0) AS s1 "
    f"CROSS JOIN LATERAL (SELECT CASE WHEN jsonb_typeof(s1.p) = 'object' THEN s1.p END "
    f"AS po OFFSET 0) AS s2 "
    f"CROSS JOIN LATERAL (SELECT (s2.po -> 'recurring') AS rec, "
    f"(CASE WHEN coalesce(jsonb_typeof({_UNIT}) <> 'null', false) THEN {_UNIT} "
    f"ELSE (s2.po -> 'amount') END) AS ua OFFSET 0) AS s3 "
    f"CROSS JOIN LATERAL (SELECT CASE WHEN jsonb_typeof(s3.rec) = 'object' THEN s3.rec END "
    f"AS reco OFFSET 0) AS s4 "
    f"CROSS JOIN LATERAL (SELECT {_INTERVAL.value} AS intv, "
    f"{_INTERVAL_COUNT.value} AS intc OFFSET 0) AS s5"
)
_FALLBACK_CURRENCY = q.currency(q.field("o", "currency"))
_ITEM_CODE = q.currency(q.field("s2.po", "currency"))
_ITEM = {
    "price_id": q.ref_id("s1.p"),
    "product_id": q.ref_id(q.field("s2.po", "product")),
    "quantity": q.integer(q.field("si.i", "quantity")),
    "unit_amount_minor": q.integer("s3.ua"),
    # a JSON null currency reads as NULL: the subscription's
    "currency": q.Expr(f"coalesce({_ITEM_CODE.value}, {_FALLBACK_CURRENCY.value})", _ITEM_CODE.ok),
    "interval": q.text("s5.intv"),
    "interval_count": q.integer("s5.intc"),
}
_ITEM_OK = (
    f"({q.all_ok(_PRICE, _INTERVAL, _INTERVAL_COUNT, *_ITEM.values())} AND ({_RECURRING.ok}) "
    f"AND (jsonb_typeof(s3.rec) = 'object' OR NOT {_RECURRING.value}))"
)
# Every item's values and whether all are sure, computed once per event: the write's
# ``items`` is a one-element array of this object (one row per event, as ``item``), so
# the flat columns of the first item read it instead of walking the list again
_ITEM_OBJECT = ", ".join(f"'{k}', {v.value}" for k, v in _ITEM.items())
# ``sub.get(key, dig(first_raw, key))``: the subscription's key when present (even
# null), else the first raw list entry's (NULL unless it is an object)
_PERIOD_KEYS = ("current_period_start", "current_period_end")
_PERIOD_RAW = ", ".join(
    f"'{key}', (CASE WHEN o ? '{key}' THEN {q.field('o', key)} "
    f"ELSE {q.field(f'({_LIST} -> 0)', key)} END)"
    for key in _PERIOD_KEYS
)
_SUMMARY = (
    "jsonb_build_array((SELECT jsonb_build_object('items', "
    f"coalesce(jsonb_agg(jsonb_build_object({_ITEM_OBJECT}) ORDER BY si.n), '[]'::jsonb), "
    f"'ok', coalesce(bool_and(coalesce({_ITEM_OK}, false)), true), {_PERIOD_RAW}) "
    f"FROM {_CHAIN}))"
)
_ALL = "(item -> 'items')"
_ALL_OK = "coalesce((item -> 'ok') = 'true'::jsonb, false)"
_PERIOD = {key: q.unix_time(q.field("item", key)) for key in _PERIOD_KEYS}


def _first(column: str, sql_type: str = "text") -> str:
    """``items[0].get(column)``: NULL when there is no item (``first = {}``)."""
    return f"(({_ALL} -> 0 ->> '{column}')::{sql_type})"


_SUB_QUANTITY = q.integer(q.field("o", "quantity"))
_DELETED = "(e.event_type = 'customer.subscription.deleted')"

sql_twin(
    apply_subscription_event,
    SqlWrite(
        SPEC.name,
        key=q.object_id(),
        ok=q.Expr("true", f"({_LIST_OK} AND ({_PLAN_TRUTH.ok}))"),
        items=_SUMMARY,
        values={
            "customer_id": q.ref_id(q.field("o", "customer")),
            "status": q.either(
                q.text(q.field("o", "status")),
                q.constant(f"(CASE WHEN {_DELETED} THEN 'canceled' ELSE 'unknown' END)"),
            ),
            "price_id": q.Expr(_first("price_id")),
            "product_id": q.Expr(_first("product_id")),
            # ``first.get("quantity", integer(sub.get("quantity")))``: both evaluated
            "quantity": q.Expr(
                f"(CASE WHEN jsonb_array_length({_ALL}) > 0 "
                f"THEN {_first('quantity', 'bigint')} "
                f"ELSE {_SUB_QUANTITY.value} END)",
                _SUB_QUANTITY.ok,
            ),
            "unit_amount_minor": q.Expr(_first("unit_amount_minor", "bigint")),
            "currency": q.Expr(
                f"coalesce({_first('currency')}, {_FALLBACK_CURRENCY.value})",
                _FALLBACK_CURRENCY.ok,
            ),
            "billing_interval": q.Expr(_first("interval")),
            "billing_interval_count": q.Expr(_first("interval_count", "bigint")),
            "items": q.Expr(_ALL, _ALL_OK),
            "trial_start": q.unix_time(q.field("o", "trial_start")),
            "trial_end": q.unix_time(q.field("o", "trial_end")),
            "current_period_start": _PERIOD["current_period_start"],
            "current_period_end": _PERIOD["current_period_end"],
            "cancel_at_period_end": q.boolean(q.field("o", "cancel_at_period_end")),
            "cancel_at": q.unix_time(q.field("o", "cancel_at")),
            "canceled_at": q.unix_time(q.field("o", "canceled_at")),
            "ended_at": q.unix_time(q.field("o", "ended_at")),
            "trial_will_end_at": q.constant(
                f"(CASE WHEN e.event_type = 'customer.subscription.trial_will_end' "
                f"THEN {q.event_time().value} END)"
            ),
            "deleted_at": q.constant(f"(CASE WHEN {_DELETED} THEN {q.event_time().value} END)"),
            "stripe_created": q.integer(q.field("o", "created")),
            "livemode": q.livemode(),
        },
    ),
)
