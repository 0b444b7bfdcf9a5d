"""Reconciliation against the Stripe API: backfill, compare, heal, all-or-nothing runs.

In-memory listings cover every object type (disputes included, which localstripe
lacks) on both backends; localstripe covers the real HTTP path: lost webhooks,
corrupted rows, and the API going away in the middle of a run.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from stripe_pipeline.process.runner import process_pending
from stripe_pipeline.reconcile.heal import close_tickets_of_resolved, ticket_open_discrepancies
from stripe_pipeline.reconcile.run import (
    ReconciliationFailed,
    RunConfig,
    RunInProgress,
    run_reconciliation,
)
from stripe_pipeline.reconcile.window import (
    EVENT_RETENTION_SECONDS,
    plan_window,
    read_watermarks,
    to_unix,
)
from stripe_pipeline.stripe_api.client import StripeApi
from tests.support.events import make_event
from tests.support.localstripe_peer import LocalStripe, free_port, start_localstripe
from tests.support.queue_events import load
from tests.support.receiver_process import start_receiver
from tests.support.reconciliation_traffic import (
    LOCALSTRIPE_OBJECT_TYPES,
    MemoryApi,
    Traffic,
    stored_event_ids,
    wait_until,
)

NOW = int(time.time())
REPAIRS = "SELECT count(*) FROM audit_log WHERE action = 'reconciliation_repair'"


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).all()


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


# --- windows ---------------------------------------------------------------------------


def test_window_from_watermark_minus_overlap_capped_at_event_retention() -> None:
    from stripe_pipeline.reconcile.window import from_unix

    mark = from_unix(NOW - 3600)
    w = plan_window("payment", mark, now=NOW, overlap_minutes=30)
    assert (w.start, w.end) == (NOW - 3600 - 1800, NOW)
    assert plan_window("payment", None, now=NOW).start == NOW - EVENT_RETENTION_SECONDS
    old = from_unix(NOW - 90 * 86400)
    assert plan_window("events", old, now=NOW).start == NOW - EVENT_RETENTION_SECONDS
    assert plan_window("payment", old, now=NOW).start == NOW - 90 * 86400 - 3600
    full = plan_window("payment", mark, now=NOW, full_run=True)
    assert full.start is None and full.contains(1)
    assert plan_window("events", mark, now=NOW, full_run=True).start == (
        NOW - EVENT_RETENTION_SECONDS
    )
    assert plan_window("payment", mark, now=NOW, start=NOW - 10, end=NOW - 5) == type(w)(
        NOW - 10, NOW - 5
    )
    with pytest.raises(ValueError, match="after its end"):
        plan_window("payment", None, now=NOW, start=NOW, end=NOW - 5)


# --- in-memory API, every object type, both backends -----------------------------------


def _obj(fixtures: dict, kind: str, object_id: str, **changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(fixtures[kind])
    obj.update(id=object_id, created=NOW - 600, livemode=False, **changes)
    return obj


@pytest.fixture
def memory_api(stripe_fixtures: dict) -> MemoryApi:
    """One of each reconciled object, in today's shapes (fixtures3.json)."""
    api = MemoryApi()
    f = stripe_fixtures
    api.add("payment_intents", _obj(f, "payment_intent", "pi_m1", status="succeeded"))
    api.add(
        "charges",
        _obj(f, "charge", "ch_m1", payment_intent="pi_m1", amount=1099, amount_refunded=300),
    )
    api.add("charges", _obj(f, "charge", "ch_legacy", payment_intent=None, amount=4200))
    api.add("refunds", _obj(f, "refund", "re_m1", charge="ch_m1", payment_intent="pi_m1"))
    api.add(
        "disputes",
        _obj(f, "dispute", "dp_m1", charge="ch_m1", payment_intent="pi_m1", status="under_review"),
    )
    sub = _obj(f, "subscription", "sub_m1", status="active")
    for item in sub["items"]["data"]:  # 2025+ shape: the period lives on the items
        item.update(current_period_start=NOW - 600, current_period_end=NOW + 86400 * 30)
    sub.pop("current_period_start", None)
    sub.pop("current_period_end", None)
    api.add("subscriptions", sub)
    api.add("invoices", _obj(f, "invoice", "in_m1", status="open"))
    return api


