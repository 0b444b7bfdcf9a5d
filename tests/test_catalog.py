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
from sqlalchemy import Boolean, DateTime, Engine, Float, Integer, Numeric, String, Text, update
from sqlalchemy.types import JSON

from stripe_pipeline.catalog import CATALOG
from stripe_pipeline.catalog.docs import BEGIN, END, readme_block
from stripe_pipeline.catalog.model import EventContext, Policy
from stripe_pipeline.process.upsert import GUARD_COLUMNS
from stripe_pipeline.reconcile.run import OBJECT_TYPES, RunConfig, run_reconciliation
from tests.support import billing_objects as bo
from tests.support.events import apply_in_transaction, make_event, queued
from tests.support.reconciliation_traffic import MemoryApi

ROOT = Path(__file__).resolve().parents[1]
MISSING_LOCALLY = 39
BOOKKEEPING = {"id", "created_at", "updated_at", "amount", *GUARD_COLUMNS}


def test_every_stored_column_is_declared() -> None:
    for resource in CATALOG.resources:
        declared = {resource.key, *resource.policies, *resource.local_columns}
        stored = set(resource.table.c.keys())
        assert stored - BOOKKEEPING == declared, resource.object_type


def test_every_resource_with_a_table_is_reconciled_and_fetchable() -> None:
    assert set(OBJECT_TYPES) == {r.object_type for r in CATALOG.resources}
    for resource in CATALOG.resources:
        assert resource.listings, resource.object_type
        # Stripe has no fetch by id for a line: its parent's complete list stands in
        per_parent = all(listing.per_parent for listing in resource.listings)
        assert resource.fetch or per_parent, resource.object_type
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
        balance_transaction="txn_c1",
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
        balance_transaction="txn_c1r",
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
    # an invoice of a subscription period and a setup fee: a discount and sales tax
    sub_line = bo.line_basil(
        fx,
        "il_c1",
        "in_c1",
        amount=1500,
        subscription="sub_c1",
        item="si_c1",
        discount=150,
        taxes=[bo.tax_basil(98, 1350)],
        period=(NOW - 700, NOW - 100),
    )
    fee_line = bo.line_basil(
        fx,
        "il_c2",
        "in_c1",
        amount=500,
        subscription="sub_c1",
        invoice_item="ii_c1",
        price="price_setup",
        product="prod_setup",
        taxes=[bo.tax_basil(36, 500)],
        period=(NOW - 700, NOW - 700),
        proration=True,
    )
    lines = [sub_line, fee_line]
    invoice = obj(
        "invoice",
        "in_c1",
        customer="cus_c1",
        status="paid",
        billing_reason="subscription_cycle",
        currency="usd",
        subtotal=2000,
        total=1984,
        total_discount_amounts=[{"amount": 150, "discount": "di_c1"}],
        total_taxes=[bo.tax_basil(134, 1850)],
        lines=bo.listed(lines, "/v1/invoices/in_c1/lines"),
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
        lines={"object": "list", "data": [], "has_more": False},
        status_transitions={"paid_at": NOW - 250},
    )
    # a post-payment credit note for the fee, refunded, and a voided one
    note_line = bo.credit_note_line_basil(
        fx, "cnli_c1", amount=500, invoice_line="il_c2", taxes=[bo.tax_basil(36, 500)], discount=20
    )
    note = bo.credit_note_basil(
        fx, "cn_c1", "in_c1", [note_line], customer="cus_c1", refunds=["re_c1"], out_of_band=0
    )
    note.update(created=NOW - 600, livemode=False)
    voided = bo.credit_note_basil(
        fx,
        "cn_c2",
        "in_c1",
        [bo.credit_note_line_basil(fx, "cnli_c2", amount=300, invoice_line=None)],
        customer="cus_c1",
        status="void",
    )
    voided.update(created=NOW - 600, voided_at=NOW - 500, livemode=False)
    rate = bo.tax_rate(fx, bo.CA_SALES_TAX, created=NOW - 600)
    paid_session = bo.checkout_session(
        fx,
        "cs_test_c1",
        created=NOW - 600,
        payment_intent="pi_c1",
        invoice="in_c1",
        payment_link="plink_c1",
        customer="cus_c1",
    )
    setup_session = bo.checkout_session(
        fx, "cs_test_c2", status="expired", mode="setup", created=NOW - 600, setup_intent="seti_c1"
    )
    sub_session = bo.checkout_session(
        fx, "cs_test_c3", mode="subscription", created=NOW - 600, subscription="sub_c1"
    )
    failed_setup = bo.setup_intent(
        fx, "seti_c2", status="requires_payment_method", created=NOW - 600
    )
    setup = bo.setup_intent(fx, "seti_c1", status="canceled", created=NOW - 600)
    setup.update(customer="cus_c1", payment_method="pm_c1")
    warning = bo.early_fraud_warning(
        fx, "issfr_c1", charge="ch_c1", payment_intent="pi_c1", created=NOW - 600
    )
    review = bo.review(fx, "prv_c1", charge="ch_c1", payment_intent="pi_c1", created=NOW - 600)
    # a charge settled in another currency, and the automatic payout that carried it
    # (paid out is its own transaction, whose source names the payout)
    charge_txn = obj(
        "balance_transaction",
        "txn_c1",
        amount=1380,
        fee=70,
        net=1310,
        currency="eur",
        exchange_rate=0.92,
        source="ch_c1",
        available_on=NOW + 86400,
        description="order 1",
    )
    payout = obj(
        "payout",
        "po_c1",
        amount=1310,
        currency="eur",
        status="failed",
        arrival_date=NOW + 2 * 86400,
        automatic=True,
        balance_transaction="txn_c2",
        failure_balance_transaction="txn_c3",
        failure_code="account_closed",
        failure_message="The bank account has been closed.",
        reconciliation_status="completed",
    )
    payout_txn = obj(
        "balance_transaction",
        "txn_c2",
        amount=-1310,
        fee=0,
        net=-1310,
        currency="eur",
        source="po_c1",
        type="payout",
        reporting_category="payout",
        available_on=NOW + 86400,
        description="STRIPE PAYOUT",
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
        "tax_rates": [rate],
        "credit_notes": [note, voided],
        "checkout/sessions": [paid_session, setup_session, sub_session],
        "setup_intents": [setup, failed_setup],
        "radar/early_fraud_warnings": [warning],
        "reviews": [review],
        "payouts": [payout],
        "balance_transactions": [charge_txn, payout_txn],
    }


