"""The resource declarations hold the rest of the code to them.

Every stored column is declared (or named as the pipeline's own); every parser writes
exactly the declared columns; the README's resource table is the generated one; and
reconciliation compares every column declared as reconciled: corrupt each of them in
the database and one run finds each of them.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Boolean, DateTime, Engine, Float, Integer, String, Text, update
from sqlalchemy.types import JSON

from stripe_pipeline.catalog import CATALOG
from stripe_pipeline.catalog.docs import BEGIN, END, readme_block
from stripe_pipeline.catalog.model import Policy
from stripe_pipeline.process.upsert import GUARD_COLUMNS
from stripe_pipeline.reconcile.run import OBJECT_TYPES, RunConfig, run_reconciliation
from tests.support.events import make_event, queued
from tests.support.reconciliation_traffic import MemoryApi

ROOT = Path(__file__).resolve().parents[1]
BOOKKEEPING = {"id", "created_at", "updated_at", "amount", *GUARD_COLUMNS}


def test_every_stored_column_is_declared() -> None:
    for resource in CATALOG.resources:
        declared = {resource.key, *resource.policies, *resource.local_columns}
        stored = set(resource.table.c.keys())
        assert stored - BOOKKEEPING == declared, resource.object_type


def test_every_resource_with_a_table_is_reconciled_and_fetchable() -> None:
    assert set(OBJECT_TYPES) == {r.object_type for r in CATALOG.resources}
    for resource in CATALOG.resources:
        assert resource.listings and resource.fetch, resource.object_type
        for column in resource.columns:
            assert column.reconciled or column.note, (resource.object_type, column.name)


def test_readme_resource_table_is_generated_from_the_declarations() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    assert readme[start:end] == readme_block(), "run: python -m stripe_pipeline.catalog.docs"


# Stripe objects of today's API with a value in every field a column reads, so that
# every reconciled column is stated by some listed object
NOW = int(time.time())


def _full_objects(fx: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    def obj(kind: str, object_id: str, **changes: Any) -> dict[str, Any]:
        found = copy.deepcopy(fx[kind])
        found.update(id=object_id, created=NOW - 600, livemode=False, **changes)
        return found

    card = {
        "brand": "visa",
        "last4": "4242",
        "exp_month": 4,
        "exp_year": 2031,
        "fingerprint": "fp1",
    }
    customer = obj(
        "customer",
        "cus_c1",
        email="c1@example.com",
        name="C One",
        delinquent=False,
        currency="usd",
        invoice_settings={"default_payment_method": "pm_c1"},
    )
    method = obj("payment_method", "pm_c1", customer="cus_c1", type="card", card=card)
    failed = obj(
        "payment_intent",
        "pi_c0",
        status="requires_payment_method",
        amount=700,
        amount_received=0,
        currency="usd",
        customer="cus_c1",
        payment_method=None,
        latest_charge="ch_c0",
        description="order 0",
        last_payment_error={
            "code": "card_declined",
            "message": "Your card was declined.",
            "decline_code": "insufficient_funds",
            "payment_method": {"id": "pm_c1"},
        },
    )
    pi = obj(
        "payment_intent",
        "pi_c1",
        status="succeeded",
        amount=1500,
        amount_received=1500,
        currency="usd",
        customer="cus_c1",
        invoice="in_c1",
        payment_method="pm_c1",
        latest_charge="ch_c1",
        description="order 1",
        last_payment_error=None,
    )
    charge = obj(
        "charge",
        "ch_c1",
        payment_intent="pi_c1",
        status="succeeded",
        amount=1500,
        amount_captured=1500,
        amount_refunded=200,
        currency="usd",
        customer="cus_c1",
        payment_method="pm_c1",
        payment_method_details={"card": card},
    )
    legacy = obj(
        "charge",
        "ch_legacy",
        payment_intent=None,
        status="succeeded",
        amount=900,
        amount_captured=900,
        amount_refunded=0,
        currency="usd",
        customer="cus_c1",
        invoice="in_c2",
        payment_method="pm_c1",
        description="legacy",
        failure_code=None,
        outcome={"type": "authorized"},
    )
    refund = obj(
        "refund",
        "re_c1",
        charge="ch_c1",
        payment_intent="pi_c1",
        amount=200,
        currency="usd",
        status="failed",
        reason="requested_by_customer",
        failure_reason="expired_or_canceled_card",
    )
    dispute = obj(
        "dispute",
        "dp_c1",
        charge="ch_c1",
        payment_intent="pi_c1",
        amount=1500,
        currency="usd",
        status="lost",
        reason="fraudulent",
        evidence={"customer_name": "C One"},
        evidence_details={"due_by": NOW + 86400, "has_evidence": True},
        is_charge_refundable=False,
        balance_transactions=[
            {"amount": -1500, "currency": "usd"},
            {"amount": 300, "currency": "usd"},
        ],
    )
    sub = obj(
        "subscription",
        "sub_c1",
        customer="cus_c1",
        status="canceled",
        currency="usd",
        trial_start=NOW - 9000,
        trial_end=NOW - 8000,
        cancel_at_period_end=True,
        cancel_at=NOW - 100,
        canceled_at=NOW - 100,
        ended_at=NOW - 100,
    )
    product = obj(
        "product",
        "prod_c1",
        name="Pro",
        description="The pro plan",
        active=True,
        type="service",
        default_price="price_c1",
        unit_label="seat",
    )
    price = obj(
        "price",
        "price_c1",
        product="prod_c1",
        active=True,
        currency="usd",
        unit_amount=1500,
        unit_amount_decimal="1500",
        billing_scheme="per_unit",
        type="recurring",
        recurring={"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        nickname="Pro monthly",
        lookup_key="pro_monthly",
        tax_behavior="exclusive",
    )
    percent = obj(
        "coupon",
        "SPRING25",
        name="Spring 25.5%",
        percent_off=25.5,
        amount_off=None,
        currency=None,
        duration="repeating",
        duration_in_months=3,
        max_redemptions=100,
        times_redeemed=4,
        valid=True,
        redeem_by=NOW + 86400,
    )
    fixed = obj(
        "coupon", "TENOFF", name="10 off", percent_off=None, amount_off=1000, currency="usd"
    )
    promo = obj(
        "promotion_code",
        "promo_c1",
        code="SPRING",
        promotion={"type": "coupon", "coupon": "SPRING25"},
        customer="cus_c1",
        active=True,
        max_redemptions=50,
        times_redeemed=2,
        expires_at=NOW + 86400,
    )
    # today's discount shape: the coupon under source
    customer["discount"] = {
        **fx["discount"],
        "id": "di_c1",
        "source": {"type": "coupon", "coupon": "SPRING25"},
        "promotion_code": "promo_c1",
        "customer": "cus_c1",
        "start": NOW - 650,
        "end": NOW + 90 * 86400,
    }
    # an older one: the coupon embedded whole
    on_invoice = {
        **fx["discount"],
        "id": "di_c2",
        "coupon": fixed,
        "source": None,
        "customer": "cus_c1",
        "subscription": "sub_c1",
        "subscription_item": "si_c1",
        "invoice": "in_c1",
        "invoice_item": "ii_c1",
        "start": NOW - 640,
        "end": None,
    }
    for item in sub["items"]["data"]:
        item.update(
            current_period_start=NOW - 700,
            current_period_end=NOW + 86400,
            quantity=2,
            price=copy.deepcopy(price),
        )
    # invoice payments (basil): in_c1 paid by pi_c1 after a payment that was detached
    # (canceled), in_c2 paid out of band by the legacy charge
    paid_by_pi = obj(
        "invoice_payment",
        "inpay_c1",
        invoice="in_c1",
        payment={"type": "payment_intent", "payment_intent": "pi_c1"},
        status="paid",
        is_default=True,
        amount_requested=1500,
        amount_paid=1500,
        currency="usd",
        status_transitions={"paid_at": NOW - 200, "canceled_at": None},
    )
    detached = obj(
        "invoice_payment",
        "inpay_c0",
        invoice="in_c1",
        payment={"type": "payment_intent", "payment_intent": "pi_c9"},
        status="canceled",
        is_default=False,
        amount_requested=1500,
        amount_paid=None,
        currency="usd",
        status_transitions={"paid_at": None, "canceled_at": NOW - 400},
    )
    paid_by_charge = obj(
        "invoice_payment",
        "inpay_c2",
        invoice="in_c2",
        payment={"type": "charge", "charge": "ch_legacy"},
        status="paid",
        is_default=True,
        amount_requested=900,
        amount_paid=900,
        currency="usd",
        status_transitions={"paid_at": NOW - 250, "canceled_at": None},
    )
    invoice = obj(
        "invoice",
        "in_c1",
        customer="cus_c1",
        status="paid",
        billing_reason="subscription_cycle",
        currency="usd",
        amount_due=1500,
        amount_paid=1500,
        amount_remaining=0,
        attempt_count=2,
        next_payment_attempt=NOW + 3600,
        period_start=NOW - 700,
        period_end=NOW - 100,
        due_date=NOW + 7200,
        parent={"subscription_details": {"subscription": "sub_c1"}},
        # expanded, as a listing or fetch may ask for it
        payments={"object": "list", "data": [detached, paid_by_pi], "has_more": False},
        status_transitions={"paid_at": NOW - 200, "marked_uncollectible_at": NOW - 300},
        discounts=[on_invoice],
    )
    out_of_band = obj(
        "invoice",
        "in_c2",
        customer="cus_c1",
        status="paid",
        billing_reason="manual",
        currency="usd",
        amount_due=900,
        amount_paid=900,
        amount_remaining=0,
        attempt_count=0,
        parent=None,
        payments={"object": "list", "data": [paid_by_charge], "has_more": False},
        status_transitions={"paid_at": NOW - 250},
    )
    return {
        "customers": [customer],
        "payment_methods": [method],
        "payment_intents": [failed, pi],
        "charges": [charge, legacy],
        "refunds": [refund],
        "disputes": [dispute],
        "subscriptions": [sub],
        "invoices": [invoice, out_of_band],
        "invoice_payments": [paid_by_pi, detached, paid_by_charge],
        "products": [product],
        "prices": [price],
        "coupons": [percent, fixed],
        "promotion_codes": [promo],
    }


DELETIONS = {(r.object_type, r.deleted_marker) for r in CATALOG.resources if r.deleted_marker} - {
    ("subscription", "deleted_at")
}


def _corrupted(column: Any, value: Any) -> Any:
    """A different value of the column's type."""
    if isinstance(column.type, Boolean):
        return not value
    if isinstance(column.type, DateTime):
        return value.replace(year=value.year - 1)
    if isinstance(column.type, Integer | Float):
        return value + 1
    if isinstance(column.type, JSON):
        return {"corrupted": True} if not isinstance(value, dict) else [{"corrupted": True}]
    if isinstance(column.type, Text):
        return "x" + value
    if isinstance(column.type, String):
        return "usx" if column.name == "currency" else ("x" + value)[: column.type.length]
    raise AssertionError(f"no corruption for {column}")


