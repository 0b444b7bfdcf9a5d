"""Seed data for the SQL models and checks: plain Core inserts into the domain tables.

Fixed-day rows (1-2 March 2026) give the hand-computed daily overview; rows relative
to ``now`` exercise the windows (evidence due in 72 h, trials ending in 3 days).
Expected values live in ``EXPECTED_*`` beside the data they come from.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert

from stripe_pipeline.db.models import metadata

T = metadata.tables
DAY1 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
DAY2 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def insert_rows(conn: Connection, table: str, rows: list[dict[str, Any]], **common: Any) -> None:
    """One INSERT per row: an executemany would silently drop keys the first row lacks."""
    for row in rows:
        conn.execute(insert(T[table]).values({**common, **row}))


def seed_all(engine: Engine, now: datetime | None = None) -> datetime:
    """Insert the full data set; returns the ``now`` the relative rows were built from."""
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        seed_payments(conn)
        seed_subscriptions(conn, now)
        seed_commerce(conn, now)
        seed_disputes(conn, now)
        seed_recovery(conn)
        seed_tickets(conn, now)
        seed_events(conn)
        seed_billing(conn)
        seed_checkout(conn)
        seed_radar(conn)
        seed_money(conn)
    return now


def seed_payments(conn: Connection) -> None:
    def pay(pi: str, status: str, amount: int, currency: str, **extra: Any) -> dict[str, Any]:
        row = {
            "payment_intent_id": pi,
            "status": status,
            "amount_minor": amount,
            "amount_received_minor": amount if status == "succeeded" else 0,
            "currency": currency,
            "stripe_created": epoch(DAY1),
            "failure_code": None,
        }
        row.update(extra)
        return row

    insert_rows(
        conn,
        "stripe_payments",
        [
            pay("pi_usd_1", "succeeded", 5000, "usd"),
            pay("pi_usd_2", "succeeded", 2500, "USD"),
            pay("pi_usd_3", "requires_payment_method", 1000, "usd", failure_code="card_declined"),
            pay("pi_usd_4", "processing", 700, "usd"),
            pay("pi_jpy_1", "succeeded", 12000, "jpy"),
            pay("pi_jpy_2", "failed", 3000, "jpy", failure_code="expired_card"),
        ],
    )
    insert_rows(
        conn,
        "stripe_refunds",
        [
            {
                "stripe_refund_id": "re_1",
                "payment_intent_id": "pi_usd_1",
                "amount_minor": 1500,
                "currency": "usd",
                "status": "succeeded",
                "stripe_created": epoch(DAY1 + timedelta(hours=2)),
            },
            {
                "stripe_refund_id": "re_failed",
                "payment_intent_id": "pi_usd_2",
                "amount_minor": 100,
                "currency": "usd",
                "status": "failed",
                "stripe_created": epoch(DAY1),
            },
        ],
    )


# day, currency -> the hand-computed row of payments_daily (disputes are seeded by
# seed_disputes: dp_lost is opened on DAY2 for 3000 usd, the others on other days)
EXPECTED_PAYMENTS_DAILY = {
    ("2026-03-01", "usd"): {
        "payments_count": 4,
        "succeeded_count": 2,
        "failed_count": 1,
        "success_ratio": 2 / 3,
        "failure_ratio": 1 / 3,
        "gross_minor": 7500,
        "refunds_count": 1,
        "refunded_minor": 1500,
        "disputes_count": 0,
        "disputed_minor": 0,
        "net_before_fees_minor": 6000,
        "gross": 75.0,
        "net_before_fees": 60.0,
    },
    ("2026-03-01", "jpy"): {
        "payments_count": 2,
        "succeeded_count": 1,
        "failed_count": 1,
        "success_ratio": 0.5,
        "failure_ratio": 0.5,
        "gross_minor": 12000,
        "refunds_count": 0,
        "refunded_minor": 0,
        "net_before_fees_minor": 12000,
        "gross": 12000.0,
        "net_before_fees": 12000.0,
    },
    ("2026-03-02", "usd"): {
        "payments_count": 0,
        "succeeded_count": 0,
        "failed_count": 0,
        "success_ratio": None,
        "gross_minor": 0,
        "disputes_count": 1,
        "disputed_minor": 3000,
        "net_before_fees_minor": -3000,
        "net_before_fees": -30.0,
    },
}


def _item(unit: int, interval: str, currency: str, qty: int = 1, count: int = 1) -> dict:
    return {
        "price_id": f"price_{interval}_{unit}",
        "product_id": "prod_1",
        "quantity": qty,
        "unit_amount_minor": unit,
        "currency": currency,
        "interval": interval,
        "interval_count": count,
    }


def seed_subscriptions(conn: Connection, now: datetime) -> None:
    def sub(sid: str, status: str, items: list[dict] | None, **extra: Any) -> dict[str, Any]:
        row: dict[str, Any] = {
            "stripe_subscription_id": sid,
            "customer_id": "cus_1",
            "status": status,
            "items": items,
            "currency": None,
            "stripe_created": epoch(now - timedelta(days=60)),
            "price_id": None,
            "unit_amount_minor": None,
            "billing_interval": None,
            "billing_interval_count": None,
            "quantity": None,
            "trial_end": None,
            "ended_at": None,
            "canceled_at": None,
        }
        row.update(extra)
        return row

    insert_rows(
        conn,
        "stripe_subscriptions",
        [
            sub("sub_month", "active", [_item(2000, "month", "usd", qty=2)]),
            sub("sub_year", "active", [_item(12000, "year", "usd")]),
            sub("sub_week", "past_due", [_item(1000, "week", "usd")]),
            sub("sub_quarter", "active", [_item(3000, "month", "usd", count=3)]),
            sub(
                "sub_jpy",
                "active",
                [_item(120000, "year", "jpy"), _item(500, "month", "jpy", qty=3)],
                stripe_created=epoch(now - timedelta(days=2)),
            ),
            sub(
                "sub_trial_soon",
                "trialing",
                [_item(5000, "month", "usd")],
                trial_end=now + timedelta(days=2),
                stripe_created=epoch(now - timedelta(days=5)),
            ),
            sub(
                "sub_trial_later",
                "trialing",
                [_item(5000, "month", "usd")],
                trial_end=now + timedelta(days=10),
            ),
            sub(
                "sub_canceled",
                "canceled",
                [_item(9900, "month", "usd")],
                ended_at=now - timedelta(days=5),
                canceled_at=now - timedelta(days=5),
            ),
            # an old-style row: no items list, one plan in the top-level columns
            sub(
                "sub_legacy",
                "active",
                None,
                currency="usd",
                price_id="price_legacy",
                unit_amount_minor=1500,
                billing_interval="month",
                billing_interval_count=1,
                quantity=1,
            ),
        ],
    )


# month 2x2000 + year 12000/12 + week 1000x52/12 (past_due) + 3-month 3000/3 + legacy 1500
EXPECTED_MRR_MINOR = {"usd": 4000 + 1000 + 1000 * 52 / 12 + 1000 + 1500, "jpy": 10000 + 1500}
EXPECTED_SUBSCRIPTIONS_USD = {
    "subscriptions_count": 8,
    "active_count": 4,
    "trialing_count": 2,
    "past_due_count": 1,
    "canceled_count": 1,
    "trials_ending_3d_count": 1,
    "new_30d_count": 1,
    "churned_30d_count": 1,
}


def seed_commerce(conn: Connection, now: datetime) -> None:
    """Products, prices, coupons and discounts over the subscriptions above (every item
    names prod_1; the legacy row names its price only, whose product is prod_legacy)."""
    insert_rows(
        conn,
        "stripe_products",
        [
            {"stripe_product_id": "prod_1", "name": "Pro", "active": True},
            {"stripe_product_id": "prod_legacy", "name": "Legacy", "active": False},
        ],
    )
    insert_rows(
        conn,
        "stripe_prices",
        [
            {
                "stripe_price_id": "price_month_2000",
                "product_id": "prod_1",
                "nickname": "Pro monthly",
                "currency": "usd",
                "unit_amount_minor": 2000,
                "recurring_interval": "month",
                "recurring_interval_count": 1,
            },
            {
                "stripe_price_id": "price_legacy",
                "product_id": "prod_legacy",
                "nickname": "Old plan",
                "currency": "usd",
                "unit_amount_minor": 1500,
                "recurring_interval": "month",
                "recurring_interval_count": 1,
            },
        ],
    )

    def coupon(cid: str, **extra: Any) -> dict[str, Any]:
        return {"stripe_coupon_id": cid, "name": cid.title(), "valid": True, **extra}

    insert_rows(
        conn,
        "stripe_coupons",
        [
            coupon("PCT20", percent_off=20.0, duration="forever", times_redeemed=5),
            coupon(
                "AMT500",
                amount_off_minor=500,
                currency="usd",
                duration="repeating",
                duration_in_months=3,
                times_redeemed=2,
            ),
            coupon("UNUSED", percent_off=10.0, duration="once", times_redeemed=0),
        ],
    )

    insert_rows(
        conn,
        "stripe_promotion_codes",
        [
            {
                "stripe_promotion_code_id": "promo_1",
                "code": "SPRING",
                "coupon_id": "PCT20",
                "active": True,
                "times_redeemed": 3,
            }
        ],
    )

    def discount(did: str, coupon_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "stripe_discount_id": did,
            "coupon_id": coupon_id,
            "customer_id": "cus_1",
            "start_at": now - timedelta(days=40),
            **extra,
        }

    insert_rows(
        conn,
        "stripe_discounts",
        [
            discount("di_1", "PCT20", subscription_id="sub_month", promotion_code_id="promo_1"),
            discount(
                "di_2", "PCT20", subscription_id="sub_canceled", deleted_at=now - timedelta(days=5)
            ),
            discount("di_3", "AMT500", subscription_id="sub_year"),
            # ended: it discounted sub_week once, no longer
            discount("di_4", "AMT500", subscription_id="sub_week", end_at=now - timedelta(days=1)),
            # customer-wide, for a customer without subscriptions: a redemption only
            discount("di_5", "PCT20", customer_id="cus_other"),
            discount("di_6", "PCT20", subscription_id="sub_jpy"),
        ],
    )


# (currency, product, price) -> figures; active and past_due subscriptions only
EXPECTED_MRR_BY_PRICE = {
    ("usd", "prod_1", "price_month_2000"): {
        "product_name": "Pro",
        "price_nickname": "Pro monthly",
        "active_subscriptions_count": 1,
        "quantity": 2,
        "mrr_minor": 4000,
        "mrr": 40.0,
    },
    ("usd", "prod_1", "price_year_12000"): {"quantity": 1, "mrr_minor": 1000, "mrr": 10.0},
    ("usd", "prod_1", "price_week_1000"): {"mrr_minor": 4333.33, "mrr": 43.33333},
    ("usd", "prod_1", "price_month_3000"): {"interval_count": 3, "mrr_minor": 1000},
    # the legacy row names no product: its price's
    ("usd", "prod_legacy", "price_legacy"): {
        "product_name": "Legacy",
        "price_nickname": "Old plan",
        "mrr_minor": 1500,
    },
    # zero-decimal: 10000 JPY a month is 10000, not 100.00
    ("jpy", "prod_1", "price_year_120000"): {"mrr_minor": 10000, "mrr": 10000},
    ("jpy", "prod_1", "price_month_500"): {"quantity": 3, "mrr_minor": 1500, "mrr": 1500},
}
# 8 usd subscriptions, 1 churned (sub_canceled); 1 jpy, none churned
EXPECTED_COUPON_USAGE = {
    ("PCT20", "usd"): {
        "redemptions_count": 4,
        "times_redeemed": 5,
        "discounted_subscriptions_count": 2,  # sub_month, sub_canceled
        "active_discounted_subscriptions_count": 1,
        "discounted_mrr_minor": 4000,
        "discount_mrr_minor": 800,  # 20% of 4000
        "churned_discounted_count": 1,
        "discounted_churn_rate": 0.5,
        "other_subscriptions_count": 6,
        "other_churned_count": 0,
        "other_churn_rate": 0,
    },
    ("PCT20", "jpy"): {
        "discounted_subscriptions_count": 1,
        "active_discounted_subscriptions_count": 1,
        "discounted_mrr_minor": 11500,
        "discounted_mrr": 11500,
        "discount_mrr_minor": 2300,
        "discounted_churn_rate": 0,
        "other_subscriptions_count": 0,
        "other_churn_rate": None,
    },
    ("AMT500", "usd"): {
        "redemptions_count": 2,
        "discounted_subscriptions_count": 2,  # sub_year, sub_week (ended)
        "active_discounted_subscriptions_count": 1,
        "discounted_mrr_minor": 1000,
        # 500 off a yearly bill of 12000: 500 x 1000 / 12000 a month
        "discount_mrr_minor": 41.67,
        "churned_discounted_count": 0,
        "other_subscriptions_count": 6,
        "other_churned_count": 1,
        "other_churn_rate": 0.1667,
    },
    ("AMT500", "jpy"): {"discounted_subscriptions_count": 0, "discounted_churn_rate": None},
    ("UNUSED", "usd"): {
        "redemptions_count": 0,
        "discounted_subscriptions_count": 0,
        "other_subscriptions_count": 8,
        "other_churn_rate": 0.125,
    },
}


def seed_disputes(conn: Connection, now: datetime) -> None:
    def dispute(did: str, status: str, amount: int, due: datetime | None, **extra: Any) -> dict:
        row = {
            "stripe_dispute_id": did,
            "payment_intent_id": "pi_usd_2",
            "amount_minor": amount,
            "currency": "usd",
            "status": status,
            "due_by": due,
            "stripe_created": epoch(now - timedelta(days=1)),
        }
        row.update(extra)
        return row

    insert_rows(
        conn,
        "stripe_disputes",
        [
            dispute("dp_due_soon", "needs_response", 2500, now + timedelta(hours=48)),
            dispute("dp_review", "under_review", 800, now + timedelta(days=5)),
            dispute("dp_won", "won", 1000, None),
            dispute("dp_lost", "lost", 3000, None, stripe_created=epoch(DAY2)),
            dispute(
                "dp_jpy_later",
                "warning_needs_response",
                4000,
                now + timedelta(hours=200),
                currency="jpy",
            ),
        ],
    )


EXPECTED_DISPUTES_USD = {
    "disputes_count": 4,
    "open_count": 2,
    "needs_response_count": 1,
    "evidence_due_72h_count": 1,
    "won_count": 1,
    "lost_count": 1,
    "win_rate": 0.5,
    "disputed_minor": 7300,
    "open_minor": 3300,
    "lost_minor": 3000,
}


def seed_recovery(conn: Connection) -> None:
    insert_rows(
        conn,
        "payment_recovery_attempts",
        [
            {
                "payment_intent_id": "pi_r1",
                "status": "recovered",
                "attempt_count": 2,
                "amount_minor": 1000,
                "currency": "usd",
                "recovery_strategy": "smart_retry",
            },
            {
                "payment_intent_id": "pi_r2",
                "status": "exhausted",
                "attempt_count": 4,
                "amount_minor": 500,
                "currency": "usd",
                "recovery_strategy": "smart_retry",
            },
            {
                "payment_intent_id": "pi_r3",
                "status": "open",
                "attempt_count": 1,
                "amount_minor": 700,
                "currency": "usd",
                "recovery_strategy": "card_update_email",
            },
        ],
        created_at=DAY1,
    )


def seed_tickets(conn: Connection, now: datetime) -> None:
    def ticket(key: str, issue: str, priority: str, age_hours: float, **extra: Any) -> dict:
        created = now - timedelta(hours=age_hours)
        row = {
            "issue_type": issue,
            "priority": priority,
            "dedupe_key": key,
            "title": key,
            "status": "open",
            "created_at": created,
            "updated_at": created,
        }
        row.update(extra)
        return row

    insert_rows(
        conn,
        "payment_support_tickets",
        [
            ticket("t1", "dead_letter", "high", 30),
            ticket("t2", "dead_letter", "high", 2),
            ticket(
                "t3",
                "payment_failed",
                "medium",
                50,
                status="resolved",
                resolved_at=now - timedelta(hours=40),
                resolution="manual",
            ),
        ],
    )


EVENT_LAGS_SECONDS = (1.0, 2.0, 3.0, 10.0)  # p50 2.5, p95 3 + 0.85 x 7 = 8.95


def seed_events(conn: Connection) -> None:
    rows = []
    for i, lag in enumerate(EVENT_LAGS_SECONDS):
        received = DAY1 + timedelta(minutes=i)
        rows.append(_event(f"evt_ok_{i}", received, "processed", received + timedelta(seconds=lag)))
    rows.append(_event("evt_dead", DAY1 + timedelta(minutes=9), "dead_letter", None, retry_count=3))
    rows.append(_event("evt_retry", DAY1 + timedelta(minutes=20), "retry", None, retry_count=1))
    insert_rows(conn, "stripe_events", rows)
    insert_rows(
        conn,
        "webhook_deliveries",
        [
            {"received_at": DAY1, "outcome": "stored", "status_code": 200},
            {"received_at": DAY1, "outcome": "stored", "status_code": 200},
            {
                "received_at": DAY1,
                "outcome": "bad_signature",
                "status_code": 400,
                "repeat_count": 3,
            },
        ],
    )


EXPECTED_HEALTH_DAY1_HOUR = {
    "events_received": 6,
    "events_processed": 4,
    "events_open": 1,
    "dead_letters": 1,
    "events_with_errors": 2,
    "retries": 4,
    "error_rate": 2 / 6,
    "lag_p50_seconds": 2.5,
    "lag_p95_seconds": 8.95,
    "deliveries": 5,
    "deliveries_rejected": 3,
}


def _event(
    event_id: str,
    received: datetime,
    status: str,
    processed: datetime | None,
    retry_count: int = 0,
    event_type: str = "payment_intent.succeeded",
) -> dict[str, Any]:
    return {
        "stripe_event_id": event_id,
        "event_type": event_type,
        "stripe_created": epoch(received),
        "received_at": received,
        "processed_at": processed,
        "status": status,
        "retry_count": retry_count,
        "payload": {"id": event_id, "type": event_type},
    }


# --- billing: invoices paid on DAY3, credit notes and refunds on DAY4 (revenue_daily,
# tax_collected); the revenue of DAY1 comes from seed_payments' one-off payments ---

DAY3 = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
DAY4 = datetime(2026, 3, 4, 8, 0, tzinfo=UTC)
CA, DE = "txr_ca_sales", "txr_de_vat"


def _tax(rate: str, amount: int, taxable: int, inclusive: bool, **place: Any) -> dict:
    return {
        "tax_rate_id": rate,
        "amount_minor": amount,
        "inclusive": inclusive,
        "taxable_amount_minor": taxable,
        "taxability_reason": "standard_rated",
        "country": place.get("country"),
        "state": None,
        "jurisdiction": place.get("jurisdiction"),
    }


def seed_billing(conn: Connection) -> None:
    insert_rows(
        conn,
        "stripe_tax_rates",
        [
            {"stripe_tax_rate_id": CA, "display_name": "Sales Tax", "percentage": 7.25,
             "inclusive": False, "active": True, "country": "US", "state": "CA",
             "jurisdiction": "US - CA", "jurisdiction_level": "state", "tax_type": "sales_tax"},
            {"stripe_tax_rate_id": DE, "display_name": "VAT", "percentage": 19.0,
             "inclusive": True, "active": True, "country": "DE", "jurisdiction": "DE",
             "jurisdiction_level": "country", "tax_type": "vat"},
        ],
    )  # fmt: skip

    def invoice(iid: str, status: str, currency: str, paid: datetime | None, **extra: Any):
        row = {
            "stripe_invoice_id": iid,
            "status": status,
            "currency": currency,
            "paid_at": paid,
            "stripe_created": epoch(DAY3 - timedelta(days=1)),
        }
        row.update(extra)
        return row  # fmt: skip

    insert_rows(
        conn,
        "stripe_invoices",
        [
            invoice("in_rev_1", "paid", "usd", DAY3, payment_intent_id="pi_inv_1"),
            invoice("in_rev_2", "paid", "eur", DAY3),
            invoice("in_rev_3", "paid", "usd", DAY3 + timedelta(hours=3)),
            invoice("in_rev_open", "open", "usd", None),
            invoice("in_rev_void", "void", "usd", None),
            invoice("in_rev_draft", "draft", "usd", None),
        ],
    )

    def totals(iid: str, currency: str, sub: int, disc: int, taxes: list[dict], **extra: Any):
        exclusive = sum(t["amount_minor"] for t in taxes if not t["inclusive"])
        row = {
            "stripe_invoice_id": iid,
            "currency": currency,
            "subtotal_minor": sub,
            "discount_minor": disc,
            "tax_minor": sum(t["amount_minor"] for t in taxes),
            "total_minor": sub - disc + exclusive,
            "taxes": taxes,
            "stripe_created": epoch(DAY3 - timedelta(days=1)),
        }
        row.update(extra)
        return row  # fmt: skip

    insert_rows(
        conn,
        "stripe_invoice_totals",
        [
            # 100.00 - 10.00 off, 7.25 % on 90.00 = 6.53: total 96.53
            totals("in_rev_1", "usd", 10000, 1000, [_tax(CA, 653, 9000, False)]),
            # 50.00 with 19 % VAT included (7.98 of it); the payload expanded the rate
            totals("in_rev_2", "eur", 5000, 0,
                   [_tax(DE, 798, 4202, True, country="DE", jurisdiction="DE")]),
            totals("in_rev_3", "usd", 4000, 0, [_tax(CA, 290, 4000, False)]),
            totals("in_rev_open", "usd", 2000, 0, [_tax(CA, 145, 2000, False)]),
            totals("in_rev_void", "usd", 3000, 0, []),
            totals("in_rev_draft", "usd", 800, 0, [], deleted_at=DAY3),
        ],
    )  # fmt: skip
    insert_rows(
        conn,
        "stripe_invoice_line_items",
        [
            {"stripe_line_item_id": "il_rev_1", "invoice_id": "in_rev_1", "type": "subscription",
             "subscription_id": "sub_month", "price_id": "price_month_2000", "product_id": "prod_1",
             "currency": "usd", "amount_minor": 10000, "quantity": 5, "discount_minor": 1000,
             "tax_minor": 653, "taxes": [_tax(CA, 653, 9000, False)], "proration": False,
             "period_start": DAY3 - timedelta(days=30), "period_end": DAY3},
            {"stripe_line_item_id": "il_rev_gone", "invoice_id": "in_rev_draft",
             "currency": "usd", "amount_minor": 800, "deleted_at": DAY3},
        ],
    )  # fmt: skip
    insert_rows(
        conn,
        "stripe_payments",
        [
            # paid in_rev_1 (a 2025+ PaymentIntent does not name its invoice)
            {"payment_intent_id": "pi_inv_1", "status": "succeeded", "amount_minor": 9653,
             "amount_received_minor": 9653, "currency": "usd", "stripe_created": epoch(DAY3)},
            # a payment-mode checkout: no invoice
            {"payment_intent_id": "pi_one_1", "status": "succeeded", "amount_minor": 4900,
             "amount_received_minor": 4900, "currency": "usd", "stripe_created": epoch(DAY3)},
            {"payment_intent_id": "pi_one_2", "status": "requires_payment_method",
             "failure_code": "card_declined", "amount_minor": 4900, "amount_received_minor": 0,
             "currency": "usd", "stripe_created": epoch(DAY3)},
        ],
    )  # fmt: skip
    insert_rows(
        conn,
        "stripe_credit_notes",
        [
            # 10.00 of in_rev_1 back with its 0.73 tax, refunded through the note
            {"stripe_credit_note_id": "cn_rev_1", "invoice_id": "in_rev_1", "status": "issued",
             "type": "post_payment", "currency": "usd", "amount_minor": 1073,
             "subtotal_minor": 1000, "total_minor": 1073, "tax_minor": 73,
             "taxes": [_tax(CA, 73, 1000, False)], "refund_ids": ["re_cn_1"],
             "stripe_created": epoch(DAY4)},
            {"stripe_credit_note_id": "cn_rev_void", "invoice_id": "in_rev_3", "status": "void",
             "type": "pre_payment", "currency": "usd", "amount_minor": 500,
             "subtotal_minor": 500, "total_minor": 500, "tax_minor": 0, "taxes": [],
             "refund_ids": [], "voided_at": DAY4, "stripe_created": epoch(DAY4)},
        ],
    )  # fmt: skip
    insert_rows(
        conn,
        "stripe_credit_note_line_items",
        [
            {"stripe_credit_note_line_item_id": "cnli_rev_1", "credit_note_id": "cn_rev_1",
             "invoice_line_item_id": "il_rev_1", "type": "invoice_line_item",
             "amount_minor": 1000, "quantity": 1, "tax_minor": 73},
        ],
    )  # fmt: skip
    insert_rows(
        conn,
        "stripe_refunds",
        [
            {"stripe_refund_id": "re_cn_1", "payment_intent_id": "pi_inv_1", "amount_minor": 1073,
             "currency": "usd", "status": "succeeded", "stripe_created": epoch(DAY4)},
            {"stripe_refund_id": "re_rev_2", "payment_intent_id": "pi_one_1", "amount_minor": 2000,
             "currency": "usd", "status": "succeeded", "stripe_created": epoch(DAY4)},
        ],
    )  # fmt: skip


# day, currency -> the hand-computed row of revenue_daily
EXPECTED_REVENUE_DAILY = {
    # seed_payments: pi_usd_1 50.00 + pi_usd_2 25.00 one-off, re_1 15.00 refunded
    ("2026-03-01", "usd"): {
        "invoices_paid_count": 0,
        "one_off_count": 2,
        "one_off_minor": 7500,
        "gross_minor": 7500,
        "refunds_count": 1,
        "refunds_minor": 1500,
        "net_minor": 6000,
        "net": 60.0,
    },
    ("2026-03-01", "jpy"): {"gross_minor": 12000, "net_minor": 12000, "net": 12000.0},
    # in_rev_1 96.53 + 10.00 discount, in_rev_3 42.90, pi_one_1 49.00 (pi_inv_1 paid
    # in_rev_1: not one-off)
    ("2026-03-03", "usd"): {
        "invoices_paid_count": 2,
        "invoiced_minor": 9653 + 1000 + 4290,
        "one_off_count": 1,
        "one_off_minor": 4900,
        "gross_minor": 19843,
        "discounts_minor": 1000,
        "credit_notes_minor": 0,
        "refunds_minor": 0,
        "net_minor": 18843,
        "gross": 198.43,
        "net": 188.43,
    },
    ("2026-03-03", "eur"): {"invoices_paid_count": 1, "gross_minor": 5000, "net_minor": 5000},
    # cn_rev_1 10.73 (its refund re_cn_1 not again), re_rev_2 20.00; the void note nothing
    ("2026-03-04", "usd"): {
        "gross_minor": 0,
        "credit_notes_count": 1,
        "credit_notes_minor": 1073,
        "refunds_count": 1,
        "refunds_minor": 2000,
        "net_minor": -3073,
        "net": -30.73,
    },
}

# (month, currency, tax rate) -> the hand-computed row of tax_collected
EXPECTED_TAX = {
    ("2026-03-01", "usd", CA): {
        "display_name": "Sales Tax",
        "percentage": 7.25,
        "is_inclusive": 0,
        "country": "US",
        "state": "CA",
        "jurisdiction": "US - CA",
        "invoices_count": 2,
        "taxable_minor": 9000 + 4000,
        "tax_minor": 653 + 290,
        "credit_notes_count": 1,
        "credited_tax_minor": 73,
        "net_tax_minor": 870,
        "net_tax": 8.70,
    },
    ("2026-03-01", "eur", DE): {
        "display_name": "VAT",
        "percentage": 19.0,
        "is_inclusive": 1,
        "country": "DE",
        "state": None,
        "jurisdiction": "DE",
        "invoices_count": 1,
        "taxable_minor": 4202,
        "tax_minor": 798,
        "credited_tax_minor": 0,
        "net_tax_minor": 798,
        "net_tax": 7.98,
    },
}


def seed_checkout(conn: Connection) -> None:
    def session(sid: str, status: str, created: datetime, mode: str = "payment", **extra: Any):
        row = {
            "stripe_checkout_session_id": sid,
            "status": status,
            "mode": mode,
            "currency": "usd",
            "amount_total_minor": 4900,
            "stripe_created": epoch(created),
            "expires_at": created + timedelta(hours=24),
            # personal data: kept in the table, never carried into the models
            "customer_email": f"{sid}@example.com",
        }
        row.update(extra)
        return row  # fmt: skip

    insert_rows(
        conn,
        "stripe_checkout_sessions",
        [
            session("cs_1", "complete", DAY1, completed_at=DAY1 + timedelta(minutes=5)),
            session("cs_2", "complete", DAY1, completed_at=DAY2 - timedelta(hours=1)),
            session("cs_3", "expired", DAY1),  # expired at its expires_at, on DAY2
            session("cs_4", "open", DAY1),
            # its completion event was lost: reconciliation restored it, no completed_at
            session("cs_5", "complete", DAY2),
            session("cs_6", "expired", DAY2, expired_at=DAY2 + timedelta(hours=3)),
            session("cs_7", "complete", DAY1, mode="subscription",
                    completed_at=DAY1 + timedelta(minutes=9)),
        ],
    )  # fmt: skip


EXPECTED_CHECKOUT = {
    ("2026-03-01", "payment"): {
        "opened_count": 4,
        "completed_count": 1,
        "expired_count": 0,
        "converted_count": 2,
        "still_open_count": 1,
        "conversion_rate": 0.5,
    },
    ("2026-03-02", "payment"): {
        "opened_count": 2,
        "completed_count": 2,  # cs_2 (completed_at), cs_5 (its creation day)
        "expired_count": 2,  # cs_3 (expires_at), cs_6 (expired_at)
        "converted_count": 1,
        "still_open_count": 0,
        "conversion_rate": 0.5,
    },
    ("2026-03-01", "subscription"): {
        "opened_count": 1,
        "completed_count": 1,
        "converted_count": 1,
        "conversion_rate": 1.0,
    },
}


def seed_radar(conn: Connection) -> None:
    insert_rows(
        conn,
        "stripe_setup_intents",
        [
            {"stripe_setup_intent_id": "seti_1", "status": "succeeded", "customer_id": "cus_1",
             "payment_method_id": "pm_1", "usage": "off_session", "stripe_created": epoch(DAY1)},
            {"stripe_setup_intent_id": "seti_2", "status": "requires_payment_method",
             "customer_id": "cus_1", "last_error_code": "card_declined",
             "last_error_decline_code": "insufficient_funds", "stripe_created": epoch(DAY1)},
        ],
    )  # fmt: skip
    insert_rows(
        conn,
        "stripe_early_fraud_warnings",
        [{"stripe_early_fraud_warning_id": "issfr_1", "charge_id": "ch_1",
          "fraud_type": "made_with_stolen_card", "actionable": True,
          "stripe_created": epoch(DAY2)}],
    )  # fmt: skip
    insert_rows(
        conn,
        "stripe_reviews",
        [{"stripe_review_id": "prv_1", "charge_id": "ch_1", "open": False, "reason": "rule",
          "opened_reason": "rule", "closed_reason": "refunded_as_fraud",
          "closed_at": DAY2, "stripe_created": epoch(DAY1)}],
    )  # fmt: skip


def _txn(
    txn: str, kind: str, category: str, amount: int, fee: int, currency: str, **extra: Any
) -> dict[str, Any]:
    row = {
        "stripe_balance_transaction_id": txn,
        "type": kind,
        "reporting_category": category,
        "amount_minor": amount,
        "fee_minor": fee,
        "net_minor": amount - fee,
        "currency": currency,
        "status": "available",
        "stripe_created": epoch(DAY1),
    }
    row.update(extra)
    return row


def seed_money(conn: Connection) -> None:
    """A USD account that also settles EUR and JPY: two USD charges, a partial refund
    and an adjustment on DAY1, paid out on DAY2 with a lost dispute; a USD charge
    settled in EUR (rate 0.92) and a JPY charge, each paid out alone; a payout Stripe
    has not reconciled yet."""
    day2 = {"stripe_created": epoch(DAY2)}
    insert_rows(
        conn,
        "stripe_balance_transactions",
        [
            _txn("txn_ch1", "charge", "charge", 5000, 175, "usd", source_id="ch_usd_1"),
            _txn("txn_ch2", "charge", "charge", 2500, 103, "usd", source_id="ch_usd_2"),
            _txn("txn_re1", "refund", "refund", -1500, 0, "usd", source_id="re_1"),
            _txn("txn_adj", "adjustment", "adjustment", -200, 0, "usd"),
            _txn("txn_dp", "adjustment", "dispute", -3000, 1500, "usd", **day2),
            _txn("txn_po_usd", "payout", "payout", -5522, 0, "usd", **day2),
            _txn(
                "txn_eur",
                "charge",
                "charge",
                920,
                57,
                "eur",
                exchange_rate="0.92",
                source_id="ch_e",
            ),
            _txn("txn_po_eur", "payout", "payout", -863, 0, "eur", **day2),
            _txn("txn_jpy", "charge", "charge", 12000, 432, "jpy", source_id="ch_jpy_1"),
            _txn("txn_po_jpy", "payout", "payout", -11568, 0, "jpy", **day2),
        ],
    )
    carried = {
        "po_usd": ("txn_ch1", "txn_ch2", "txn_re1", "txn_adj", "txn_po_usd"),
        "po_eur": ("txn_eur", "txn_po_eur"),
        "po_jpy": ("txn_jpy", "txn_po_jpy"),
    }
    t = T["stripe_balance_transactions"]
    for payout, txns in carried.items():
        conn.execute(
            t.update().where(t.c.stripe_balance_transaction_id.in_(txns)).values(payout_id=payout)
        )

    def payout(po: str, amount: int, currency: str, **extra: Any) -> dict[str, Any]:
        row = {
            "stripe_payout_id": po,
            "amount_minor": amount,
            "currency": currency,
            "status": "paid",
            "automatic": True,
            "reconciliation_status": "completed",
            "arrival_date": DAY2 + timedelta(days=2),
            "stripe_created": epoch(DAY2),
        }
        row.update(extra)
        return row

    insert_rows(
        conn,
        "stripe_payouts",
        [
            payout("po_usd", 5522, "usd"),
            payout("po_eur", 863, "eur"),
            payout("po_jpy", 11568, "jpy"),
            payout("po_next", 2500, "usd", status="pending", reconciliation_status="in_progress"),
        ],
    )


# hand-computed from seed_money: fees 2.9% + 30 (175, 103), 57 on the EUR settlement of
# a 10.00 USD charge at 0.92 (920), 432 on 12000 JPY; the dispute fee 15.00
EXPECTED_BALANCE_DAILY = {
    ("2026-03-01", "usd"): {
        "transactions_count": 4,
        "amount_minor": 5000 + 2500 - 1500 - 200,
        "fee_minor": 278,
        "net_minor": 5522,
        "net": 55.22,
    },
    ("2026-03-01", "eur"): {"transactions_count": 1, "fee_minor": 57, "net_minor": 863},
    ("2026-03-01", "jpy"): {"amount_minor": 12000, "fee_minor": 432, "net": 11568},
    ("2026-03-02", "usd"): {
        "transactions_count": 1,
        "amount_minor": -3000,
        "fee_minor": 1500,
        "net_minor": -4500,
        "fee": 15.0,
    },
}
EXPECTED_BALANCE_CHANGE = {
    ("2026-03-01", "usd", "charge"): {
        "transactions_count": 2,
        "gross_minor": 7500,
        "fee_minor": 278,
    },
    ("2026-03-01", "usd", "refund"): {"gross_minor": -1500, "net_minor": -1500},
    ("2026-03-01", "usd", "adjustment"): {"net_minor": -200, "net": -2.0},
    ("2026-03-02", "usd", "dispute"): {"gross_minor": -3000, "fee_minor": 1500, "net_minor": -4500},
    ("2026-03-02", "usd", "payout"): {"net_minor": -5522},
    ("2026-03-02", "jpy", "payout"): {"net_minor": -11568, "net": -11568.0},
}
EXPECTED_PAYOUTS = {
    "po_usd": {
        "payout_amount_minor": 5522,
        "transactions_count": 4,
        "gross_minor": 5800,
        "fee_minor": 278,
        "transactions_net_minor": 5522,
        "difference_minor": 0,
        "is_balanced": 1,
        "payout_amount": 55.22,
    },
    "po_eur": {"transactions_net_minor": 863, "difference_minor": 0, "payout_amount": 8.63},
    "po_jpy": {"transactions_net_minor": 11568, "difference_minor": 0, "payout_amount": 11568.0},
    "po_next": {"transactions_count": 0, "difference_minor": 2500, "is_balanced": 0},
}
EXPECTED_PAYOUT_CATEGORIES = {
    ("po_usd", "charge"): {"transactions_count": 2, "gross_minor": 7500, "net_minor": 7222},
    ("po_usd", "refund"): {"net_minor": -1500},
    ("po_usd", "adjustment"): {"net_minor": -200},
    ("po_eur", "charge"): {"gross_minor": 920, "fee_minor": 57, "net": 8.63},
    ("po_jpy", "charge"): {"fee_minor": 432, "net_minor": 11568, "net": 11568.0},
}