def _closed_review(fx: dict[str, Any]) -> dict[str, Any]:
    """A review closed as fraud: Stripe no longer lists it, a fetch by id finds it."""
    return bo.review(
        fx, "prv_c2", open_=False, charge="ch_c1", payment_intent="pi_c1", created=NOW - 600
    )


DELETIONS = {(r.object_type, r.deleted_marker) for r in CATALOG.resources if r.deleted_marker} - {
    ("subscription", "deleted_at")
}


def _corrupted(column: Any, value: Any) -> Any:
    """A different value of the column's type."""
    if isinstance(column.type, Boolean):
        return not value
    if isinstance(column.type, DateTime):
        return value.replace(year=value.year - 1)
    if isinstance(column.type, Integer | Float | Numeric):
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
    api.payout_transactions["po_c1"] = {"txn_c1", "txn_c2"}
    closed = _closed_review(stripe_fixtures)
    api.add("reviews", closed)  # not listed: known locally from its event
    apply_in_transaction(engine, [make_event("review.closed", closed, NOW - 300)])
    first = run_reconciliation(engine, api, RunConfig(backfill=False))
    # 13 payment and invoice objects (the PI owns ch_c1), a product, a price, 2 coupons, a
    # promotion code, 2 discounts; totals, invoice lines, a rate, 2 credit notes and 2 of
    # their lines, 3 checkout sessions, 2 setup intents, a warning, a review; a payout and
    # 2 balance transactions (each once, though also listed in the payout's list)
    assert first.counts["compare"]["found"]["missing_locally"] == MISSING_LOCALLY
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
                "credit_note": "credit_notes",
                "tax_rate": "tax_rates",
                "checkout.session": "checkout/sessions",
                "setup_intent": "setup_intents",
                "radar.early_fraud_warning": "radar/early_fraud_warnings",
                "review": "reviews",
                "payout": "payouts",
            }.get(kind)
            obj = objects[listing][0] if listing else {"id": "card_1", "object": "card"}
            ctx_event = make_event(event_type, obj, NOW)
            for write in route.handler(EventContext(queued(ctx_event), obj)):
                target = CATALOG.by_table[write.table]
                assert set(write.values) == set(target.policies), (event_type, write.table)
                for name, policy in target.policies.items():
                    if policy is Policy.FOLLOWS:
                        assert target.follows[name] in target.policies
    listed_lines = {  # as the per-parent listings hand them over (parent named)
        "line_item": objects["invoices"][0]["lines"]["data"][0],
        "credit_note_line_item": {
            **objects["credit_notes"][0]["lines"]["data"][0],
            "credit_note": "cn_c1",
        },
        "balance_transaction": objects["balance_transactions"][0],
    }
    for reader in resource.readers:
        obj = listed_lines[sorted(reader.objects)[0]]
        event = queued(make_event(reader.patterns[0], obj, NOW))
        writes = list(reader.handler(EventContext(event, obj)))
        assert [w.table for w in writes] == [resource.table_name]
        assert set(writes[0].values) == set(resource.policies)


