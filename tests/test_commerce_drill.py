"""Drill: a fifth of the product, price, plan, coupon, promotion code and discount
events are lost; one nightly reconciliation run (no event backfill: the events are
older than Stripe keeps, or /v1/events is down) restores every object, field by field,
against an in-memory Stripe that hides what Stripe hides (deleted objects are listed
no more and answer 404; a removed discount is no longer on its customer or
subscription). Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import copy
import random
import time
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select

from stripe_pipeline.catalog import CATALOG
from stripe_pipeline.catalog.discounts import carried_discounts
from stripe_pipeline.reconcile.compare import local_value
from stripe_pipeline.reconcile.parse import row_from_api_object
from stripe_pipeline.reconcile.run import RunConfig, run_reconciliation
from stripe_pipeline.reconcile.window import to_unix
from tests.support.events import LEGACY_API_VERSION, apply_in_transaction, make_event
from tests.support.reconciliation_traffic import MemoryApi

NOW = int(time.time())
T0 = NOW - 50_000
COMMERCE = ("product", "price", "coupon", "promotion_code", "discount")


class Story:
    """Objects, their events in order, and Stripe's final state."""

    def __init__(self, fx: dict) -> None:
        self.fx = fx
        self.events: list[dict[str, Any]] = []
        self.api: dict[str, list[dict[str, Any]]] = {}
        self.gone: dict[str, set[str]] = {t: set() for t in COMMERCE}
        self.t = T0

    def tick(self) -> int:
        self.t += 7
        return self.t

    def emit(self, event_type: str, obj: dict[str, Any], api_version: str | None = None) -> None:
        kwargs = {"api_version": api_version} if api_version else {}
        self.events.append(make_event(event_type, obj, self.tick(), **kwargs))

    def keep(self, path: str, obj: dict[str, Any]) -> None:
        self.api.setdefault(path, []).append(obj)


def build(fx: dict) -> Story:
    s = Story(fx)
    for n in range(1, 7):
        product = {**copy.deepcopy(fx["product"]), "id": f"prod_{n}", "created": T0 + n}
        product.update(name=f"Product {n}", default_price=f"price_{n}", unit_label=None)
        s.emit("product.created", product)
        product = {**product, "name": f"Product {n} v2", "description": f"v2 of {n}"}
        s.emit("product.updated", product)
        if n == 6:
            s.emit("product.deleted", product)
            s.gone["product"].add(product["id"])
        else:
            s.keep("products", product)

        price = copy.deepcopy(fx["price"])
        price.update(id=f"price_{n}", product=f"prod_{n}", created=T0 + n, unit_amount=1000 * n)
        price.update(unit_amount_decimal=str(1000 * n), transform_quantity=None)
        price["recurring"] = {
            "interval": ["month", "year", "week", "day"][n % 4],
            "interval_count": 1 + n % 2,
            "usage_type": "licensed",
        }
        s.emit("price.created", price)
        price = {**price, "nickname": f"Tier {n}", "lookup_key": f"tier_{n}"}
        s.emit("price.updated", price)
        if n == 5:
            price = {**price, "active": False}
            s.emit("price.updated", price)
        if n == 6:
            s.emit("price.deleted", price)
            s.gone["price"].add(price["id"])
        else:
            s.keep("prices", price)

    for n in (1, 2):  # legacy plans: plan events, listed by the prices API as prices
        plan = {**copy.deepcopy(fx["plan"]), "id": f"plan_{n}", "product": "prod_1"}
        plan.update(created=T0 + 10 + n, amount=500 * n, amount_decimal=str(500 * n))
        s.emit("plan.created", plan, LEGACY_API_VERSION)
        plan = {**plan, "nickname": f"Plan {n}"}
        s.emit("plan.updated", plan, LEGACY_API_VERSION)
        if n == 2:
            s.emit("plan.deleted", plan, LEGACY_API_VERSION)
            s.gone["price"].add(plan["id"])
        else:
            s.keep(
                "prices",
                {
                    "id": plan["id"],
                    "object": "price",
                    "active": True,
                    "billing_scheme": "per_unit",
                    "created": plan["created"],
                    "currency": "usd",
                    "livemode": False,
                    "lookup_key": None,
                    "nickname": plan["nickname"],
                    "product": "prod_1",
                    "recurring": {
                        "interval": "month",
                        "interval_count": 1,
                        "usage_type": "licensed",
                    },
                    "tax_behavior": "unspecified",
                    "type": "recurring",
                    "unit_amount": plan["amount"],
                    "unit_amount_decimal": plan["amount_decimal"],
                },
            )

    coupons = {}
    for n in range(1, 5):
        coupon = {**copy.deepcopy(fx["coupon"]), "id": f"COUPON{n}", "created": T0 + 20 + n}
        if n % 2:
            coupon.update(percent_off=10.0 * n + 0.5, amount_off=None, currency=None)
        else:
            coupon.update(percent_off=None, amount_off=500 * n, currency="usd")
        coupon.update(duration="repeating", duration_in_months=n, redeem_by=None)
        s.emit("coupon.created", coupon)
        coupon = {**coupon, "times_redeemed": n, "name": f"Coupon {n}"}
        s.emit("coupon.updated", coupon)
        coupons[n] = coupon
        if n == 4:
            s.emit("coupon.deleted", coupon)
            s.gone["coupon"].add(coupon["id"])
        else:
            s.keep("coupons", coupon)

    for n in range(1, 4):
        promo = {**copy.deepcopy(fx["promotion_code"]), "id": f"promo_{n}", "code": f"CODE{n}"}
        promo.update(created=T0 + 30 + n, active=True, expires_at=None)
        promo["promotion"] = {"type": "coupon", "coupon": f"COUPON{n}"}
        s.emit("promotion_code.created", promo)
        promo = {**promo, "times_redeemed": 2 * n, "active": n != 3}
        s.emit("promotion_code.updated", promo)
        s.keep("promotion_codes", promo)

    for n in range(1, 7):
        customer = {**copy.deepcopy(fx["customer"]), "id": f"cus_{n}", "created": T0 + 40 + n}
        customer.update(email=f"c{n}@example.com", discount=None, currency="usd")
        sub = copy.deepcopy(fx["subscription"])
        sub.update(id=f"sub_{n}", customer=customer["id"], created=T0 + 40 + n, status="active")
        sub.update(canceled_at=None, ended_at=None, cancel_at=None, discounts=[])
        sub["items"]["data"][0]["price"] = copy.deepcopy(s.api["prices"][n % 5])
        legacy = n == 6  # an account on an old API version: discounts without ids
        discount = {
            **copy.deepcopy(fx["discount"]),
            "id": None if legacy else f"di_{n}",
            "customer": customer["id"],
            "subscription": sub["id"] if n % 2 else None,
            "promotion_code": f"promo_{n}" if n <= 3 else None,
            "start": T0 + 50 + n,
            "end": None,
        }
        if legacy:
            discount.pop("id")
            discount.pop("source")
            discount["coupon"] = coupons[1]
        else:
            discount["source"] = {"type": "coupon", "coupon": f"COUPON{1 + n % 3}"}
        version = LEGACY_API_VERSION if legacy else None
        s.emit("customer.discount.created", discount, version)
        removed = n in (2, 5)
        if removed:
            s.emit("customer.discount.deleted", discount, version)
            s.gone["discount"].add(f"di_{n}")
        elif n % 2:
            sub["discounts"] = [discount]  # held expanded, as the listing asks
        else:
            customer["discount"] = discount
        s.keep("customers", customer)
        s.keep("subscriptions", sub)
    return s