def test_missing_and_stale_objects_are_repaired_from_the_api(
    engine: Engine, memory_api: MemoryApi
) -> None:
    with engine.begin() as conn:  # one stale local row; everything else is missing
        conn.execute(
            text(
                "INSERT INTO stripe_subscriptions (stripe_subscription_id, status, stripe_created,"
                " last_event_created, last_event_id) VALUES ('sub_m1', 'trialing', :c, :c, 'evt_1')"
            ),
            {"c": NOW - 600},
        )
    result = run_reconciliation(engine, memory_api, RunConfig(backfill=False, chunk_size=2))
    found = result.counts["compare"]["found"]
    assert found["missing_locally"] == 7  # with the invoice's totals and its line
    # every stored field of the stale row is compared, not only status and period
    mismatched = rows(
        engine,
        "SELECT DISTINCT object_id, field FROM reconciliation_discrepancies "
        "WHERE kind = 'field_mismatch'",
    )
    assert {o for o, _ in mismatched} == {"sub_m1"}
    assert {"status", "current_period_start", "current_period_end", "price_id", "items"} <= {
        f for _, f in mismatched
    }
    assert found["field_mismatch"] == len(mismatched)
    assert result.counts["heal"]["repaired_objects"] == 9  # pi_m1 by its PI and its charge
    statuses = rows(engine, "SELECT DISTINCT status FROM reconciliation_discrepancies")
    assert statuses == [("repaired",)]

    payment = rows(
        engine,
        "SELECT status, amount_minor, amount_refunded_minor, currency, last_event_id "
        "FROM stripe_payments WHERE payment_intent_id = 'pi_m1'",
    )
    assert payment == [("succeeded", 1099, 300, "usd", f"reconciliation:{result.run_id}")]
    assert scalar(engine, "SELECT status FROM stripe_subscriptions") == "active"
    assert scalar(engine, "SELECT status FROM stripe_disputes") == "under_review"
    assert scalar(engine, "SELECT count(*) FROM stripe_payments") == 2  # + the legacy charge
    audit = rows(
        engine,
        "SELECT object_type, object_id FROM audit_log WHERE action = 'reconciliation_repair'",
    )
    assert len(audit) == 9 and ("subscription", "sub_m1") in audit

    again = run_reconciliation(engine, memory_api, RunConfig(backfill=False))
    assert again.counts["compare"]["found"] == {}
    assert again.counts["compare"]["compared"]["payment"] == 3  # PI, its charge, legacy


def test_objects_with_webhooks_still_in_the_queue_are_left_to_processing(
    engine: Engine, memory_api: MemoryApi
) -> None:
    # a run that starts while a burst is still queued: the subscription's webhook has
    # landed but is not applied yet, so the missing row is no discrepancy
    [sub] = memory_api.data["/v1/subscriptions"]
    for item in sub["items"]["data"]:  # Stripe has the prices the subscription names
        memory_api.add("prices", item["price"])
    load(engine, [make_event("customer.subscription.created", sub, NOW - 60)])
    first = run_reconciliation(engine, memory_api, RunConfig(backfill=False))
    assert first.counts["compare"]["skipped_in_flight"] == 1
    assert first.counts["compare"]["found"]["missing_locally"] >= 1  # the rest were compared
    reported = "SELECT count(*) FROM reconciliation_discrepancies WHERE object_id = 'sub_m1'"
    assert scalar(engine, reported) == 0
    assert scalar(engine, "SELECT count(*) FROM stripe_subscriptions") == 0  # not repaired

    process_pending(engine)  # processing writes it, as it would a minute later
    second = run_reconciliation(engine, memory_api, RunConfig(backfill=False))
    assert second.counts["compare"]["skipped_in_flight"] == 0
    assert second.counts["compare"]["found"] == {}  # compared now, and it agrees
    assert scalar(engine, reported) == 0
    assert scalar(engine, "SELECT status FROM stripe_subscriptions") == "active"