def test_deletions_found_by_fetching_are_repaired(engine: Engine, stripe_fixtures: dict) -> None:
    """A deleted customer is listed no more but answers ``deleted: true`` by id; a
    deleted draft invoice answers 404 (its totals too, its lines listing as well): all
    these rows are marked deleted, nothing ticketed. So is the deleted customer's
    discount, which it no longer carries. A 404 for anything else is an object missing
    in Stripe."""
    objects = _full_objects(stripe_fixtures)
    draft = copy.deepcopy(objects["invoices"][0])
    draft_line = bo.line_basil(stripe_fixtures, "il_draft", "in_draft", amount=900)
    draft.update(
        id="in_draft",
        status="draft",
        payments=None,
        status_transitions={},
        lines=bo.listed([draft_line], "/v1/invoices/in_draft/lines"),
    )
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
        "invoice_totals": 1,
        "refund": 1,
        "discount": 1,
    }
    with engine.connect() as conn:
        totals = dict(
            conn.exec_driver_sql(
                "SELECT stripe_invoice_id, deleted_at IS NOT NULL FROM stripe_invoice_totals"
            ).all()
        )
        # the draft's lines: its lines listing answers 404 once the draft is gone
        lines = dict(
            conn.exec_driver_sql(
                "SELECT stripe_line_item_id, deleted_at IS NOT NULL FROM stripe_invoice_line_items"
            ).all()
        )
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
    assert totals == {"in_c1": False, "in_c2": False, "in_draft": True}
    assert lines == {"il_c1": False, "il_c2": False, "il_draft": True}
    assert discounts == {"di_c1": True, "di_c2": False}
    assert open_ones == [("refund", "re_c1", "missing_in_stripe")]
    again = run_reconciliation(engine, api, RunConfig(backfill=False))
    # deleted rows are expected to be missing from the listings: not fetched again (the
    # deleted customer's card, created in the window, is: its list answers 404)
    assert again.counts["compare"]["fetched"] == {"payment_method": 1, "refund": 1}


def _refund_and_dispute_gone_are_fetched(engine: Engine, api: MemoryApi) -> None:
    """Stripe loses a refund and a dispute: the next run fetches each by id (one
    resource's rows and another's) and reports both missing."""
    api.remove("re_c1")
    api.remove("dp_c1")
    result = run_reconciliation(engine, api, RunConfig(backfill=False))
    assert result.counts["compare"]["fetched"] == {"refund": 1, "dispute": 1}
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT object_type, object_id, kind FROM reconciliation_discrepancies "
            "WHERE status IN ('open', 'ticketed') ORDER BY object_id"
        ).all()
    assert found == [
        ("dispute", "dp_c1", "missing_in_stripe"),
        ("refund", "re_c1", "missing_in_stripe"),
    ]


