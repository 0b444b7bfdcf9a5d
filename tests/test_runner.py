"""process_pending: outcomes, retries with backoff, dead letters, tickets, isolation.

Most tests drive the runner with ``MarkingApply`` (tests/support/queue_events.py): the
real appliers never fail on purpose, and these tests need temporary and permanent
failures, an apply that raises as a whole, and countable applications.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from stripe_pipeline.db.clock import from_db_time
from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.db.statuses import IssueType
from stripe_pipeline.process import queue
from stripe_pipeline.process.backoff import RetryPolicy
from stripe_pipeline.process.errors import PermanentError, TemporaryError
from stripe_pipeline.process.processor import Processor
from stripe_pipeline.process.runner import process_pending
from stripe_pipeline.support.dead_letters import ticket_links
from stripe_pipeline.support.notify import Notification
from tests.support.queue_events import (
    MarkingApply,
    event_doc,
    load,
    make_due,
    marks,
    statuses,
)

FAST = RetryPolicy(base_seconds=30, factor=2, cap_seconds=3600, max_retries=2, jitter="equal")


def raised(exc: BaseException) -> BaseException:
    """The exception with a traceback, as an applier would catch it."""
    try:
        raise exc
    except BaseException as caught:
        return caught


class Recorder:
    """A notifier that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, dict[str, Any]]] = []

    def notify(self, note: Notification) -> None:
        self.sent.append((note.title, note.body, note.priority, dict(note.details)))