def _lose_a_fifth(events: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    lost = set(rnd.sample(range(len(events)), len(events) // 5))
    kept = [e for i, e in enumerate(events) if i not in lost]
    rnd.shuffle(kept)  # and in no particular order
    return kept


def _stripe_rows(api: MemoryApi) -> dict[str, dict[str, dict[str, Any]]]:
    """What each live object states, read by the processing parsers."""
    expected: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in COMMERCE}
    sources = {
        "product": [("products", "product.updated", None)],
        "price": [("prices", "price.updated", None)],
        "coupon": [("coupons", "coupon.updated", None)],
        "promotion_code": [("promotion_codes", "promotion_code.updated", None)],
        "discount": [
            ("customers", "customer.discount.updated", carried_discounts),
            ("subscriptions", "customer.discount.updated", carried_discounts),
        ],
    }
    for object_type, listed in sources.items():
        resource = CATALOG.by_type[object_type]
        for path, read_as, carried in listed:
            for parent in api.data[f"/v1/{path}"]:
                for obj in carried(parent) if carried else [parent]:
                    write = row_from_api_object(CATALOG, resource, read_as, obj, observed_at=NOW)
                    expected[object_type][write.key] = {
                        c: write.values[c] for c in resource.reconciled if c != "deleted_at"
                    }
    return expected


def _local_rows(engine: Engine, object_type: str) -> dict[str, dict[str, Any]]:
    resource = CATALOG.by_type[object_type]
    with engine.connect() as conn:
        found = conn.execute(select(resource.table)).mappings().all()
    return {
        r[resource.key]: {c: local_value(resource, c, r[c]) for c in resource.reconciled}
        for r in found
    }


def _unix(value: Any) -> Any:
    return to_unix(value) if isinstance(value, datetime) else value


# seeds whose losses include a deletion of each kind and a discount's removal
@pytest.mark.parametrize("seed", [3, 16, 17, 18])
def test_a_fifth_of_the_commerce_events_lost_one_nightly_run_restores_every_field(
    engine: Engine, stripe_fixtures: dict, seed: int
) -> None:
    story = build(stripe_fixtures)
    kept = _lose_a_fifth(story.events, seed)
    assert len(story.events) > 50 and len(kept) == len(story.events) - len(story.events) // 5
    apply_in_transaction(engine, kept)
    api = MemoryApi(story.api)
    expected = _stripe_rows(api)

    def differences() -> list[tuple[str, str, str]]:
        out = []
        for object_type in COMMERCE:
            local = _local_rows(engine, object_type)
            for key, values in expected[object_type].items():
                row = local.get(key)
                if row is None:
                    out.append((object_type, key, "missing"))
                    continue
                out += [
                    (object_type, key, c)
                    for c, v in values.items()
                    if _unix(v) != row[c] or row.get("deleted_at") is not None
                ]
            for key in story.gone[object_type]:
                if key in local and local[key]["deleted_at"] is None:
                    out.append((object_type, key, "not marked deleted"))
        return out

    before = differences()
    assert len(before) >= 5, before  # the drill must lose something
    result = run_reconciliation(engine, api, RunConfig(backfill=False))
    assert differences() == []
    # the legacy (id-less) discount is one of the restored ones, under its derived key
    assert any(k.startswith("di_legacy_") for k in _local_rows(engine, "discount"))
    assert result.counts["compare"]["found"].get("missing_in_stripe", 0) == 0
    clean = run_reconciliation(engine, api, RunConfig(backfill=False))
    assert clean.counts["compare"]["found"] == {}, clean.counts["compare"]