def test_what_cannot_be_repaired_is_ticketed_once_and_closed_when_gone(
    engine: Engine, memory_api: MemoryApi
) -> None:
    run_reconciliation(engine, memory_api, RunConfig(backfill=False))
    with engine.begin() as conn:
        conn.execute(text("UPDATE stripe_disputes SET currency = 'eur'"))  # not staleness
        conn.execute(
            text(
                "INSERT INTO stripe_payments (payment_intent_id, status, amount_minor, currency,"
                " stripe_created) VALUES ('pi_ghost', 'succeeded', 500, 'usd', :c)"
            ),
            {"c": NOW - 300},
        )
    second = run_reconciliation(engine, memory_api, RunConfig(backfill=False))
    assert second.counts["compare"]["found"] == {"field_mismatch": 1, "missing_in_stripe": 1}
    assert second.counts["heal"]["repaired_objects"] == 0
    assert scalar(engine, "SELECT currency FROM stripe_disputes") == "eur"  # left for a person

    with engine.begin() as conn:
        first = ticket_open_discrepancies(conn)
    with engine.begin() as conn:
        assert ticket_open_discrepancies(conn) == []  # already ticketed
    assert len(first) == 2
    tickets = rows(engine, "SELECT dedupe_key, priority, status FROM payment_support_tickets")
    assert sorted(tickets) == [
        ("reconciliation:dispute:dp_m1:field_mismatch:currency", "high", "open"),
        ("reconciliation:payment:pi_ghost:missing_in_stripe:", "high", "open"),
    ]
    # the same differences found again stay one discrepancy each, one ticket each
    run_reconciliation(engine, memory_api, RunConfig(backfill=False))
    with engine.begin() as conn:
        assert ticket_open_discrepancies(conn) == []
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM reconciliation_discrepancies "
            "WHERE status IN ('open', 'ticketed')",
        )
        == 2
    )

    with engine.begin() as conn:  # a person fixes both; the next run finds them gone
        conn.execute(text("UPDATE stripe_disputes SET currency = 'usd'"))
        conn.execute(text("DELETE FROM stripe_payments WHERE payment_intent_id = 'pi_ghost'"))
    third = run_reconciliation(engine, memory_api, RunConfig(backfill=False))
    assert third.counts["heal"]["resolved_since_last_run"] == 2
    with engine.begin() as conn:
        assert sorted(close_tickets_of_resolved(conn)) == sorted(first)
    assert rows(engine, "SELECT DISTINCT status FROM payment_support_tickets") == [("resolved",)]


def _failed_without_writing(engine: Engine, ok_run: int, marks: list, error: str) -> None:
    """The run after ``ok_run`` failed saying ``error``, moved no watermark (still
    ``marks``) and recorded no discrepancy."""
    failed = rows(engine, "SELECT status, error FROM reconciliation_runs WHERE id > :i", i=ok_run)
    assert failed[0][0] == "failed" and error in failed[0][1]
    assert rows(engine, "SELECT resource, last_window_end FROM reconciliation_watermarks") == marks
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM reconciliation_discrepancies WHERE run_id > :i",
            i=ok_run,
        )
        == 0
    )


def test_failed_run_writes_nothing_and_says_why(engine: Engine, memory_api: MemoryApi) -> None:
    ok = run_reconciliation(engine, memory_api, RunConfig(backfill=False))
    marks = rows(engine, "SELECT resource, last_window_end FROM reconciliation_watermarks")
    with engine.begin() as conn:
        conn.execute(text("UPDATE stripe_payments SET status = 'processing'"))
    memory_api.fail_on = "invoices"  # payments, refunds, ... compared; then the API is gone
    with pytest.raises(ReconciliationFailed, match="comparing invoice objects: ConnectionError"):
        run_reconciliation(engine, memory_api, RunConfig(backfill=False), now=NOW + 60)
    _failed_without_writing(engine, ok.run_id, marks, "connection refused")
    assert scalar(engine, "SELECT DISTINCT status FROM stripe_payments") == "processing"


def test_a_failed_fetch_by_id_fails_the_run_and_writes_nothing(
    engine: Engine, memory_api: MemoryApi
) -> None:
    """Fetches by id run beside the comparison; one that fails (a connection lost after
    the client's retries) fails the run as a listing would: said, nothing written."""
    ok = run_reconciliation(engine, memory_api, RunConfig(backfill=False))
    marks = rows(engine, "SELECT resource, last_window_end FROM reconciliation_watermarks")
    memory_api.remove("re_m1")  # no longer listed: fetched by id, and the API is gone

    def unreachable(path: str) -> dict:
        raise ConnectionError(f"GET {path}: connection refused")

    memory_api.get = unreachable  # type: ignore[method-assign]
    with pytest.raises(ReconciliationFailed, match="fetching refund re_m1 by id: ConnectionError"):
        run_reconciliation(engine, memory_api, RunConfig(backfill=False), now=NOW + 60)
    _failed_without_writing(engine, ok.run_id, marks, "connection refused")


def test_a_second_run_waits_for_the_first(engine: Engine, memory_api: MemoryApi) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO reconciliation_runs (status) VALUES ('running')"))
    with pytest.raises(RunInProgress, match="still running"):
        run_reconciliation(engine, memory_api, RunConfig(backfill=False))
    assert scalar(engine, "SELECT count(*) FROM reconciliation_runs") == 1


