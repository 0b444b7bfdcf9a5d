"""Fraud rules over stored events: hits, tickets, customer flags, idempotent rescans."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, text

from stripe_pipeline.db.models import StripeEvent, StripePayment, StripeSubscription
from stripe_pipeline.reconcile.run import RunConfig, run_reconciliation
from stripe_pipeline.recover import fraud
from stripe_pipeline.recover.retry import run_due_retries
from tests.support import billing_objects as bo
from tests.support.events import apply_in_transaction, make_event
from tests.support.reconciliation_traffic import MemoryApi
from tests.support.recovery_peers import RecordingApi

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
T = int(NOW.timestamp())


def _event(n: str, kind: str, created: int, obj: dict) -> dict:
    payload = {"id": n, "type": kind, "created": created, "data": {"object": obj}}
    return {
        "stripe_event_id": n,
        "event_type": kind,
        "stripe_created": created,
        "object_id": obj.get("id"),
        "payload": payload,
    }


def _store(engine, events: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(StripeEvent.__table__), events)


def _rows(engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(text(sql)).all()


def _hits(engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(text("SELECT rule, customer_id FROM fraud_rule_hits")).all()


def test_card_testing_and_many_cards_flag_the_customer(engine) -> None:
    attached = [
        _event(
            f"evt_pm{i}",
            "payment_method.attached",
            T - 300 + i * 30,
            {"id": f"pm_{i}", "customer": "cus_tester", "card": {"fingerprint": f"fp{i}"}},
        )
        for i in range(6)
    ]
    # a normal customer: two cards a week apart
    attached += [
        _event(
            f"evt_ok{i}",
            "payment_method.attached",
            T - i * 3600,
            {"id": f"pm_ok{i}", "customer": "cus_ok", "card": {"fingerprint": f"ok{i}"}},
        )
        for i in range(2)
    ]
    _store(engine, attached)
    result = fraud.scan(engine, now=NOW)
    assert {h.rule.name for h in result.hits} == {"card_testing_attachments", "many_distinct_cards"}
    assert {c for _, c in _hits(engine)} == {"cus_tester"}
    with engine.connect() as conn:
        customer = conn.execute(
            text(
                "SELECT fraud_flagged_at, fraud_reason FROM stripe_customers "
                "WHERE stripe_customer_id = 'cus_tester'"
            )
        ).one()
        tickets = conn.execute(
            text("SELECT priority, issue_type FROM payment_support_tickets")
        ).all()
    assert customer[0] is not None and customer[1] in {
        "card_testing_attachments",
        "many_distinct_cards",
    }
    assert tickets and all(t == ("high", "fraud_suspected") for t in tickets)
    # a rescan of the same window finds nothing new
    assert fraud.scan(engine, now=NOW + timedelta(minutes=5)).new_hits == 0


def test_failed_payment_burst_is_card_testing(engine) -> None:
    failures = [
        _event(
            f"evt_f{i}",
            "payment_intent.payment_failed",
            T - 100 + i,
            {"id": f"pi_{i}", "customer": "cus_burst"},
        )
        for i in range(5)
    ]
    _store(engine, failures)
    assert [h.rule.name for h in fraud.scan(engine, now=NOW).hits] == ["card_testing_failures"]


def test_early_fraud_warning_and_dispute_on_active_customer(engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(StripePayment.__table__),
            [
                {
                    "payment_intent_id": "pi_d",
                    "charge_id": "ch_d",
                    "customer_id": "cus_d",
                    "status": "succeeded",
                },
                {
                    "payment_intent_id": "pi_e",
                    "charge_id": "ch_e",
                    "customer_id": "cus_e",
                    "status": "succeeded",
                },
            ],
        )
        conn.execute(
            insert(StripeSubscription.__table__),
            [{"stripe_subscription_id": "sub_d", "customer_id": "cus_d", "status": "active"}],
        )
    warning = {"id": "issfr_1", "charge": "ch_e", "fraud_type": "stolen_card", "created": T - 60}
    _store(
        engine,
        [
            _event("evt_efw", "radar.early_fraud_warning.created", T - 60, warning),
            _event(
                "evt_dp",
                "charge.dispute.created",
                T - 30,
                {"id": "dp_1", "charge": "ch_d", "payment_intent": "pi_d"},
            ),
        ],
    )
    # the warning rule reads the warnings table, which processing fills
    apply_in_transaction(
        engine, [make_event("radar.early_fraud_warning.created", warning, T - 60, "evt_efw")]
    )
    found = fraud.scan(engine, now=NOW).hits
    hits = {(h.rule.name, h.customer_id) for h in found}
    assert hits == {
        ("early_fraud_warning", "cus_e"),
        ("dispute_with_active_business", "cus_d"),
    }
    efw = next(h for h in found if h.rule.name == "early_fraud_warning")
    assert efw.stripe_event_id == "evt_efw" and efw.details["fraud_type"] == "stolen_card"
    assert fraud.scan(engine, now=NOW + timedelta(minutes=5)).new_hits == 0


def test_warnings_and_reviews_are_read_from_their_tables(engine, stripe_fixtures) -> None:
    """Radar's verdicts as Stripe states them now: a warning whose event was lost and
    that the nightly run restored days later is screened by the next scan; a review
    closed as fraud flags the customer, an approved one does not; a raw event alone
    (never processed) is no verdict."""
    with engine.begin() as conn:
        conn.execute(
            insert(StripePayment.__table__),
            [
                {"payment_intent_id": f"pi_{n}", "charge_id": f"ch_{n}", "customer_id": f"cus_{n}",
                 "status": "succeeded"}
                for n in ("late", "fraud", "fine", "raw")
            ],
        )  # fmt: skip
    t = int(datetime.now(UTC).timestamp())
    old = t - 5 * 86_400  # created five days before the scan: outside its 24 h window
    late = bo.early_fraud_warning(
        stripe_fixtures, "issfr_late", charge="ch_late", payment_intent="pi_late", created=old
    )
    api = MemoryApi({"radar/early_fraud_warnings": [late]})
    run_reconciliation(engine, api, RunConfig(backfill=False, full_run=True))
    fraud_review = bo.review(
        stripe_fixtures, "prv_fraud", open_=False, charge="ch_fraud", payment_intent="pi_fraud"
    )
    approved = bo.review(
        stripe_fixtures, "prv_fine", open_=False, charge="ch_fine", payment_intent="pi_fine"
    )
    approved.update(reason="approved", closed_reason="approved")
    apply_in_transaction(
        engine,
        [
            make_event("review.opened", {**fraud_review, "open": True, "closed_reason": None}, old),
            make_event("review.closed", fraud_review, t - 120),
            make_event("review.closed", approved, t - 100),
        ],
    )
    _store(
        engine,
        [
            _event(
                "evt_raw",
                "radar.early_fraud_warning.created",
                t - 10,
                {"id": "issfr_raw", "charge": "ch_raw"},
            )
        ],
    )
    now = datetime.now(UTC)  # the scan after the nightly run that stored the warning
    hits = {(h.rule.name, h.customer_id, h.dedupe_key) for h in fraud.scan(engine, now=now).hits}
    assert hits == {
        ("early_fraud_warning", "cus_late", "early_fraud_warning:issfr_late"),
        ("review_refunded_as_fraud", "cus_fraud", "review_refunded_as_fraud:prv_fraud"),
    }
    flagged = dict(
        _rows(engine, "SELECT stripe_customer_id, fraud_reason FROM stripe_customers "
                      "WHERE fraud_flagged_at IS NOT NULL")
    )  # fmt: skip
    assert flagged == {"cus_late": "early_fraud_warning", "cus_fraud": "review_refunded_as_fraud"}
    assert fraud.scan(engine, now=now + timedelta(minutes=10)).new_hits == 0


def test_flagged_customer_is_never_retried(engine) -> None:
    _store(
        engine,
        [
            _event(
                f"evt_x{i}",
                "payment_intent.payment_failed",
                T - 50 + i,
                {"id": f"pi_x{i}", "customer": "cus_flag"},
            )
            for i in range(5)
        ],
    )
    fraud.scan(engine, now=NOW)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO payment_recovery_attempts (recovery_key, invoice_id, customer_id, "
                "status, next_attempt_at) VALUES ('invoice:in_f', 'in_f', 'cus_flag', 'open', "
                ":due)"
            ),
            {"due": NOW - timedelta(minutes=1)},
        )
    api = RecordingApi()
    summary = run_due_retries(engine, api, now=NOW)
    assert summary.outcomes["blocked"] == 1 and api.calls_made == []
    assert json.dumps(summary.as_metadata())