def test_rows_no_listing_returned_are_fetched_for_every_resource_at_once(
    engine: Engine, stripe_fixtures: dict
) -> None:
    """Unseen rows of different resources are fetched in one round trip, not one
    resource after another (at a few hundred ms per call, a round per resource adds up
    over the catalog). The double's ``get`` waits until both fetches are in flight: it
    stands in for Stripe's latency, which no in-memory peer has."""
    import threading

    class Concurrent(MemoryApi):
        def __init__(self, data: dict) -> None:
            super().__init__(data)
            self.together: threading.Barrier | None = None

        def get(self, path: str) -> dict:
            if self.together is not None:
                self.together.wait()  # BrokenBarrierError when fetched one at a time
            return super().get(path)

    api = Concurrent(_full_objects(stripe_fixtures))
    run_reconciliation(engine, api, RunConfig(backfill=False))
    api.together = threading.Barrier(2, timeout=10)
    _refund_and_dispute_gone_are_fetched(engine, api)


def test_fetched_answers_held_are_bounded(
    engine: Engine, stripe_fixtures: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``MAX_PENDING_FETCHES`` answers waiting, they are compared before more are
    asked for (memory stays that of one resource's fetches); nothing is lost."""
    from stripe_pipeline.reconcile import compare

    monkeypatch.setattr(compare, "MAX_PENDING_FETCHES", 1)
    held: list[int] = []  # answers waiting at each drain
    drain = compare.UnseenFetches.drain

    def counting(self: compare.UnseenFetches, conn: object) -> None:
        held.append(len(self._pending))
        drain(self, conn)

    monkeypatch.setattr(compare.UnseenFetches, "drain", counting)
    api = MemoryApi(_full_objects(stripe_fixtures))
    run_reconciliation(engine, api, RunConfig(backfill=False))
    _refund_and_dispute_gone_are_fetched(engine, api)
    assert max(held) == 1


def test_joined_routes_run_every_part_and_keep_sql_only_when_all_have_one() -> None:
    from dataclasses import replace

    from stripe_pipeline.catalog import (
        checkout_sessions,
        invoice_totals,
        invoices,
        setup_intents,
        tax_rates,
    )
    from stripe_pipeline.catalog.model import Catalog, Route

    joined = Catalog((invoices.RESOURCE, invoice_totals.RESOURCE)).route_for("invoice.paid")
    assert joined.handler.__name__ == "apply_invoice_event+apply_invoice_totals"
    with pytest.raises(ValueError, match="joins no route"):
        Catalog((invoice_totals.RESOURCE,))
    other_objects = replace(
        invoice_totals.RESOURCE,
        routes=(Route(invoices.ROUTED, lambda ctx: [], frozenset({"charge"}), joins=True),),
    )
    with pytest.raises(ValueError, match="other objects"):
        Catalog((invoices.RESOURCE, other_objects))
    reader_named_like_an_event = replace(
        tax_rates.RESOURCE,
        readers=(Route(("tax_rate.created",), lambda ctx: [], frozenset({"tax_rate"})),),
    )
    with pytest.raises(ValueError, match="also an event type"):
        Catalog((reader_named_like_an_event,))

    # a part with a twin joined by a part with one keeps both twins; without, none
    def joiner(twin):
        (route,) = setup_intents.RESOURCE.routes
        moved = Route(("checkout.session.*",), route.handler, frozenset({"checkout.session"}),
                      twin, joins=True)  # fmt: skip
        return replace(setup_intents.RESOURCE, routes=(moved,), listings=(), fetch=())

    with_twin = Catalog((checkout_sessions.RESOURCE, joiner((setup_intents.TWIN,))))
    assert len(with_twin.route_for("checkout.session.completed").twin) == 2
    without = Catalog((checkout_sessions.RESOURCE, joiner(())))
    assert without.route_for("checkout.session.completed").twin == ()


def test_every_table_with_personal_columns_is_tied_to_its_customer() -> None:
    """Erasure and the guards find a person's rows through these maps: a personal column
    on a table they do not know would never be erased."""
    from stripe_pipeline.privacy.guard import BY_CUSTOMER, BY_PAYMENT, TABLES
    from stripe_pipeline.privacy.personal import PERSONAL_COLUMNS

    for table in PERSONAL_COLUMNS:
        assert table in BY_CUSTOMER or table in BY_PAYMENT, table
        assert table in TABLES, table