def test_nightly_window_starts_at_the_watermark(engine: Engine, memory_api: MemoryApi) -> None:
    first = run_reconciliation(engine, memory_api, RunConfig(backfill=False), now=NOW)
    assert first.window_start == NOW - EVENT_RETENTION_SECONDS
    later = NOW + 7 * 86400
    second = run_reconciliation(
        engine, memory_api, RunConfig(backfill=False, overlap_minutes=5), now=later
    )
    assert second.window_start == NOW - 5 * 60  # objects were created 10 min before NOW
    assert second.counts["compare"]["listed"] == {}  # nothing created since
    assert second.counts["compare"]["found"] == {}  # and old rows are not "missing in Stripe"
    with engine.connect() as conn:
        marks = read_watermarks(conn)
    assert {to_unix(m) for m in marks.values()} == {later}


# --- localstripe ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    ls = start_localstripe()
    try:
        yield ls
    finally:
        ls.stop()


def _api(ls: LocalStripe, retries: int = 2) -> StripeApi:
    return StripeApi(ls.api_key, api_base=ls.base_url, max_network_retries=retries)


LS_CONFIG = RunConfig(object_types=LOCALSTRIPE_OBJECT_TYPES, server_filter=False)


def _assert_matches_localstripe(engine: Engine, traffic: Traffic) -> None:
    local = {
        r[0]: r[1:]
        for r in rows(
            engine,
            "SELECT payment_intent_id, status, amount_minor, amount_refunded_minor "
            "FROM stripe_payments",
        )
    }
    remote_refunded = {c["payment_intent"]: c["amount_refunded"] for c in traffic.list("charges")}
    for pi in traffic.list("payment_intents"):
        assert local[pi["id"]] == (pi["status"], pi["amount"], remote_refunded[pi["id"]])
    refunds = dict(rows(engine, "SELECT stripe_refund_id, amount_minor FROM stripe_refunds"))
    assert refunds == {r["id"]: r["amount"] for r in traffic.list("refunds")}
    subs = dict(rows(engine, "SELECT stripe_subscription_id, status FROM stripe_subscriptions"))
    assert subs == {s["id"]: s["status"] for s in traffic.list("subscriptions")}
    invoices = dict(rows(engine, "SELECT stripe_invoice_id, status FROM stripe_invoices"))
    assert invoices == {i["id"]: i["status"] for i in traffic.list("invoices")}


@pytest.mark.slow
def test_lost_webhooks_are_backfilled_and_tables_converge(
    localstripe: LocalStripe, database_url: str, engine: Engine
) -> None:
    localstripe.flush()
    traffic = Traffic(localstripe)
    # receiver down: localstripe delivers to a port where nothing listens
    localstripe.register_webhook("recon", f"http://127.0.0.1:{free_port()}/x", "whsec_recon")
    customer, pm = traffic.customer_with_card()
    lost_pi = traffic.payment(customer, pm, 2500)
    time.sleep(2.0)  # localstripe delivers once, after about a second: these are lost
    receiver = start_receiver(database_url, "whsec_recon", workers=1, threads=4)
    try:
        localstripe.register_webhook("recon", receiver.webhook_url, "whsec_recon")
        traffic.payment(customer, pm, 1200)
        traffic.refund(lost_pi, 700)  # localstripe sends no refund events at all
        traffic.subscription(customer)
        everything = {e["id"] for e in traffic.list("events")}
        wait_until(
            "the receiver to land the second half",
            lambda: len(stored_event_ids(engine)) >= 5,
        )
        time.sleep(1.5)  # let stragglers land
    finally:
        receiver.stop()
    landed = stored_event_ids(engine)
    missed = everything - set(landed)
    assert missed and set(landed) < everything

    api = _api(localstripe)
    first = run_reconciliation(engine, api, LS_CONFIG)
    assert first.counts["backfill"]["events_backfilled"] == len(missed)
    after = stored_event_ids(engine)
    assert set(after) == everything
    assert {after[e] for e in missed} == {"reconciliation"}
    assert {after[e] for e in landed} == {"webhook"}

    report = process_pending(engine)  # backfilled events flow through normal processing
    assert report.claimed == len(everything)
    assert scalar(engine, "SELECT count(*) FROM stripe_events WHERE status = 'pending'") == 0
    _assert_matches_localstripe(engine, traffic)

    converged = run_reconciliation(engine, api, LS_CONFIG)
    assert converged.counts["backfill"]["events_backfilled"] == 0
    assert converged.counts["compare"]["found"] == {}


