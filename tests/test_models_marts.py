"""Marts match hand-computed expectations on both backends (tests/support/model_seed.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy import Engine

from stripe_pipeline.model import load_project, run_project
from tests.support import model_seed as seed
from tests.support.model_rows import fetch_rows

PROJECT = load_project()


@pytest.fixture
def built(engine: Engine) -> Engine:
    seed.seed_all(engine)
    run_project(engine, PROJECT)
    return engine


def assert_matches(row: dict[str, Any], expected: dict[str, Any], label: str) -> None:
    for key, want in expected.items():
        got = row[key]
        if want is None or isinstance(want, str):
            assert got == want, f"{label}.{key}: {got!r} != {want!r}"
        else:
            assert got is not None and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-3), (
                f"{label}.{key}: {got!r} != {want!r}"
            )


def test_payments_daily(built: Engine) -> None:
    rows = {(r["day"], r["currency"]): r for r in fetch_rows(built, "payments_daily")}
    for key, expected in seed.EXPECTED_PAYMENTS_DAILY.items():
        assert key in rows, f"missing payments_daily row {key}"
        assert_matches(rows[key], expected, f"payments_daily{key}")
    # a zero-decimal currency keeps its amount: 12000 JPY is 12000, not 120.00
    assert rows[("2026-03-01", "jpy")]["gross"] == 12000


def test_subscription_mrr_and_counts(built: Engine) -> None:
    rows = {r["currency"]: r for r in fetch_rows(built, "subscriptions_summary")}
    assert set(rows) == {"usd", "jpy"}
    for currency, mrr_minor in seed.EXPECTED_MRR_MINOR.items():
        assert math.isclose(rows[currency]["mrr_minor"], round(mrr_minor, 2), abs_tol=0.005)
    assert math.isclose(rows["usd"]["mrr"], seed.EXPECTED_MRR_MINOR["usd"] / 100, abs_tol=1e-4)
    assert rows["jpy"]["mrr"] == 11500
    assert_matches(rows["usd"], seed.EXPECTED_SUBSCRIPTIONS_USD, "subscriptions_summary.usd")
    assert rows["jpy"]["new_30d_count"] == 1


def test_subscription_items_normalise_each_interval(built: Engine) -> None:
    items = {
        (r["subscription_id"], r["billing_interval"]): r
        for r in fetch_rows(built, "stg_stripe__subscription_items")
    }
    expected = {
        ("sub_month", "month"): 4000,
        ("sub_year", "year"): 1000,
        ("sub_week", "week"): 1000 * 52 / 12,
        ("sub_quarter", "month"): 1000,
        ("sub_jpy", "year"): 10000,
        ("sub_legacy", "month"): 1500,
    }
    for key, mrr in expected.items():
        assert math.isclose(items[key]["mrr_minor"], mrr, rel_tol=1e-9), key


def test_mrr_by_product_and_price(built: Engine) -> None:
    rows = {
        (r["currency"], r["product_id"], r["price_id"]): r
        for r in fetch_rows(built, "mrr_by_product_price")
    }
    # trialing and canceled subscriptions bring no MRR: their prices have no row
    assert set(rows) == set(seed.EXPECTED_MRR_BY_PRICE)
    for key, expected in seed.EXPECTED_MRR_BY_PRICE.items():
        assert_matches(rows[key], expected, f"mrr_by_product_price{key}")
    # the mart adds up to the subscriptions summary, per currency
    for currency, mrr_minor in seed.EXPECTED_MRR_MINOR.items():
        total = sum(r["mrr_minor"] for k, r in rows.items() if k[0] == currency)
        assert math.isclose(total, mrr_minor, abs_tol=0.02), currency


def test_coupon_usage_and_churn_of_discounted_subscriptions(built: Engine) -> None:
    rows = {(r["coupon_id"], r["currency"]): r for r in fetch_rows(built, "coupon_usage")}
    assert len(rows) == 6  # 3 coupons x 2 currencies
    for key, expected in seed.EXPECTED_COUPON_USAGE.items():
        assert_matches(rows[key], expected, f"coupon_usage{key}")


def test_subscriptions_daily_new_and_churned(built: Engine) -> None:
    rows = fetch_rows(built, "subscriptions_daily")
    assert sum(r["new_count"] for r in rows) == 9
    assert sum(r["churned_count"] for r in rows) == 1


def test_disputes_summary(built: Engine) -> None:
    rows = {r["currency"]: r for r in fetch_rows(built, "disputes_summary")}
    assert_matches(rows["usd"], seed.EXPECTED_DISPUTES_USD, "disputes_summary.usd")
    assert rows["usd"]["lost"] == 30
    # JPY evidence is due in 200 h: open, needs a response, not within 72 h
    assert rows["jpy"]["needs_response_count"] == 1
    assert rows["jpy"]["evidence_due_72h_count"] == 0


def test_recovery_by_strategy(built: Engine) -> None:
    rows = {r["recovery_strategy"]: r for r in fetch_rows(built, "recovery_by_strategy")}
    assert_matches(
        rows["smart_retry"],
        {
            "cases_count": 2,
            "attempts_count": 6,
            "recovered_count": 1,
            "lost_count": 1,
            "recovery_rate": 0.5,
            "recovered_minor": 1000,
            "recovered": 10.0,
        },
        "recovery.smart_retry",
    )
    assert rows["card_update_email"]["open_count"] == 1
    assert rows["card_update_email"]["recovery_rate"] is None


def test_support_tickets_summary(built: Engine) -> None:
    rows = {
        (r["issue_type"], r["priority"]): r for r in fetch_rows(built, "support_tickets_summary")
    }
    dead = rows[("dead_letter", "high")]
    assert dead["open_count"] == 2 and dead["opened_24h_count"] == 1
    assert math.isclose(dead["oldest_open_age_hours"], 30, abs_tol=0.05)
    resolved = rows[("payment_failed", "medium")]
    assert resolved["open_count"] == 0
    assert math.isclose(resolved["avg_hours_to_resolve"], 10, abs_tol=0.01)


def test_webhook_health_percentiles_and_errors(built: Engine) -> None:
    rows = {r["hour"]: r for r in fetch_rows(built, "webhook_health_hourly")}
    assert_matches(rows["2026-03-01 10:00:00"], seed.EXPECTED_HEALTH_DAY1_HOUR, "health")


def test_revenue_daily_net_of_discounts_credit_notes_and_refunds(built: Engine) -> None:
    rows = {(r["day"], r["currency"]): r for r in fetch_rows(built, "revenue_daily")}
    for key, expected in seed.EXPECTED_REVENUE_DAILY.items():
        assert key in rows, f"missing revenue_daily row {key}"
        assert_matches(rows[key], expected, f"revenue_daily{key}")
    # the open, void and deleted invoices bring nothing; a refund made through a credit
    # note counts once (as the credit note); nothing on DAY2 (only a dispute)
    assert ("2026-03-02", "usd") not in rows
    assert sum(r["invoices_paid_count"] for r in rows.values()) == 3


def test_tax_collected_by_rate_and_jurisdiction(built: Engine) -> None:
    rows = {
        (r["month"], r["currency"], r["tax_rate_id"]): r for r in fetch_rows(built, "tax_collected")
    }
    assert set(rows) == set(seed.EXPECTED_TAX)  # the open invoice's tax is not collected
    for key, expected in seed.EXPECTED_TAX.items():
        assert_matches(rows[key], expected, f"tax_collected{key}")


def test_checkout_sessions_opened_completed_expired_and_conversion(built: Engine) -> None:
    rows = {(r["day"], r["mode"]): r for r in fetch_rows(built, "checkout_sessions_daily")}
    assert set(rows) == set(seed.EXPECTED_CHECKOUT)
    for key, expected in seed.EXPECTED_CHECKOUT.items():
        assert_matches(rows[key], expected, f"checkout_sessions_daily{key}")
    staged = fetch_rows(built, "stg_stripe__checkout_sessions")
    assert not any("email" in column for column in staged[0]), "personal data left the table"


def test_invoice_lines_staging_leaves_removed_lines_out(built: Engine) -> None:
    lines = {r["line_item_id"]: r for r in fetch_rows(built, "stg_stripe__invoice_line_items")}
    assert set(lines) == {"il_rev_1"}
    assert (lines["il_rev_1"]["discount_minor"], lines["il_rev_1"]["is_proration"]) == (1000, 0)


def test_readme_documents_every_column_of_the_billing_marts() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Billing, tax and checkout marts") :]
    section = section[: section.index("\n## ", 1)]
    for name in ("revenue_daily", "tax_collected", "checkout_sessions_daily"):
        table = section[section.index(f"`{name}`:") :]
        table = table[: table.index("\n\n", table.index("|---|"))]
        documented = {c for c in PROJECT.models[name].columns if f"`{c}`" in table}
        assert documented == set(PROJECT.models[name].columns), name


def test_balance_daily_fees_and_net(built: Engine) -> None:
    rows = {(r["day"], r["currency"]): r for r in fetch_rows(built, "balance_daily")}
    assert set(rows) == set(seed.EXPECTED_BALANCE_DAILY)
    for key, expected in seed.EXPECTED_BALANCE_DAILY.items():
        assert_matches(rows[key], expected, f"balance_daily{key}")


def test_balance_change_from_activity_by_category(built: Engine) -> None:
    rows = {
        (r["day"], r["currency"], r["reporting_category"]): r
        for r in fetch_rows(built, "balance_change_from_activity")
    }
    for key, expected in seed.EXPECTED_BALANCE_CHANGE.items():
        assert key in rows, f"missing balance_change_from_activity row {key}"
        assert_matches(rows[key], expected, f"balance_change_from_activity{key}")
    # every transaction counted once: the categories of a day and currency add up
    usd_day1 = [r for k, r in rows.items() if k[:2] == ("2026-03-01", "usd")]
    assert sum(r["net_minor"] for r in usd_day1) == 5522


def test_payout_reconciliation_balances_to_the_cent(built: Engine) -> None:
    rows = {r["payout_id"]: r for r in fetch_rows(built, "payout_reconciliation")}
    assert set(rows) == set(seed.EXPECTED_PAYOUTS)
    for key, expected in seed.EXPECTED_PAYOUTS.items():
        assert_matches(rows[key], expected, f"payout_reconciliation.{key}")
    categories = {
        (r["payout_id"], r["reporting_category"]): r
        for r in fetch_rows(built, "payout_reconciliation_by_category")
    }
    assert set(categories) == set(seed.EXPECTED_PAYOUT_CATEGORIES)
    for key, expected in seed.EXPECTED_PAYOUT_CATEGORIES.items():
        assert_matches(categories[key], expected, f"payout_reconciliation_by_category{key}")