def test_reconciliation_compares_every_reconciled_column(
    engine: Engine, stripe_fixtures: dict
) -> None:
    api = MemoryApi(_full_objects(stripe_fixtures))
    first = run_reconciliation(engine, api, RunConfig(backfill=False))
    # 13 payment and invoice objects (the PI owns ch_c1), a product, a price, 2 coupons, a
    # promotion code and 2 discounts
    assert first.counts["compare"]["found"]["missing_locally"] == 20
    clean = run_reconciliation(engine, api, RunConfig(backfill=False))
    assert clean.counts["compare"]["found"] == {}, "a clean copy must compare equal"

    # every reconciled column has a value somewhere, so every one gets corrupted; a
    # deletion marker only has one once Stripe says "deleted" (test_deletions_... below)
    reconciled = {
        (r.object_type, c.name)
        for r in CATALOG.resources
        for c in r.columns
        if c.reconciled and c.name != "livemode" and (r.object_type, c.name) not in DELETIONS
    }
    currencies = {key for key in reconciled if key[1] == "currency"}
    # a FOLLOWS column is a fact about its anchor's value: compared while they agree
    follows = {(r.object_type, c) for r in CATALOG.resources for c in r.follows}
    # staleness first (repaired), then currencies (a person must look at those)
    # a card's detachment time only has a value once it is detached (the drill covers it)
    follows -= {("payment_method", "detached_at")}
    reconciled -= {("payment_method", "detached_at")}
    for phase in (reconciled - currencies - follows, follows, currencies):
        assert _corrupt(engine, phase) == phase
        result = run_reconciliation(engine, api, RunConfig(backfill=False))
        assert _mismatched(engine, result.run_id) == phase
        after = run_reconciliation(engine, api, RunConfig(backfill=False))
        left = _mismatched(engine, after.run_id)
        assert left == (phase if phase is currencies else set())