@pytest.mark.slow
def test_corrupted_rows_are_repaired_or_ticketed(localstripe: LocalStripe, engine: Engine) -> None:
    localstripe.flush()
    traffic = Traffic(localstripe)
    customer, pm = traffic.customer_with_card()
    pi = traffic.payment(customer, pm, 3000)
    traffic.refund(pi, 1000)
    sub = traffic.subscription(customer)
    api = _api(localstripe)
    run_reconciliation(engine, api, LS_CONFIG)  # no webhooks at all: everything backfilled
    process_pending(engine)
    run_reconciliation(engine, api, LS_CONFIG)
    _assert_matches_localstripe(engine, traffic)

    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE stripe_payments SET status = 'requires_payment_method', "
                "amount_refunded_minor = 2999 WHERE payment_intent_id = :pi"
            ),
            {"pi": pi},
        )
        conn.execute(text("UPDATE stripe_subscriptions SET status = 'past_due'"))
        conn.execute(text("UPDATE stripe_refunds SET currency = 'eur'"))
    result = run_reconciliation(engine, api, LS_CONFIG)
    found = rows(
        engine,
        "SELECT object_type, kind, field, status FROM reconciliation_discrepancies "
        "WHERE run_id = :r ORDER BY 1, 3",
        r=result.run_id,
    )
    assert found == [
        ("payment", "field_mismatch", "amount_refunded_minor", "repaired"),
        ("payment", "field_mismatch", "status", "repaired"),
        ("refund", "field_mismatch", "currency", "open"),
        ("subscription", "field_mismatch", "status", "repaired"),
    ]
    repairs = rows(
        engine,
        "SELECT object_id FROM audit_log WHERE action = 'reconciliation_repair' ORDER BY 1",
    )
    assert (pi,) in repairs and (sub,) in repairs
    assert (
        scalar(
            engine,
            "SELECT amount_refunded_minor FROM stripe_payments WHERE payment_intent_id = :pi",
            pi=pi,
        )
        == 1000
    )
    with engine.begin() as conn:
        assert len(ticket_open_discrepancies(conn)) == 1


@pytest.mark.slow
def test_localstripe_stopped_mid_run_retries_then_fails_cleanly(engine: Engine) -> None:
    ls = start_localstripe()
    try:
        traffic = Traffic(ls)
        customer, pm = traffic.customer_with_card()
        pi = traffic.payment(customer, pm, 4000)
        traffic.subscription(customer)
        api = _api(ls, retries=2)
        ok = run_reconciliation(engine, api, LS_CONFIG)
        process_pending(engine)
        marks = rows(engine, "SELECT resource, last_window_end FROM reconciliation_watermarks")
        repairs = scalar(engine, REPAIRS)
        with engine.begin() as conn:
            conn.execute(text("UPDATE stripe_payments SET status = 'canceled'"))

        stop_at: dict[str, int] = {}
        real_list_all = api.list_all

        def list_all_then_die(resource: str, **kwargs: Any):
            if resource.endswith("/subscriptions"):  # payments and refunds compared by now
                ls.stop()
                stop_at["calls"] = api.calls
            return real_list_all(resource, **kwargs)

        api.list_all = list_all_then_die  # type: ignore[method-assign]
        started = time.monotonic()
        with pytest.raises(ReconciliationFailed) as failure:
            run_reconciliation(engine, api, LS_CONFIG, now=int(time.time()) + 5)
        assert time.monotonic() - started < 30
    finally:
        ls.stop()
    message = str(failure.value)
    assert "comparing subscription objects" in message and "APIConnectionError" in message
    assert api.calls - stop_at["calls"] == 3  # the first attempt and two retries
    run = rows(engine, "SELECT status, error FROM reconciliation_runs WHERE id > :i", i=ok.run_id)
    assert run[0][0] == "failed" and "APIConnectionError" in run[0][1]
    assert rows(engine, "SELECT resource, last_window_end FROM reconciliation_watermarks") == marks
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM reconciliation_discrepancies WHERE run_id > :i",
            i=ok.run_id,
        )
        == 0
    )
    assert scalar(engine, REPAIRS) == repairs
    assert (
        scalar(engine, "SELECT status FROM stripe_payments WHERE payment_intent_id = :p", p=pi)
        == "canceled"
    )  # the payment mismatch was found, but never written
