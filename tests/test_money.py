"""Money to the bank: payments and refunds fetch their balance transactions; and a
month of money end to end, signed events, the nightly run, marts to the cent.

The fetches use the in-memory Stripe (``MemoryApi``) as processing's object source.
For the month, peers: the real receiver (gunicorn, its own process) on each backend;
Stripe's side is ``tests/support/stripe_peer.py``, the drills' front over localstripe,
because localstripe has no balance transactions, payouts or disputes: the front
serves those collections from its own store, including
``/v1/balance_transactions?payout=``, with the pipeline's real rate-limited
``StripeApi`` client in between.

The story (``tests/support/money_story.py``, built from Stripe's fixture objects):
charges, a partial refund, a lost dispute with its fee, an adjustment, a USD charge
settled in EUR, a JPY charge and three automatic payouts, with the JPY payout's
``payout.paid`` lost in delivery. Stripe sends no event about a balance transaction:
until the nightly run, every paid payout is unbalanced (a ticket), and the run lists
the transactions (by window and per payout), repairs the lost payout, and the ticket
closes. The marts then equal the figures computed by hand.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text

from stripe_pipeline.catalog.balance_transactions import exchange_rate
from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.model import load_project, run_project
from stripe_pipeline.monitoring import checks as health
from stripe_pipeline.monitoring.escalation import run_check
from stripe_pipeline.process.runner import process_pending
from stripe_pipeline.reconcile.run import RunConfig, run_reconciliation
from stripe_pipeline.stripe_api import StripeApi
from stripe_pipeline.stripe_api.errors import NotFound
from tests.support.events import apply_in_transaction, fetch_row, make_event
from tests.support.localstripe_peer import start_localstripe
from tests.support.model_rows import fetch_rows
from tests.support.money_story import Month, build_month, expected
from tests.support.receiver_process import start_receiver
from tests.support.reconciliation_traffic import MemoryApi
from tests.support.stripe_peer import StripePeer

SECRET = "whsec_money_test"
MONEY_TYPES = ("payment", "refund", "dispute", "payout", "balance_transaction")


class Objects:
    """``ObjectSource`` over the in-memory Stripe: the API client's ``fetch_object``
    without HTTP, recording the paths asked for."""

    def __init__(self, api: MemoryApi) -> None:
        self.api, self.paths = api, []

    def fetch_object(self, path: str) -> dict[str, Any] | None:
        self.paths.append(path)
        try:
            return self.api.get(path)
        except NotFound:
            return None


def test_a_charge_and_a_refund_fetch_their_balance_transactions(
    engine: Engine, stripe_fixtures: dict
) -> None:
    fx = stripe_fixtures
    now = int(time.time())
    month = build_month(fx, now)
    txns = {t["id"]: t for t in month.objects["balance_transactions"]}
    source = Objects(MemoryApi({"balance_transactions": list(txns.values())}))
    [charge] = [c for c in month.objects["charges"] if c["id"] == "ch_m2"]
    [refund] = month.objects["refunds"]
    expanded = {**charge, "id": "ch_m1", "balance_transaction": txns["txn_m1"]}
    events = [
        make_event("charge.succeeded", charge, now - 60),  # names txn_m2 by id
        make_event("refund.created", refund, now - 50),  # names txn_m2r by id
        make_event("charge.succeeded", expanded, now - 40),  # expanded: txn_m1
    ]
    result = apply_in_transaction(engine, events, object_source=source)
    assert set(result.outcomes.values()) == {"processed"}, result.failures
    assert sorted(source.paths) == [
        "/v1/balance_transactions/txn_m1",
        "/v1/balance_transactions/txn_m2",
        "/v1/balance_transactions/txn_m2r",
    ]
    assert fetch_row(engine, "stripe_payments", "ch_m2")["balance_transaction_id"] == "txn_m2"
    assert fetch_row(engine, "stripe_refunds", "re_m1")["balance_transaction_id"] == "txn_m2r"
    fee = fetch_row(engine, "stripe_balance_transactions", "txn_m2")
    assert (fee["amount_minor"], fee["fee_minor"], fee["net_minor"]) == (5000, 175, 4825)
    assert (fee["source_id"], fee["source_type"], fee["reporting_category"]) == (
        "ch_m2",
        "charge",
        "charge",
    )
    back = fetch_row(engine, "stripe_balance_transactions", "txn_m2r")
    assert (back["net_minor"], back["source_type"]) == (-2000, "refund")
    # a stored transaction is not fetched again
    again = apply_in_transaction(
        engine, [make_event("charge.updated", charge, now - 30)], object_source=source
    )
    assert set(again.outcomes.values()) == {"processed"} and len(source.paths) == 3


def test_exchange_rates_are_exact_decimals_the_column_can_hold() -> None:
    assert exchange_rate(0.9234) == Decimal("0.9234")
    assert exchange_rate("1.0712345678901234") == Decimal("1.071234567890")  # 12 places
    assert exchange_rate(16250) == Decimal("16250")  # USD settled in IDR
    assert exchange_rate(None) is None
    for bad in (0, -1.5, 1e13, "abc", "NaN"):
        with pytest.raises(ValueError):
            exchange_rate(bad)
    with pytest.raises(TypeError):
        exchange_rate(True)


def test_balance_available_is_kept_as_ignored_not_a_dead_letter(
    engine: Engine, stripe_fixtures: dict
) -> None:
    balance = {**stripe_fixtures["balance"], "livemode": False}
    result = apply_in_transaction(engine, [make_event("balance.available", balance, 1)])
    assert list(result.outcomes.values()) == ["ignored"] and not result.failures


@pytest.fixture(scope="module")
def peer() -> Iterator[StripePeer]:
    localstripe = start_localstripe()
    front = StripePeer(localstripe).start()
    try:
        yield front
    finally:
        front.stop()
        localstripe.stop()


def _serve(peer: StripePeer, month: Month) -> None:
    """Stripe's final state, and every event it sent (the lost one too) in /v1/events."""
    peer.reset()
    for collection, objects in month.objects.items():
        for obj in objects:
            peer.put(collection, obj)
    for payout_id, transactions in month.carried.items():
        peer.carry(payout_id, transactions)
    for event in [*month.events, *month.lost]:
        peer.add_event(event)