def _rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Raw rows; JSON columns decoded (SQLite hands raw SQL JSON back as text)."""
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(text(sql), params).mappings()]
    for row in rows:
        for key in ("error_context", "details"):
            if isinstance(row.get(key), str):
                row[key] = json.loads(row[key])
    return rows


def test_processed_and_ignored_events_get_processed_at(engine: Engine) -> None:
    load(engine, [event_doc(n) for n in range(5)])
    load(engine, [event_doc(9, event_type="balance.available", obj={"id": "bal", "object": "x"})])
    apply = MarkingApply(
        decide=lambda e: "ignored" if e.event_type == "balance.available" else "processed"
    )
    report = process_pending(engine, policy=FAST, batch_size=2, apply=apply)
    assert (report.processed, report.ignored, report.claimed, report.batches) == (5, 1, 6, 3)
    assert report.duration_seconds > 0 and report.events_per_second > 0
    assert report.events_by_type_and_outcome() == {
        "balance.available": {"ignored": 1},
        "payment_intent.succeeded": {"processed": 5},
    }
    # events arrive at apply oldest first
    assert [i for call in apply.calls for i in call] == sorted(i for c in apply.calls for i in c)
    rows = _rows(engine, "SELECT status, processed_at, claimed_by FROM stripe_events")
    assert all(r["processed_at"] is not None and r["claimed_by"] is None for r in rows)
    meta = report.as_metadata()
    assert meta["processed"] == 5 and meta["remaining_due"] == 0
    assert meta["oldest_pending_age_seconds"] is None


def test_temporary_failure_schedules_a_retry_with_backoff(engine: Engine) -> None:
    load(engine, [event_doc(1), event_doc(2)])
    apply = MarkingApply(
        decide=lambda e: (
            raised(TemporaryError("database is locked"))
            if e.stripe_event_id == "evt_000001"
            else "processed"
        )
    )
    before = datetime.now(UTC)
    report = process_pending(engine, policy=FAST, apply=apply)
    assert (report.processed, report.retries_scheduled, report.tickets_opened) == (1, 1, 0)
    (row,) = _rows(
        engine,
        "SELECT status, retry_count, next_retry_at, error_context, claimed_by "
        "FROM stripe_events WHERE stripe_event_id = 'evt_000001'",
    )
    assert row["status"] == "retry" and row["retry_count"] == 1 and row["claimed_by"] is None
    due = from_db_time(row["next_retry_at"])
    assert before + timedelta(seconds=14) <= due <= datetime.now(UTC) + timedelta(seconds=31)
    ctx = row["error_context"]
    assert ctx["exception"].endswith("TemporaryError")
    assert ctx["message"] == "database is locked"
    assert "Traceback" in ctx["traceback"] and ctx["attempt"] == 1 and ctx["kind"] == "temporary"
    # not due yet: a second run takes nothing
    assert process_pending(engine, policy=FAST, apply=apply).claimed == 0


def test_permanent_failure_opens_a_ticket_at_once_and_notifies(engine: Engine) -> None:
    charge = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": {"id": "pi_77", "object": "payment_intent"},
        "customer": "cus_9",
    }
    load(engine, [event_doc(1, event_type="charge.succeeded", obj=charge), event_doc(2)])
    notifier = Recorder()
    apply = MarkingApply(
        decide=lambda e: (
            PermanentError("amount is not an integer")
            if e.event_type == "charge.succeeded"
            else "processed"
        )
    )
    report = process_pending(engine, policy=FAST, processor=Processor(notifier), apply=apply)
    assert (report.processed, report.dead_lettered, report.tickets_opened) == (1, 1, 1)
    assert statuses(engine)["evt_000001"] == "dead_letter"
    (ticket,) = _rows(engine, "SELECT * FROM payment_support_tickets")
    assert ticket["issue_type"] == IssueType.EVENT_PERMANENT_ERROR and ticket["status"] == "open"
    assert ticket["priority"] == "critical"  # a charge: money moved
    assert (ticket["payment_intent_id"], ticket["customer_id"]) == ("pi_77", "cus_9")
    assert ticket["stripe_event_id"] == "evt_000001"
    assert ticket["details"]["exception"].endswith("PermanentError")
    (_title, body, priority, details) = notifier.sent[0]
    assert priority == "critical" and details["ticket_id"] == ticket["id"]
    assert "amount is not an integer" not in body + str(details)  # no message text
    audit = _rows(engine, "SELECT action FROM audit_log WHERE object_type = 'support_ticket'")
    assert [a["action"] for a in audit] == ["ticket_opened"]


def test_temporary_failures_past_max_retries_open_a_ticket(engine: Engine) -> None:
    sub = {"id": "sub_1", "object": "subscription", "customer": "cus_1"}
    load(engine, [event_doc(1, event_type="customer.subscription.updated", obj=sub)])
    apply = MarkingApply(decide=lambda e: TemporaryError("Stripe returned 503"))
    notifier = Recorder()
    for _ in range(FAST.max_retries + 1):
        report = process_pending(engine, policy=FAST, processor=Processor(notifier), apply=apply)
        assert report.claimed == 1
        make_due(engine)
    assert report.dead_lettered == 1 and report.tickets_opened == 1
    (row,) = _rows(engine, "SELECT status, retry_count, error_context FROM stripe_events")
    assert row["status"] == "dead_letter" and row["retry_count"] == FAST.max_retries + 1
    assert row["error_context"]["attempt"] == FAST.max_retries + 1
    (ticket,) = _rows(engine, "SELECT * FROM payment_support_tickets")
    assert (
        ticket["issue_type"] == IssueType.EVENT_MAX_RETRIES_EXCEEDED
        and ticket["subscription_id"] == "sub_1"
    )
    assert ticket["priority"] == "high" and notifier.sent == []  # high: ticket, no page
    assert process_pending(engine, policy=FAST, apply=apply).claimed == 0


def test_a_poison_event_does_not_hold_back_its_batch(engine: Engine) -> None:
    load(engine, [event_doc(n) for n in range(50)])
    apply = MarkingApply(
        decide=lambda e: (
            PermanentError("poison") if e.stripe_event_id == "evt_000025" else "processed"
        )
    )
    report = process_pending(engine, policy=FAST, batch_size=50, apply=apply)
    assert report.processed == 49 and report.dead_lettered == 1 and len(apply.calls) == 1
    assert len(marks(engine)) == 49


def test_apply_raising_as_a_whole_isolates_the_culprit(engine: Engine) -> None:
    load(engine, [event_doc(n) for n in range(6)])

    class Explodes(MarkingApply):
        def __call__(self, conn, events, **kw):  # type: ignore[override]
            result = super().__call__(conn, events, **kw)  # writes marks, then fails
            if any(e.stripe_event_id == "evt_000003" for e in events):
                raise KeyError("data")  # an applier bug nobody isolated
            return result

    apply = Explodes()
    report = process_pending(engine, policy=FAST, batch_size=10, apply=apply)
    assert report.apply_crashes == 1
    assert report.processed == 5 and report.dead_lettered == 1
    assert len(apply.calls) == 1 + 6  # the batch, then one event at a time
    counts = marks(engine)
    assert len(counts) == 5 and set(counts.values()) == {1}  # the failed try rolled back
    assert statuses(engine)["evt_000003"] == "dead_letter"


def test_unknown_failure_of_a_whole_batch_is_retried(engine: Engine) -> None:
    load(engine, [event_doc(n) for n in range(3)])

    def always_down(conn, events, **kw):
        raise ConnectionResetError("peer went away")

    report = process_pending(engine, policy=FAST, apply=always_down)
    assert report.retries_scheduled == 3 and report.dead_lettered == 0
    assert set(statuses(engine).values()) == {"retry"}


def test_sqlite_run_that_lost_its_lease_writes_nothing(
    fresh_sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(fresh_sqlite_url)
    load(engine, [event_doc(n) for n in range(4)])
    real_claim = queue.claim_batch

    def claim_then_lose_two(engine: Engine, **kw: Any) -> list:
        # between our claim and our apply, the lease of two events runs out and another
        # run takes them (no real peer can pause a run at exactly this point)
        claimed = real_claim(engine, **kw)
        if claimed:
            with engine.begin() as conn:
                conn.execute(
                    text("UPDATE stripe_events SET claimed_by = 'other' WHERE id IN (:a, :b)"),
                    {"a": claimed[0].id, "b": claimed[1].id},
                )
        return claimed

    monkeypatch.setattr(queue, "claim_batch", claim_then_lose_two)
    report = process_pending(engine, policy=FAST, worker_id="me", apply=MarkingApply())
    assert report.lost_leases == 2 and report.processed == 2
    assert sorted(statuses(engine).values()) == [
        "processed",
        "processed",
        "processing",
        "processing",
    ]
    assert len(marks(engine)) == 2
    engine.dispose()


def test_repeated_crashes_of_one_event_end_in_a_ticket(engine: Engine) -> None:
    load(engine, [event_doc(1)])
    for _ in range(FAST.max_retries + 1):
        _die_inside_a_batch(engine)
    report = process_pending(engine, policy=FAST, apply=MarkingApply())
    assert report.dead_lettered == 1 and report.tickets_opened == 1
    (row,) = _rows(engine, "SELECT error_context FROM stripe_events")
    assert "batch died" in row["error_context"]["message"]
    assert marks(engine) == {}


def _die_inside_a_batch(engine: Engine) -> None:
    """A run that dies while it holds the batch (its session ended; its lease ran out)."""
    if engine.dialect.name == "postgresql":
        with (
            pytest.raises(Exception, match="terminat"),
            queue.open_batch(engine, worker_id="dying", batch_size=1, lease_seconds=60) as b,
        ):
            assert b.claimed == 1
            b.conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return
    queue.claim_batch(engine, worker_id="dying", batch_size=1, lease_seconds=0)


def test_max_batches_bounds_a_run(engine: Engine) -> None:
    load(engine, [event_doc(n) for n in range(10)])
    report = process_pending(engine, policy=FAST, batch_size=3, max_batches=2, apply=MarkingApply())
    assert report.claimed == 6 and report.remaining_due == 4
    assert report.oldest_pending_age_seconds is not None


def test_ticket_links_tolerate_every_shape() -> None:
    assert ticket_links(None) == {}
    assert ticket_links({"data": {"object": "oops"}}) == {}
    invoice = {
        "data": {
            "object": {
                "id": "in_1",
                "object": "invoice",
                "customer": {"id": "cus_1", "object": "customer"},
                "parent": {"subscription_details": {"subscription": "sub_9"}},
            }
        }
    }
    assert ticket_links(invoice) == {
        "object_id": "in_1",
        "subscription_id": "sub_9",
        "customer_id": "cus_1",
    }
    dispute = {"data": {"object": {"id": "dp_1", "object": "dispute", "charge": "ch_1"}}}
    assert ticket_links(dispute)["payment_intent_id"] == "ch_1"


def test_real_apply_end_to_end(engine: Engine, stripe_fixtures: dict) -> None:
    pi = dict(stripe_fixtures["payment_intent"], id="pi_e2e", status="succeeded")
    load(engine, [event_doc(1, event_type="payment_intent.succeeded", obj=pi)])
    load(
        engine, [event_doc(2, event_type="balance.available", obj={"id": "b", "object": "balance"})]
    )
    report = process_pending(engine, policy=FAST)
    assert report.processed == 1 and report.ignored == 1
    assert _rows(engine, "SELECT status FROM stripe_payments WHERE payment_intent_id = 'pi_e2e'")


def test_worker_threads_share_a_run_and_apply_every_event_once(engine: Engine) -> None:
    """``workers`` > 1: several claim/apply loops in one run (PostgreSQL), each event once."""
    load(engine, [event_doc(n) for n in range(60)])
    report = process_pending(engine, policy=FAST, batch_size=7, workers=3, apply=MarkingApply())
    assert report.claimed == 60 and report.processed == 60
    assert report.batches >= 9 and report.remaining_due == 0
    assert set(marks(engine).values()) == {1} and len(marks(engine)) == 60
    assert set(statuses(engine).values()) == {"processed"}


@pytest.mark.postgres
def test_events_that_become_due_behind_the_claims_are_taken_in_the_same_run(
    fresh_pg_url: str,
) -> None:
    # PostgreSQL claims move forward (past the newest event claimed, ``ClaimCursor``);
    # an older event delivered late, mid-run, must not wait for the next run. (SQLite
    # always claims from the oldest event; its writer lock also keeps this delivery
    # waiting until the batch commits.)
    engine = make_engine(fresh_pg_url)
    load(engine, [event_doc(n, created=1_700_000_100 + n) for n in range(1, 10)])
    late = event_doc(99, created=1_700_000_000)

    delivered = threading.Event()

    def deliver_late(events) -> None:
        # after the first batch applied (two loops: whichever gets here first); the
        # loop delivering it passes over the cursor afterwards, so it must take it
        if not delivered.is_set():
            delivered.set()
            load(engine, [late])  # committed on its own connection, like the receiver

    apply = MarkingApply(after=deliver_late)
    report = process_pending(engine, policy=FAST, batch_size=3, workers=2, apply=apply)
    assert report.processed == 10 and report.remaining_due == 0
    assert set(statuses(engine).values()) == {"processed"}
    assert delivered.is_set() and marks(engine)["evt_000099"] == 1
    engine.dispose()


def test_loops_per_run_are_bounded_by_what_the_pool_serves(engine: Engine) -> None:
    from stripe_pipeline.config import ConfigError, load_processing_options

    with pytest.raises(ValueError, match="between 1 and 4"):
        process_pending(engine, workers=5, apply=MarkingApply())
    with pytest.raises(ConfigError, match="PROCESSING_WORKERS must be between 1 and 4"):
        load_processing_options({"STRIPE_PIPELINE_PROCESSING_WORKERS": "12"})
    assert load_processing_options({"STRIPE_PIPELINE_PROCESSING_WORKERS": "4"}).workers == 4