def _corrupt(engine: Engine, columns: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Change every stored value of these (object type, column) pairs; returns those changed."""
    corrupted: set[tuple[str, str]] = set()
    with engine.begin() as conn:
        for resource in CATALOG.resources:
            table = resource.table
            for row in conn.execute(table.select()).mappings().all():
                changes = {}
                for column in resource.columns:
                    value = row[column.name]
                    if (resource.object_type, column.name) not in columns or value is None:
                        continue
                    changes[column.name] = _corrupted(table.c[column.name], value)
                    corrupted.add((resource.object_type, column.name))
                if changes:
                    key = table.c[resource.key]
                    conn.execute(update(table).where(key == row[resource.key]).values(changes))
    return corrupted


def _mismatched(engine: Engine, run_id: int) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        return set(
            conn.exec_driver_sql(
                "SELECT object_type, field FROM reconciliation_discrepancies "
                f"WHERE run_id = {run_id} AND kind = 'field_mismatch'"
            ).all()
        )


@pytest.mark.parametrize("resource", CATALOG.resources, ids=lambda r: r.object_type)
def test_parsers_write_exactly_the_declared_columns(resource, stripe_fixtures: dict) -> None:
    objects = _full_objects(stripe_fixtures)
    objects["plans"] = [{**stripe_fixtures["plan"], "id": "plan_c1"}]
    objects["discounts"] = [objects["customers"][0]["discount"]]
    for route in resource.routes:
        for pattern in route.patterns:
            event_type = pattern.replace("*", "updated")
            kind = sorted(route.objects)[0]
            listing = {
                "card": None,
                "charge": "charges",
                "customer": "customers",
                "dispute": "disputes",
                "invoice": "invoices",
                "invoice_payment": "invoice_payments",
                "payment_intent": "payment_intents",
                "payment_method": "payment_methods",
                "refund": "refunds",
                "subscription": "subscriptions",
                "product": "products",
                "plan": "plans",
                "price": "prices",
                "coupon": "coupons",
                "promotion_code": "promotion_codes",
                "discount": "discounts",
            }.get(kind)
            obj = objects[listing][0] if listing else {"id": "card_1", "object": "card"}
            ctx_event = make_event(event_type, obj, NOW)
            from stripe_pipeline.catalog.model import EventContext

            for write in route.handler(EventContext(queued(ctx_event), obj)):
                target = CATALOG.by_table[write.table]
                assert set(write.values) == set(target.policies), (event_type, write.table)
                for name, policy in target.policies.items():
                    if policy is Policy.FOLLOWS:
                        assert target.follows[name] in target.policies


def test_deletions_found_by_fetching_are_repaired(engine: Engine, stripe_fixtures: dict) -> None:
    """A deleted customer is listed no more but answers ``deleted: true`` by id; a
    deleted draft invoice answers 404: both rows are marked deleted, nothing ticketed.
    So is the deleted customer's discount, which it no longer carries. A 404 for
    anything else is an object missing in Stripe."""
    objects = _full_objects(stripe_fixtures)
    draft = copy.deepcopy(objects["invoices"][0])
    draft.update(id="in_draft", status="draft", payments=None, status_transitions={})
    objects["invoices"].append(draft)
    api = MemoryApi(objects)
    run_reconciliation(engine, api, RunConfig(backfill=False))
    api.remove("cus_c1")
    api.deleted["cus_c1"] = "customer"
    api.remove("in_draft")
    api.remove("re_c1")
    result = run_reconciliation(engine, api, RunConfig(backfill=False))
    # the deleted customer's methods are no longer listed (404): fetched by id instead
    assert result.counts["compare"]["fetched"] == {
        "customer": 1,
        "payment_method": 1,
        "invoice": 1,
        "refund": 1,
        "discount": 1,
    }
    with engine.connect() as conn:
        deleted = dict(
            conn.exec_driver_sql(
                "SELECT stripe_customer_id, deleted_at IS NOT NULL FROM stripe_customers"
            ).all()
        )
        drafts = dict(
            conn.exec_driver_sql(
                "SELECT stripe_invoice_id, deleted_at IS NOT NULL FROM stripe_invoices"
            ).all()
        )
        discounts = dict(
            conn.exec_driver_sql(
                "SELECT stripe_discount_id, deleted_at IS NOT NULL FROM stripe_discounts"
            ).all()
        )
        open_ones = conn.exec_driver_sql(
            "SELECT object_type, object_id, kind FROM reconciliation_discrepancies "
            "WHERE status IN ('open', 'ticketed')"
        ).all()
    assert deleted == {"cus_c1": True}
    assert drafts == {"in_c1": False, "in_c2": False, "in_draft": True}
    assert discounts == {"di_c1": True, "di_c2": False}
    assert open_ones == [("refund", "re_c1", "missing_in_stripe")]
    again = run_reconciliation(engine, api, RunConfig(backfill=False))
    # deleted rows are expected to be missing from the listings: not fetched again (the
    # deleted customer's card, created in the window, is: its list answers 404)
    assert again.counts["compare"]["fetched"] == {"payment_method": 1, "refund": 1}