def _deliver(database_url: str, events: list[dict[str, Any]]) -> None:
    receiver = start_receiver(database_url, SECRET, workers=1, threads=2)
    try:
        for event in events:
            reply = receiver.post_event(event)
            assert reply.status_code == 200, reply.text
    finally:
        receiver.stop()


def _assert_rows(rows: dict[Any, dict[str, Any]], want: dict[Any, dict[str, Any]], name: str):
    for key, columns in want.items():
        assert key in rows, f"{name}: no row {key}"
        for column, value in columns.items():
            got = rows[key][column]
            if isinstance(value, str):
                assert got == value, f"{name}{key}.{column}: {got!r} != {value!r}"
            else:  # integers of minor units exactly; decimals to the cent
                assert got is not None and math.isclose(got, value, abs_tol=0.001), (
                    f"{name}{key}.{column}: {got!r} != {value!r}"
                )


def _marts(engine: Engine) -> dict[str, dict[Any, dict[str, Any]]]:
    run_project(engine, load_project())
    return {
        "balance_daily": {
            (r["day"], r["currency"]): r for r in fetch_rows(engine, "balance_daily")
        },
        "balance_change_from_activity": {
            (r["day"], r["currency"], r["reporting_category"]): r
            for r in fetch_rows(engine, "balance_change_from_activity")
        },
        "payout_reconciliation": {
            r["payout_id"]: r for r in fetch_rows(engine, "payout_reconciliation")
        },
        "payout_reconciliation_by_category": {
            (r["payout_id"], r["reporting_category"]): r
            for r in fetch_rows(engine, "payout_reconciliation_by_category")
        },
    }


def _scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


@pytest.mark.slow
def test_a_month_of_money_reconciles_to_the_cent(
    database_url: str, peer: StripePeer, stripe_fixtures: dict
) -> None:
    now = int(time.time())
    month = build_month(stripe_fixtures, now)
    _serve(peer, month)
    _deliver(database_url, month.events)
    engine = make_engine(database_url)
    try:
        report = process_pending(engine)
        assert report is not None
        statuses = dict(
            engine.connect()
            .execute(text("SELECT status, count(*) FROM stripe_events GROUP BY status"))
            .all()
        )
        # every event applied; the balance is kept, not a dead letter
        assert statuses == {"processed": len(month.events) - 1, "ignored": 1}
        # the dispute's withdrawal came whole with its events; the rest only by listing
        assert (
            _scalar(engine, "SELECT stripe_balance_transaction_id FROM stripe_balance_transactions")
            == "txn_m3d"
        )
        assert _scalar(
            engine, "SELECT status FROM stripe_payouts WHERE stripe_payout_id = 'po_m3'"
        ) == ("in_transit")

        # Stripe reconciled the USD and EUR payouts; none of their transactions is here
        unbalanced, opened = run_check(engine, health.payouts_unbalanced)
        assert opened.action == "opened"
        assert unbalanced.metadata["unbalanced_payouts"] == 2
        assert "difference 10417" in str(unbalanced.metadata["payout:po_m1"])

        api = StripeApi(peer.api_key, api_base=peer.base_url, requests_per_second=200)
        window = RunConfig(
            object_types=MONEY_TYPES, window_start=month.start - 3600, window_end=now
        )
        first = run_reconciliation(engine, api, window)
        assert first.status == "succeeded", first.counts
        found = first.counts["compare"]["found"]
        # 10 transactions missing (each reported once, though listed twice), the
        # lost payout.paid (its status) found and repaired
        assert found["missing_locally"] == 10, found
        listed = first.counts["compare"]["listed"]
        assert listed["payout_balance_transactions"] == 11, listed
        process_pending(engine)  # the backfilled payout.paid, as any late event

        row = (
            engine.connect()
            .execute(
                text(
                    "SELECT status, reconciliation_status FROM stripe_payouts "
                    "WHERE stripe_payout_id = 'po_m3'"
                )
            )
            .one()
        )
        assert tuple(row) == ("paid", "completed")
        payouts_of = dict(
            engine.connect()
            .execute(
                text(
                    "SELECT stripe_balance_transaction_id, payout_id "
                    "FROM stripe_balance_transactions"
                )
            )
            .all()
        )
        assert payouts_of == {t: p for p, ts in month.carried.items() for t in ts}
        rate = _scalar(
            engine,
            "SELECT exchange_rate FROM stripe_balance_transactions "
            "WHERE stripe_balance_transaction_id = 'txn_m4'",
        )
        assert str(rate).rstrip("0") == "0.9234"

        balanced, closed = run_check(engine, health.payouts_unbalanced)
        assert balanced.passed and closed.action == "closed"
        assert closed.ticket_id == opened.ticket_id
        missing, _ = run_check(engine, health.payment_fees_missing)
        assert missing.passed, missing.summary

        marts = _marts(engine)
        for name, want in expected(month).items():
            _assert_rows(marts[name], want, name)
        assert set(marts["payout_reconciliation"]) == {"po_m1", "po_m2", "po_m3"}

        again = run_reconciliation(engine, api, window)
        assert again.counts["compare"]["found"] == {}, "a reconciled month compares equal"
    finally:
        engine.dispose()
