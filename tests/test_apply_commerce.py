"""Products, prices and legacy plans, coupons, promotion codes and discounts from
their events, in today's shapes (Stripe's fixtures, placeholders filled) and in the
2017-era shapes localstripe speaks; deletions kept as marked rows; objects a row
names stored too (fetched through an ``ObjectSource`` when not in the payload).
Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from stripe_pipeline.catalog.discounts import LEGACY_PREFIX
from stripe_pipeline.catalog.model import ObjectSource
from stripe_pipeline.db.models import metadata
from stripe_pipeline.stripe_api.errors import NotFound
from tests.support.events import LEGACY_API_VERSION, apply_in_transaction, make_event
from tests.support.reconciliation_traffic import MemoryApi

T0 = 1_700_000_000
DAY = 86_400


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def rows(engine: Engine, sql: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql)).mappings()]


def table_rows(engine: Engine, table: str) -> list[dict[str, Any]]:
    """Every row, typed by the model (datetimes as aware UTC on both backends)."""
    t = metadata.tables[table]
    with engine.connect() as conn:
        found = [dict(r) for r in conn.execute(select(t)).mappings()]
    for row_ in found:
        for key, value in row_.items():
            if isinstance(value, datetime) and value.tzinfo is None:
                row_[key] = value.replace(tzinfo=UTC)
    return found


def row(engine: Engine, table: str, key_column: str, key: str) -> dict[str, Any]:
    found = [r for r in table_rows(engine, table) if r[key_column] == key]
    assert len(found) == 1, (table, key, found)
    return found[0]


# --- today's shapes: Stripe's fixtures with realistic values ------------------------


def current(fx: dict) -> dict[str, dict[str, Any]]:
    product = copy.deepcopy(fx["product"])
    product.update(created=T0, description="Soft cotton", unit_label="shirt")
    price = copy.deepcopy(fx["price"])
    price.update(created=T0, nickname="Monthly", lookup_key="tshirt_monthly")
    price["transform_quantity"] = None
    plan = copy.deepcopy(fx["plan"])
    plan.update(id="plan_gold", created=T0, nickname="Gold")
    coupon = copy.deepcopy(fx["coupon"])
    coupon.update(created=T0, duration="repeating", redeem_by=T0 + 30 * DAY, times_redeemed=7)
    promo = copy.deepcopy(fx["promotion_code"])
    promo.update(created=T0, active=True, expires_at=T0 + 60 * DAY, times_redeemed=3)
    promo["promotion"] = {"type": "coupon", "coupon": coupon["id"]}
    discount = copy.deepcopy(fx["discount"])
    discount.update(start=T0, end=T0 + 90 * DAY, promotion_code=promo["id"])
    discount["source"] = {"type": "coupon", "coupon": coupon["id"]}
    return {
        "product": product,
        "price": price,
        "plan": plan,
        "coupon": coupon,
        "promotion_code": promo,
        "discount": discount,
    }


# --- the 2017-era shapes (localstripe's) ---------------------------------------------

PRODUCT_2017 = {
    "id": "prod_Bx1",
    "object": "product",
    "name": "Gold",
    "type": "service",
    "active": True,
    "caption": None,
    "description": None,
    "attributes": None,
    "shippable": True,
    "url": None,
    "statement_descriptor": None,
    "metadata": {},
    "created": T0,
    "livemode": False,
}
PLAN_2017 = {
    "id": "gold-monthly",
    "object": "plan",
    "amount": 2000,
    "currency": "eur",
    "interval": "month",
    "interval_count": 1,
    "product": "prod_Bx1",
    "nickname": None,
    "trial_period_days": None,
    "usage_type": "licensed",
    "billing_scheme": "per_unit",
    "tiers": None,
    "tiers_mode": None,
    "active": True,
    "metadata": {},
    "created": T0,
    "livemode": False,
}
COUPON_2017 = {
    "id": "25OFF",
    "object": "coupon",
    "amount_off": None,
    "currency": None,
    "duration": "repeating",
    "duration_in_months": 3,
    "max_redemptions": None,
    "percent_off": 25,
    "redeem_by": None,
    "times_redeemed": 1,
    "valid": True,
    "metadata": {},
    "created": T0,
    "livemode": False,
}
# no id before 2019: keyed by what identifies it
DISCOUNT_2017 = {
    "object": "discount",
    "coupon": COUPON_2017,
    "customer": "cus_old",
    "subscription": "sub_old",
    "start": T0 + 10,
    "end": T0 + 10 + 90 * DAY,
}
# promotion codes (2020) embedded their coupon whole
PROMO_2020 = {
    "id": "promo_old",
    "object": "promotion_code",
    "code": "WELCOME",
    "coupon": {
        **COUPON_2017,
        "id": "WELCOME10",
        "percent_off": None,
        "amount_off": 1000,
        "currency": "usd",
        "duration": "once",
        "duration_in_months": None,
    },
    "customer": None,
    "active": True,
    "max_redemptions": 100,
    "times_redeemed": 0,
    "expires_at": None,
    "created": T0,
    "livemode": False,
}


def test_products_in_both_shapes(engine: Engine, stripe_fixtures: dict) -> None:
    product = current(stripe_fixtures)["product"]
    apply_in_transaction(
        engine,
        [
            make_event("product.created", product, T0),
            make_event("product.updated", {**product, "name": "T-shirt XL"}, T0 + 5),
            make_event("product.created", PRODUCT_2017, T0, api_version=LEGACY_API_VERSION),
        ],
    )
    new = row(engine, "stripe_products", "stripe_product_id", product["id"])
    assert (new["name"], new["description"], new["active"], new["type"]) == (
        "T-shirt XL",
        "Soft cotton",
        True,
        "good",
    )
    assert (new["default_price_id"], new["unit_label"], new["deleted_at"]) == (
        "price_1PgafmB7WZ01zgkW02Hf9z6c",
        "shirt",
        None,
    )
    old = row(engine, "stripe_products", "stripe_product_id", "prod_Bx1")
    assert (old["name"], old["type"], old["default_price_id"]) == ("Gold", "service", None)


def test_prices_and_legacy_plans_share_the_prices_table(
    engine: Engine, stripe_fixtures: dict
) -> None:
    objs = current(stripe_fixtures)
    price, plan = objs["price"], objs["plan"]
    apply_in_transaction(
        engine,
        [
            make_event("price.created", price, T0),
            make_event("plan.created", plan, T0),
            make_event("plan.created", PLAN_2017, T0, api_version=LEGACY_API_VERSION),
        ],
    )
    found = {r["stripe_price_id"]: r for r in table_rows(engine, "stripe_prices")}
    assert set(found) == {price["id"], "plan_gold", "gold-monthly"}
    p = found[price["id"]]
    assert (p["type"], p["unit_amount_minor"], p["currency"], p["recurring_interval"]) == (
        "recurring",
        2000,
        "usd",
        "month",
    )
    assert (p["lookup_key"], p["tax_behavior"], p["product_id"]) == (
        "tshirt_monthly",
        "unspecified",
        "prod_QXg1hqf4jFNsqG",
    )
    old = found["gold-monthly"]
    assert (old["type"], old["unit_amount_minor"], old["currency"]) == ("recurring", 2000, "eur")
    assert (old["recurring_interval"], old["recurring_interval_count"]) == ("month", 1)
    assert (old["recurring_usage_type"], old["billing_scheme"]) == ("licensed", "per_unit")

    # the prices API's view of the plan, then a later plan event: one row, and the plan
    # event (which states no lookup_key) does not erase what the price said
    as_price = {
        "id": "gold-monthly",
        "object": "price",
        "active": True,
        "currency": "eur",
        "unit_amount": 2000,
        "unit_amount_decimal": "2000",
        "type": "recurring",
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        "product": "prod_Bx1",
        "lookup_key": "gold",
        "tax_behavior": "unspecified",
        "billing_scheme": "per_unit",
        "created": T0,
    }
    apply_in_transaction(engine, [make_event("price.updated", as_price, T0 + 5)])
    apply_in_transaction(
        engine, [make_event("plan.updated", {**PLAN_2017, "nickname": "Gold"}, T0 + 9)]
    )
    old = row(engine, "stripe_prices", "stripe_price_id", "gold-monthly")
    assert (old["lookup_key"], old["nickname"]) == ("gold", "Gold")


def test_coupons_promotion_codes_and_discounts_in_both_shapes(
    engine: Engine, stripe_fixtures: dict
) -> None:
    objs = current(stripe_fixtures)
    apply_in_transaction(
        engine,
        [
            make_event("coupon.created", objs["coupon"], T0),
            make_event("promotion_code.created", objs["promotion_code"], T0 + 1),
            make_event("customer.discount.created", objs["discount"], T0 + 2),
            make_event("coupon.created", COUPON_2017, T0, api_version=LEGACY_API_VERSION),
            make_event(
                "customer.discount.created", DISCOUNT_2017, T0 + 10, api_version="2017-08-15"
            ),
            make_event("promotion_code.created", PROMO_2020, T0 + 3, api_version="2020-08-27"),
        ],
    )
    coupon = row(engine, "stripe_coupons", "stripe_coupon_id", "Z4OV52SU")
    assert (coupon["percent_off"], coupon["amount_off_minor"], coupon["duration"]) == (
        25.5,
        None,
        "repeating",
    )
    assert (coupon["duration_in_months"], coupon["times_redeemed"], coupon["valid"]) == (3, 7, True)
    assert coupon["redeem_by"] == at(T0 + 30 * DAY) and coupon["name"] == "25.5% off"
    old = row(engine, "stripe_coupons", "stripe_coupon_id", "25OFF")
    assert (old["percent_off"], old["duration_in_months"], old["redeem_by"]) == (25.0, 3, None)
    # the coupon a 2020 promotion code embeds is stored too
    welcome = row(engine, "stripe_coupons", "stripe_coupon_id", "WELCOME10")
    assert (welcome["amount_off_minor"], welcome["currency"], welcome["duration"]) == (
        1000,
        "usd",
        "once",
    )
    promo = row(
        engine, "stripe_promotion_codes", "stripe_promotion_code_id", objs["promotion_code"]["id"]
    )
    assert (promo["code"], promo["coupon_id"], promo["active"], promo["times_redeemed"]) == (
        "FALL20",
        "Z4OV52SU",
        True,
        3,
    )
    assert promo["expires_at"] == at(T0 + 60 * DAY)
    old_promo = row(engine, "stripe_promotion_codes", "stripe_promotion_code_id", "promo_old")
    assert (old_promo["coupon_id"], old_promo["max_redemptions"]) == ("WELCOME10", 100)

    discounts = {r["stripe_discount_id"]: r for r in table_rows(engine, "stripe_discounts")}
    new = discounts["di_1Pgc6rB7WZ01zgkW7Al8Fal9"]
    assert (new["coupon_id"], new["promotion_code_id"], new["customer_id"]) == (
        "Z4OV52SU",
        objs["promotion_code"]["id"],
        "cus_QXg1o8vcGmoR32",
    )
    assert (new["start_at"], new["end_at"], new["stripe_created"]) == (
        at(T0),
        at(T0 + 90 * DAY),
        T0,
    )
    [legacy_key] = [k for k in discounts if k.startswith(LEGACY_PREFIX)]
    legacy = discounts[legacy_key]
    assert len(legacy_key) == len(LEGACY_PREFIX) + 24
    assert (legacy["coupon_id"], legacy["customer_id"], legacy["subscription_id"]) == (
        "25OFF",
        "cus_old",
        "sub_old",
    )


def test_legacy_discount_key_is_stable_across_the_objects_that_carry_it(
    engine: Engine,
) -> None:
    """The id-less discount of a customer event, a subscription and its invoice is one
    row; another start (the coupon applied again later) is another."""
    from tests.test_apply_versions import INVOICE_2017, SUB_2017

    sub = {**copy.deepcopy(SUB_2017), "discount": DISCOUNT_2017}
    invoice = {**copy.deepcopy(INVOICE_2017), "discount": DISCOUNT_2017}
    again = {**DISCOUNT_2017, "start": T0 + 500}
    apply_in_transaction(
        engine,
        [
            make_event(t, obj, T0 + 20 + i, api_version=LEGACY_API_VERSION)
            for i, (t, obj) in enumerate(
                [
                    ("customer.discount.created", DISCOUNT_2017),
                    ("customer.subscription.updated", sub),
                    ("invoice.payment_succeeded", invoice),
                    ("customer.discount.updated", again),
                ]
            )
        ],
    )
    found = sorted(table_rows(engine, "stripe_discounts"), key=lambda r: r["start_at"])
    assert [r["start_at"] for r in found] == [at(T0 + 10), at(T0 + 500)]
    assert all(r["stripe_discount_id"].startswith(LEGACY_PREFIX) for r in found)


def test_subscriptions_and_invoices_store_the_prices_and_discounts_they_carry(
    engine: Engine, stripe_fixtures: dict
) -> None:
    objs = current(stripe_fixtures)
    coupon = {**objs["coupon"], "object": "coupon"}
    sub = copy.deepcopy(stripe_fixtures["subscription"])
    sub["discounts"] = [
        {
            **objs["discount"],
            "id": "di_sub",
            "subscription": sub["id"],
            "source": {"type": "coupon", "coupon": coupon},
        }
    ]
    invoice = copy.deepcopy(stripe_fixtures["invoice"])
    invoice["discounts"] = ["di_sub"]  # ids only: nothing more to store
    invoice["lines"]["data"][0]["discounts"] = [
        {**objs["discount"], "id": "di_line", "invoice_item": "ii_1", "invoice": invoice["id"]}
    ]
    apply_in_transaction(
        engine,
        [
            make_event("customer.subscription.created", sub, T0),
            make_event("invoice.finalized", invoice, T0 + 1),
        ],
    )
    prices = rows(engine, "SELECT stripe_price_id, last_event_id FROM stripe_prices")
    # the item's price, unversioned: the price's own events still win
    assert prices == [{"stripe_price_id": "price_1PgafmB7WZ01zgkW6dKueIc5", "last_event_id": None}]
    discounts = {r["stripe_discount_id"]: r for r in table_rows(engine, "stripe_discounts")}
    assert set(discounts) == {"di_line", "di_sub"}
    assert discounts["di_sub"]["subscription_id"] == sub["id"]
    assert (discounts["di_line"]["invoice_id"], discounts["di_line"]["invoice_item_id"]) == (
        invoice["id"],
        "ii_1",
    )
    assert rows(engine, "SELECT stripe_coupon_id FROM stripe_coupons") == [
        {"stripe_coupon_id": "Z4OV52SU"}
    ]


@pytest.mark.parametrize(
    ("kind", "deleted_type", "table", "key_column"),
    [
        ("product", "product.deleted", "stripe_products", "stripe_product_id"),
        ("price", "price.deleted", "stripe_prices", "stripe_price_id"),
        ("plan", "plan.deleted", "stripe_prices", "stripe_price_id"),
        ("coupon", "coupon.deleted", "stripe_coupons", "stripe_coupon_id"),
        ("discount", "customer.discount.deleted", "stripe_discounts", "stripe_discount_id"),
    ],
)
def test_deletions_keep_the_row_marked_for_good(
    engine: Engine, stripe_fixtures: dict, kind: str, deleted_type: str, table: str, key_column: str
) -> None:
    obj = current(stripe_fixtures)[kind]
    created = f"{kind}.created" if kind != "discount" else "customer.discount.created"
    updated = f"{kind}.updated" if kind != "discount" else "customer.discount.updated"
    apply_in_transaction(engine, [make_event(created, obj, T0)])
    apply_in_transaction(engine, [make_event(deleted_type, obj, T0 + 60)])
    # a late update (older, then newer than the deletion) cannot revive it
    apply_in_transaction(engine, [make_event(updated, obj, T0 + 30)])
    apply_in_transaction(engine, [make_event(updated, obj, T0 + 90)])
    stored = row(engine, table, key_column, obj["id"])
    assert stored["deleted_at"] == at(T0 + 60)
    with engine.connect() as conn:
        actions = (
            conn.execute(
                text("SELECT action FROM audit_log WHERE object_id = :k ORDER BY id"),
                {"k": obj["id"]},
            )
            .scalars()
            .all()
        )
    assert "delete" in actions


# --- objects a row names: fetched and stored when not in the payload ----------------


class MemoryObjects:
    """``ObjectSource`` over the in-memory Stripe (``MemoryApi``): what the API client's
    ``fetch_object`` does, without HTTP; ``error`` makes every fetch fail."""

    def __init__(self, api: MemoryApi, error: Exception | None = None) -> None:
        self.api, self.error, self.paths = api, error, []

    def fetch_object(self, path: str) -> dict[str, Any] | None:
        self.paths.append(path)
        if self.error is not None:
            raise self.error
        try:
            return self.api.get(path)
        except NotFound:
            return None


def _sub_naming(fx: dict, price: str, product: str) -> dict[str, Any]:
    sub = copy.deepcopy(fx["subscription"])
    sub.update(id="sub_ref", customer="cus_ref")
    item = sub["items"]["data"][0]
    item.pop("plan")
    item["price"] = {**copy.deepcopy(fx["price"]), "id": price, "product": product}
    return sub


def test_a_subscription_naming_an_unseen_price_and_product_stores_them(
    engine: Engine, stripe_fixtures: dict
) -> None:
    product = {**stripe_fixtures["product"], "id": "prod_ref", "name": "Ref product"}
    price = {**stripe_fixtures["price"], "id": "price_ref", "product": "prod_ref"}
    api = MemoryApi({"products": [product], "prices": [price]})
    source = MemoryObjects(api)
    assert isinstance(source, ObjectSource)
    sub = _sub_naming(stripe_fixtures, "price_ref", "prod_ref")
    sub["items"]["data"][0]["price"] = "price_ref"  # named by id only
    result = apply_in_transaction(
        engine, [make_event("customer.subscription.created", sub, T0)], object_source=source
    )
    assert list(result.outcomes.values()) == ["processed"] and not result.failures
    # the price first, then (the next round) the product the fetched price names
    assert source.paths == ["/v1/prices/price_ref", "/v1/products/prod_ref"]
    stored = row(engine, "stripe_prices", "stripe_price_id", "price_ref")
    assert (stored["product_id"], stored["unit_amount_minor"], stored["last_event_id"]) == (
        "prod_ref",
        2000,
        None,
    )
    assert row(engine, "stripe_products", "stripe_product_id", "prod_ref")["name"] == "Ref product"
    # the price's own later event wins over the fetched state
    apply_in_transaction(engine, [make_event("price.updated", {**price, "active": False}, T0 + 5)])
    assert row(engine, "stripe_prices", "stripe_price_id", "price_ref")["active"] is False
    # stored now: the next event naming them fetches nothing
    apply_in_transaction(
        engine, [make_event("customer.subscription.updated", sub, T0 + 9)], object_source=source
    )
    assert len(source.paths) == 2


def test_a_failed_fetch_is_the_events_temporary_failure(
    engine: Engine, stripe_fixtures: dict
) -> None:
    source = MemoryObjects(MemoryApi(), error=ConnectionError("api down"))
    sub = _sub_naming(stripe_fixtures, "price_down", "prod_down")
    other = {**stripe_fixtures["customer"], "id": "cus_fine"}
    result = apply_in_transaction(
        engine,
        [
            make_event("customer.subscription.created", sub, T0),
            make_event("customer.created", other, T0),
        ],
        object_source=source,
    )
    assert [type(e).__name__ for e in result.failures.values()] == ["ConnectionError"]
    assert list(result.outcomes.values()) == ["processed"]
    # nothing of the failed event is written: it is retried whole
    assert rows(engine, "SELECT count(*) AS n FROM stripe_subscriptions") == [{"n": 0}]
    assert rows(engine, "SELECT count(*) AS n FROM stripe_prices") == [{"n": 0}]


def test_without_a_client_or_at_a_404_the_event_is_applied_with_a_note(
    engine: Engine, stripe_fixtures: dict
) -> None:
    sub = _sub_naming(stripe_fixtures, "price_x", "prod_gone")
    result = apply_in_transaction(engine, [make_event("customer.subscription.created", sub, T0)])
    [note] = result.notes.values()
    assert "product prod_gone not stored yet" in note
    other = {**sub, "id": "sub_other"}
    result = apply_in_transaction(
        engine,
        [make_event("customer.subscription.created", other, T0)],
        object_source=MemoryObjects(MemoryApi()),
    )
    [note] = result.notes.values()
    assert "product prod_gone not found at Stripe" in note
    assert rows(engine, "SELECT count(*) AS n FROM stripe_subscriptions") == [{"n": 2}]
