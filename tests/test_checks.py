"""Each health check fails on data made to fail it, opens one ticket, and closes it when fixed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, func, insert, select, text, update

from stripe_pipeline.db.models import metadata
from stripe_pipeline.model import load_project, run_project
from stripe_pipeline.monitoring import checks as health
from stripe_pipeline.monitoring.escalation import run_check
from stripe_pipeline.support.notify import build_notifier
from tests.support.http_sink import http_sink

T = metadata.tables
NOW = datetime.now(UTC).replace(microsecond=0)


def event(event_id: str, received: datetime, status: str, **extra: object) -> dict:
    return {
        "stripe_event_id": event_id,
        "event_type": "invoice.paid",
        "stripe_created": int(received.timestamp()),
        "received_at": received,
        "status": status,
        "payload": {"id": event_id},
        **extra,
    }


def add(conn: Connection, table: str, *rows: dict) -> None:
    for row in rows:
        conn.execute(insert(T[table]).values(row))


@dataclass(frozen=True)
class Scenario:
    check: health.CheckFunction
    break_it: Callable[[Connection], None]
    fix_it: Callable[[Connection], None]
    needs_models: bool = False


def _pending_break(c: Connection) -> None:
    add(c, "stripe_events", event("evt_stuck", NOW - timedelta(minutes=30), "pending"))


def _pending_fix(c: Connection) -> None:
    c.execute(update(T["stripe_events"]).values(status="processed", processed_at=NOW))


def _dead_break(c: Connection) -> None:
    add(c, "stripe_events", event("evt_dead", NOW, "dead_letter", retry_count=8))


def _dispute_break(c: Connection) -> None:
    add(
        c,
        "stripe_disputes",
        {
            "stripe_dispute_id": "dp_1",
            "payment_intent_id": "pi_1",
            "amount_minor": 1000,
            "currency": "usd",
            "status": "needs_response",
            "due_by": NOW + timedelta(hours=48),
        },
    )


def _dispute_fix(c: Connection) -> None:
    c.execute(update(T["stripe_disputes"]).values(status="under_review"))


def _failures_break(c: Connection) -> None:
    for i in range(20):
        failed = i % 2 == 0
        add(
            c,
            "stripe_payments",
            {
                "payment_intent_id": f"pi_{i}",
                "status": "requires_payment_method" if failed else "succeeded",
                "failure_code": "card_declined" if failed else None,
                "amount_minor": 1000,
                "currency": "usd",
                "stripe_created": int(NOW.timestamp()) - 60,
            },
        )


def _failures_fix(c: Connection) -> None:
    p = T["stripe_payments"]
    c.execute(
        update(p)
        .where(p.c.payment_intent_id.in_([f"pi_{i}" for i in range(0, 12, 2)]))
        .values(status="succeeded", failure_code=None)
    )


def _spike_break(c: Connection) -> None:
    for i in range(12):
        add(
            c,
            "payment_support_tickets",
            {
                "issue_type": "dead_letter",
                "priority": "high",
                "dedupe_key": f"dl:{i}",
                "title": "dead letter",
                "created_at": NOW - timedelta(minutes=5),
            },
        )


def _spike_fix(c: Connection) -> None:
    # time passes: the burst moves into the baseline
    tickets = T["payment_support_tickets"]
    c.execute(
        update(tickets)
        .where(tickets.c.issue_type == "dead_letter")
        .values(created_at=NOW - timedelta(hours=5))
    )


def _silence_break(c: Connection) -> None:
    add(c, "stripe_events", event("evt_old", NOW - timedelta(hours=10), "processed"))


def _silence_fix(c: Connection) -> None:
    add(c, "stripe_events", event("evt_new", NOW - timedelta(minutes=1), "processed"))


def _discrepancy_break(c: Connection) -> None:
    run_id = c.execute(
        insert(T["reconciliation_runs"])
        .values(status="succeeded")
        .returning(T["reconciliation_runs"].c.id)
    ).scalar_one()
    add(
        c,
        "reconciliation_discrepancies",
        {
            "run_id": run_id,
            "first_seen_run_id": run_id,
            "object_type": "payment",
            "object_id": "pi_x",
            "kind": "missing_local",
        },
    )


def _discrepancy_fix(c: Connection) -> None:
    c.execute(update(T["reconciliation_discrepancies"]).values(status="repaired"))


def _currency_break(c: Connection) -> None:
    add(
        c,
        "stripe_payments",
        {"payment_intent_id": "pi_nocur", "status": "succeeded", "amount_minor": 100},
    )


def _currency_fix(c: Connection) -> None:
    c.execute(update(T["stripe_payments"]).values(currency="eur"))


def _interval_break(c: Connection) -> None:
    item = {
        "price_id": "p",
        "quantity": 1,
        "unit_amount_minor": 100,
        "currency": "usd",
        "interval": "fortnight",
        "interval_count": 1,
    }
    add(
        c,
        "stripe_subscriptions",
        {"stripe_subscription_id": "sub_odd", "status": "active", "items": [item]},
    )


def _interval_fix(c: Connection) -> None:
    item = {
        "price_id": "p",
        "quantity": 1,
        "unit_amount_minor": 100,
        "currency": "usd",
        "interval": "month",
        "interval_count": 1,
    }
    c.execute(update(T["stripe_subscriptions"]).values(items=[item]))


def _txn(txn: str, net: int, **extra: object) -> dict:
    return {
        "stripe_balance_transaction_id": txn,
        "type": "charge",
        "reporting_category": "charge",
        "amount_minor": net + 30,
        "fee_minor": 30,
        "net_minor": net,
        "currency": "usd",
        **extra,
    }


def _payout(status: str, **extra: object) -> dict:
    return {
        "stripe_payout_id": "po_1",
        "amount_minor": 1000,
        "currency": "usd",
        "status": status,
        "automatic": True,
        "reconciliation_status": "completed",
        "arrival_date": NOW - timedelta(days=1),
        **extra,
    }


def _unbalanced_break(c: Connection) -> None:
    add(c, "stripe_payouts", _payout("paid"))
    add(c, "stripe_balance_transactions", _txn("txn_1", 700, payout_id="po_1"))


def _unbalanced_fix(c: Connection) -> None:
    # the transaction the payout also carried arrives (the nightly per-payout listing)
    add(c, "stripe_balance_transactions", _txn("txn_2", 300, payout_id="po_1"))


def _payout_failed_break(c: Connection) -> None:
    add(
        c,
        "stripe_payouts",
        _payout(
            "failed",
            failure_code="account_closed",
            failure_message="The bank account has been closed.",
        ),
    )


def _payout_failed_fix(c: Connection) -> None:
    # a week later the failure is history (the next payout carries the money)
    c.execute(update(T["stripe_payouts"]).values(arrival_date=NOW - timedelta(days=8)))


def _txn_missing_break(c: Connection) -> None:
    add(
        c,
        "reconciliation_runs",
        {"status": "succeeded", "window_start": NOW - timedelta(days=1), "window_end": NOW},
    )
    add(
        c,
        "stripe_payments",
        {
            "payment_intent_id": "pi_fees",
            "charge_id": "ch_fees",
            "status": "succeeded",
            "amount_minor": 1030,
            "currency": "usd",
            "stripe_created": int(NOW.timestamp()) - 3600,
        },
    )


def _txn_missing_fix(c: Connection) -> None:
    add(c, "stripe_balance_transactions", _txn("txn_fees", 1000, source_id="ch_fees"))


SCENARIOS = {
    "events_pending_too_long": Scenario(
        health.events_pending_too_long, _pending_break, _pending_fix
    ),
    "events_dead_lettered": Scenario(health.events_dead_lettered, _dead_break, _pending_fix),
    "disputes_evidence_due": Scenario(health.disputes_evidence_due, _dispute_break, _dispute_fix),
    "payment_failure_ratio": Scenario(health.payment_failure_ratio, _failures_break, _failures_fix),
    "ticket_volume_spike": Scenario(health.ticket_volume_spike, _spike_break, _spike_fix),
    "webhook_silence": Scenario(health.webhook_silence, _silence_break, _silence_fix),
    "reconciliation_discrepancies": Scenario(
        health.open_discrepancies, _discrepancy_break, _discrepancy_fix
    ),
    "payments_missing_currency": Scenario(
        health.payments_missing_currency, _currency_break, _currency_fix, needs_models=True
    ),
    "subscription_items_unpriced": Scenario(
        health.subscription_items_unpriced, _interval_break, _interval_fix, needs_models=True
    ),
    "payouts_unbalanced": Scenario(health.payouts_unbalanced, _unbalanced_break, _unbalanced_fix),
    "payouts_failed": Scenario(health.payouts_failed, _payout_failed_break, _payout_failed_fix),
    "payment_fees_missing": Scenario(
        health.payment_fees_missing, _txn_missing_break, _txn_missing_fix
    ),
}


def tickets_for(engine: Engine, key: str) -> list[dict]:
    tickets = T["payment_support_tickets"]
    with engine.connect() as conn:
        rows = conn.execute(select(tickets).where(tickets.c.dedupe_key == key)).mappings()
        return [dict(r) for r in rows]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_check_opens_one_ticket_and_closes_it_when_fixed(engine: Engine, name: str) -> None:
    scenario = SCENARIOS[name]
    if scenario.needs_models:
        project = load_project()
        run_project(engine, project, ["stg_stripe__payments", "stg_stripe__subscription_items"])
    passing, action = run_check(engine, scenario.check, now=NOW)
    assert passing.passed and action.action == "none", passing

    with engine.begin() as conn:
        scenario.break_it(conn)
    failing, action = run_check(engine, scenario.check, now=NOW)
    assert not failing.passed, failing
    assert failing.name == name and action.action == "opened"
    key = f"check:{name}"
    _, again = run_check(engine, scenario.check, now=NOW)
    assert again.action == "repeated" and again.ticket_id == action.ticket_id
    [ticket] = tickets_for(engine, key)
    assert ticket["status"] == "open" and ticket["occurrences"] == 2
    assert ticket["issue_type"] == key and ticket["details"]["check"] == name

    with engine.begin() as conn:
        scenario.fix_it(conn)
    fixed, closed = run_check(engine, scenario.check, now=NOW)
    assert fixed.passed, fixed
    assert closed.action == "closed" and closed.ticket_id == action.ticket_id
    [ticket] = tickets_for(engine, key)
    assert ticket["status"] == "resolved" and ticket["resolution"] == "auto_closed"


def test_discrepancy_check_passes_without_the_table(engine: Engine) -> None:
    with engine.begin() as conn:
        cascade = " CASCADE" if engine.dialect.name == "postgresql" else ""
        conn.execute(text(f"DROP TABLE reconciliation_discrepancies{cascade}"))
    outcome, action = run_check(engine, health.open_discrepancies, now=NOW)
    assert outcome.passed and outcome.metadata["table_present"] == 0 and action.action == "none"


def test_thresholds_are_configurable(engine: Engine) -> None:
    with engine.begin() as conn:
        _pending_break(conn)  # 30 minutes old
    relaxed = health.Thresholds(pending_max_minutes=45)
    assert run_check(engine, health.events_pending_too_long, relaxed, now=NOW)[0].passed
    strict = health.Thresholds(pending_max_minutes=10)
    outcome, _ = run_check(engine, health.events_pending_too_long, strict, now=NOW)
    assert not outcome.passed and outcome.metadata["oldest_age_minutes"] == 30.0


def test_critical_ticket_notifies_once_through_a_webhook(engine: Engine) -> None:
    """A queue stuck past the critical age opens a critical ticket and posts once."""
    with engine.begin() as conn:
        add(conn, "stripe_events", event("evt_very_stuck", NOW - timedelta(hours=2), "pending"))
    with http_sink() as sink:
        notifier = build_notifier([sink.url])
        outcome, action = run_check(
            engine, health.events_pending_too_long, notifier=notifier, now=NOW
        )
        assert outcome.priority == "critical" and action.notify
        run_check(engine, health.events_pending_too_long, notifier=notifier, now=NOW)
    assert len(sink.received) == 1, "a repeat of the same open ticket must not notify again"
    message = sink.received[0]
    assert message["priority"] == "critical"
    assert message["details"]["check"] == "events_pending_too_long"
    assert message["details"]["ticket_id"] == action.ticket_id
    assert "waiting more than 15 min" in message["title"]


def test_non_critical_failures_do_not_notify(engine: Engine) -> None:
    with engine.begin() as conn:
        _dead_break(conn)
    with http_sink() as sink:
        _, action = run_check(
            engine, health.events_dead_lettered, notifier=build_notifier([sink.url]), now=NOW
        )
    assert action.action == "opened" and not action.notify and sink.received == []


def test_check_tickets_do_not_feed_the_spike_check(engine: Engine) -> None:
    tickets = T["payment_support_tickets"]
    with engine.begin() as conn:
        for i in range(20):
            add(
                conn,
                "payment_support_tickets",
                {
                    "issue_type": f"check:x{i}",
                    "priority": "high",
                    "dedupe_key": f"check:x{i}",
                    "title": "x",
                    "created_at": NOW,
                },
            )
        assert conn.execute(select(func.count()).select_from(tickets)).scalar_one() == 20
    assert run_check(engine, health.ticket_volume_spike, now=NOW)[0].passed


def test_failed_payout_ticket_is_critical_with_stripes_reason(engine: Engine) -> None:
    with engine.begin() as conn:
        _payout_failed_break(conn)
    _, action = run_check(engine, health.payouts_failed, now=NOW)
    assert action.action == "opened" and action.notify
    [ticket] = tickets_for(engine, "check:payouts_failed")
    assert ticket["priority"] == "critical"
    assert "account_closed" in ticket["title"] and "po_1" in ticket["title"]
    assert ticket["details"]["payout:po_1"] == (
        "1000 usd: account_closed: The bank account has been closed."
    )


def test_manual_or_unreconciled_payouts_are_not_held_to_their_transactions(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        add(conn, "stripe_payouts", _payout("paid", automatic=False))
        add(
            conn,
            "stripe_payouts",
            _payout("paid", stripe_payout_id="po_2", reconciliation_status="in_progress"),
        )
    outcome, _ = run_check(engine, health.payouts_unbalanced, now=NOW)
    assert outcome.passed and outcome.metadata["unbalanced_payouts"] == 0
    with engine.begin() as conn:
        add(conn, "stripe_payouts", _payout("paid", stripe_payout_id="po_3"))
    outcome, _ = run_check(engine, health.payouts_unbalanced, now=NOW)
    assert not outcome.passed
    assert (
        outcome.metadata["payout:po_3"] == "1000 usd paid, 0 in 0 transaction(s): difference 1000"
    )
