"""The event queue: backoff math, leased batch claims on both backends, concurrency, crash."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.process import queue
from stripe_pipeline.process.backoff import RetryPolicy
from stripe_pipeline.process.runner import process_pending
from tests.support.queue_events import (
    MarkingApply,
    event_doc,
    load,
    marks,
    real_apply_available,
    statuses,
)

ROOT = Path(__file__).resolve().parent.parent
REAL = real_apply_available()  # the crash test applies through the real appliers when present

# ---- backoff ----


def test_backoff_ceiling_is_exponential_monotonic_and_capped() -> None:
    policy = RetryPolicy(base_seconds=30, factor=2, cap_seconds=3600, jitter="none")
    delays = [policy.delay(n) for n in range(1, 30)]
    assert delays[:4] == [30, 60, 120, 240]
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert max(delays) == 3600
    assert policy.ceiling(10_000) == 3600  # no float overflow for absurd attempts


@pytest.mark.parametrize("jitter", ["full", "equal"])
def test_backoff_jitter_stays_within_bounds(jitter: str) -> None:
    policy = RetryPolicy(base_seconds=10, factor=3, cap_seconds=900, jitter=jitter)
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = policy.ceiling(attempt)
        draws = [policy.delay(attempt, rng) for _ in range(200)]
        low = 0 if jitter == "full" else ceiling / 2
        assert all(low <= d <= ceiling for d in draws)
        assert max(draws) - min(draws) > ceiling / 10  # actually spread out


def test_backoff_next_retry_at_and_exhaustion() -> None:
    policy = RetryPolicy(base_seconds=30, max_retries=3, jitter="equal")
    now = datetime(2025, 1, 1, tzinfo=UTC)
    at = policy.next_retry_at(2, now=now, rng=random.Random(1))
    assert now + timedelta(seconds=30) <= at <= now + timedelta(seconds=60)
    assert [policy.exhausted(n) for n in (0, 3, 4)] == [False, False, True]


def test_backoff_rejects_nonsense_and_builds_from_config() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(base_seconds=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RetryPolicy(base_seconds=100, cap_seconds=10)
    policy = RetryPolicy.from_mapping({"base_seconds": "5", "max_retries": "2", "other": 1})
    assert (policy.base_seconds, policy.max_retries, policy.factor) == (5.0, 2, 2.0)


# ---- batches on both backends ----


def _is_pg(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _scalar(engine: Engine, sql: str) -> object:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def test_batches_take_the_oldest_due_events_first(engine: Engine) -> None:
    # inserted newest first: the claim orders by Stripe created, not by arrival
    load(engine, [event_doc(n, created=1_700_000_000 + n) for n in range(10, 0, -1)])
    assert queue.has_due_events(engine)
    stats = queue.queue_stats(engine)
    assert (stats.pending, stats.due, stats.processing) == (10, 10, 0)
    assert stats.oldest_due_age_seconds is not None and stats.oldest_due_age_seconds >= 0

    with queue.open_batch(engine, worker_id="w1", batch_size=4, lease_seconds=60) as batch:
        assert [e.stripe_event_id for e in batch.events] == [f"evt_{n:06d}" for n in range(1, 5)]
        # PostgreSQL leaves payloads in the database (extracted in place); both load on demand
        if _is_pg(engine):
            assert all(e.payload is None for e in batch.events)
        loaded = queue.with_payloads(batch.conn, batch.events)
        assert loaded[0].payload["data"]["object"]["id"] == "pi_1"
        done = dict.fromkeys((e.id for e in batch.events), "processed")
        assert queue.mark_finished(batch.conn, done, worker_id="w1") == 4
    with queue.open_batch(engine, worker_id="w2", batch_size=100, lease_seconds=60) as batch:
        assert [e.stripe_event_id for e in batch.events] == [f"evt_{n:06d}" for n in range(5, 11)]
        queue.mark_finished(
            batch.conn, dict.fromkeys((e.id for e in batch.events), "ignored"), worker_id="w2"
        )
    assert not queue.has_due_events(engine)
    assert list(statuses(engine).values()).count("processed") == 4
    assert _scalar(engine, "SELECT count(*) FROM processing_claims") == 0


def test_a_batch_left_without_outcomes_leaves_its_events_due(engine: Engine) -> None:
    load(engine, [event_doc(n) for n in range(3)])
    with queue.open_batch(engine, worker_id="w", batch_size=10, lease_seconds=60) as batch:
        assert batch.claimed == 3
    if _is_pg(engine):  # nothing was written to the events: due again, right away
        assert queue.queue_stats(engine).pending == 3
    else:  # SQLite: still leased to "w" until the lease runs out
        assert queue.queue_stats(engine).processing == 3


def test_a_failing_batch_rolls_back_and_is_charged_one_attempt(engine: Engine) -> None:
    load(engine, [event_doc(n) for n in range(3)])
    # SQLite: a short lease, so that the events are due again soon after the failure.
    # PostgreSQL frees them with the rollback, and its lease is the session's idle
    # timeout: 0.2 s there ended the session under load (CI, once) before the UPDATE
    lease = 60 if _is_pg(engine) else 0.2
    with (
        pytest.raises(RuntimeError, match="boom"),
        queue.open_batch(engine, worker_id="w", batch_size=10, lease_seconds=lease) as batch,
    ):
        queue.mark_finished(
            batch.conn, dict.fromkeys((e.id for e in batch.events), "processed"), worker_id="w"
        )
        raise RuntimeError("boom")
    assert "processed" not in statuses(engine).values()
    if not _is_pg(engine):
        time.sleep(0.4)  # SQLite: the lease runs out first
    again = []
    with queue.open_batch(engine, worker_id="w2", batch_size=10, lease_seconds=60) as batch:
        again = batch.events
    assert len(again) == 3 and {e.retry_count for e in again} == {1}


def test_retry_events_are_due_only_after_next_retry_at(engine: Engine) -> None:
    load(engine, [event_doc(1), event_doc(2)])
    now = datetime.now(UTC)
    with queue.open_batch(engine, worker_id="w", batch_size=10, lease_seconds=60) as batch:
        claimed = batch.events
        queue.mark_failed(
            batch.conn,
            [
                queue.FailureUpdate(
                    claimed[0].id, "retry", 1, {"k": 1}, now - timedelta(seconds=1)
                ),
                queue.FailureUpdate(claimed[1].id, "retry", 1, {"k": 1}, now + timedelta(hours=1)),
            ],
            worker_id="w",
        )
    stats = queue.queue_stats(engine)
    assert (stats.retry_due, stats.retry_waiting) == (1, 1)
    assert queue.has_due_events(engine)
    with queue.open_batch(engine, worker_id="w2", batch_size=10, lease_seconds=60) as batch:
        assert [e.id for e in batch.events] == [claimed[0].id]
        queue.mark_finished(batch.conn, {claimed[0].id: "processed"}, worker_id="w2")
    assert not queue.has_due_events(engine)


# ---- SQLite: leased claims ----


def test_sqlite_claims_are_leased_and_disjoint(fresh_sqlite_url: str) -> None:
    engine = make_engine(fresh_sqlite_url)
    load(engine, [event_doc(n) for n in range(10)])
    first = queue.claim_batch(engine, worker_id="w1", batch_size=4, lease_seconds=60)
    second = queue.claim_batch(engine, worker_id="w2", batch_size=100, lease_seconds=60)
    assert {e.id for e in first}.isdisjoint({e.id for e in second}) and len(second) == 6
    assert queue.claim_batch(engine, worker_id="w3", batch_size=100, lease_seconds=60) == []
    assert not queue.has_due_events(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT claimed_by, count(*) FROM stripe_events GROUP BY claimed_by")
        ).all()
    assert dict(rows) == {"w1": 4, "w2": 6}
    assert queue.queue_stats(engine).processing == 10
    engine.dispose()


def test_sqlite_expired_lease_is_claimed_again_and_counts_as_an_attempt(
    fresh_sqlite_url: str,
) -> None:
    engine = make_engine(fresh_sqlite_url)
    load(engine, [event_doc(n) for n in range(3)])
    crashed = queue.claim_batch(engine, worker_id="dead", batch_size=10, lease_seconds=0.3)
    assert len(crashed) == 3 and not queue.has_due_events(engine)
    time.sleep(0.6)
    assert queue.has_due_events(engine)
    assert queue.queue_stats(engine).lease_expired == 3
    again = queue.claim_batch(engine, worker_id="alive", batch_size=10, lease_seconds=60)
    assert [e.id for e in again] == [e.id for e in crashed]
    assert all(e.retry_count == 1 for e in again)
    # the dead worker's late writes are refused: it no longer owns the events
    with engine.begin() as conn:
        assert (
            queue.lock_owned(conn, [e.id for e in crashed], worker_id="dead", lease_seconds=5)
            == set()
        )
        ids = {e.id: "processed" for e in crashed}
        assert queue.mark_finished(conn, ids, worker_id="dead") == 0
    assert set(statuses(engine).values()) == {"processing"}
    engine.dispose()


# ---- PostgreSQL: batches held by row locks, journalled ----


@pytest.mark.postgres
def test_pg_open_batches_hold_disjoint_events_until_they_commit(fresh_pg_url: str) -> None:
    engine = make_engine(fresh_pg_url)
    load(engine, [event_doc(n) for n in range(10)])
    with (
        queue.open_batch(engine, worker_id="a", batch_size=4, lease_seconds=60) as first,
        queue.open_batch(engine, worker_id="b", batch_size=100, lease_seconds=60) as second,
    ):
        assert {e.id for e in first.events}.isdisjoint({e.id for e in second.events})
        assert (len(first.events), len(second.events)) == (4, 6)
        stats = queue.queue_stats(engine)
        assert stats.processing == 10 and stats.pending == 10  # held, not yet written
        with engine.connect() as conn:
            journal = conn.execute(
                text("SELECT worker_id, jsonb_array_length(event_ids) FROM processing_claims")
            ).all()
        assert sorted(journal) == [("a", 4), ("b", 6)]
        with queue.open_batch(engine, worker_id="c", batch_size=100, lease_seconds=60) as third:
            assert third.claimed == 0
        queue.mark_finished(
            second.conn,
            dict.fromkeys((e.id for e in second.events), "processed"),
            worker_id="b",
        )
    assert list(statuses(engine).values()).count("processed") == 6
    assert queue.queue_stats(engine).processing == 0
    assert _scalar(engine, "SELECT count(*) FROM processing_claims") == 0
    engine.dispose()


@pytest.mark.postgres
def test_pg_batch_whose_session_dies_is_due_at_once_and_charged(fresh_pg_url: str) -> None:
    engine = make_engine(fresh_pg_url)
    load(engine, [event_doc(n) for n in range(3)])
    with (
        pytest.raises(Exception) as raised,
        queue.open_batch(engine, worker_id="w", batch_size=10, lease_seconds=60) as batch,
    ):
        # the server ends the session holding the batch, as if its process died
        with engine.connect() as admin:
            pid = batch.conn.execute(text("SELECT pg_backend_pid()")).scalar()
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        batch.conn.execute(text("SELECT 1"))
    assert "terminat" in str(raised.value).lower() or "closed" in str(raised.value).lower()
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, retry_count FROM stripe_events")).all()
    assert _scalar(engine, "SELECT count(*) FROM processing_claims") == 0
    assert sorted(rows) == [("pending", 1)] * 3
    engine.dispose()


@pytest.mark.postgres
def test_pg_batch_that_stalls_past_its_lease_is_taken_by_another_run(fresh_pg_url: str) -> None:
    engine = make_engine(fresh_pg_url)
    load(engine, [event_doc(n) for n in range(2)])
    with (
        pytest.raises(Exception, match=r"idle-in-transaction|terminat|closed"),
        queue.open_batch(engine, worker_id="hung", batch_size=10, lease_seconds=0.3) as hung,
    ):
        assert hung.claimed == 2
        time.sleep(1.0)  # a worker stuck between statements: the server ends its session
        with queue.open_batch(engine, worker_id="next", batch_size=10, lease_seconds=60) as nxt:
            assert sorted(e.id for e in nxt.events) == sorted(e.id for e in hung.events)
            outcomes = dict.fromkeys((e.id for e in nxt.events), "processed")
            queue.mark_finished(nxt.conn, outcomes, worker_id="next")
        hung.conn.execute(text("SELECT 1"))  # the stalled run learns it lost the batch
    assert set(statuses(engine).values()) == {"processed"}
    # done by the next run: nothing left to charge
    assert _scalar(engine, "SELECT sum(retry_count) FROM stripe_events") == 0
    assert _scalar(engine, "SELECT count(*) FROM processing_claims") == 0
    engine.dispose()


@pytest.mark.postgres
def test_pg_sweep_charges_only_batches_whose_session_is_gone(fresh_pg_url: str) -> None:
    engine = make_engine(fresh_pg_url)
    load(engine, [event_doc(n) for n in range(4)])
    with engine.begin() as conn:
        ids = conn.execute(text("SELECT id FROM stripe_events ORDER BY id")).scalars().all()
        me, started = conn.execute(
            text("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        ).one()
        journal = text(
            "INSERT INTO processing_claims (worker_id, backend_pid, backend_start, event_ids) "
            "VALUES (:w, :pid, :start, CAST(:ids AS jsonb))"
        )
        # a session that is gone (same pid, other start: the pid was reused), and this one
        conn.execute(
            journal,
            {
                "w": "dead",
                "pid": me,
                "start": started - timedelta(hours=1),
                "ids": json.dumps(ids[:2]),
            },
        )
        conn.execute(
            journal, {"w": "alive", "pid": me, "start": started, "ids": json.dumps(ids[2:])}
        )
    # the pool keeps this session open: only the reused-pid claim is dead
    assert queue.sweep_dead_claims(engine) == 2
    with engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT id, retry_count FROM stripe_events")).all())
        left = conn.execute(text("SELECT worker_id FROM processing_claims")).scalars().all()
    assert [counts[i] for i in ids] == [1, 1, 0, 0] and left == ["alive"]
    engine.dispose()  # now that session ends too
    engine = make_engine(fresh_pg_url)
    assert queue.sweep_dead_claims(engine) == 2
    with engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT id, retry_count FROM stripe_events")).all())
    assert _scalar(engine, "SELECT count(*) FROM processing_claims") == 0
    assert [counts[i] for i in ids] == [1, 1, 1, 1]
    engine.dispose()


# ---- concurrency on PostgreSQL ----


@pytest.mark.postgres
def test_concurrent_claimers_take_disjoint_events(fresh_pg_url: str) -> None:
    engine = make_engine(fresh_pg_url, pool_size=8)
    total = 600
    load(engine, [event_doc(n, created=1_700_000_000 + n % 50) for n in range(total)])
    seen: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        taken: list[int] = []
        try:
            while True:
                with queue.open_batch(
                    engine, worker_id=name, batch_size=7, lease_seconds=60
                ) as batch:
                    if not batch.claimed:
                        break
                    taken += [e.id for e in batch.events]
                    outcomes = dict.fromkeys((e.id for e in batch.events), "processed")
                    assert queue.mark_finished(batch.conn, outcomes, worker_id=name) == len(
                        outcomes
                    )
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        seen[name] = taken

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    engine.dispose()
    assert not errors
    all_ids = [i for ids in seen.values() for i in ids]
    assert len(all_ids) == len(set(all_ids)) == total
    assert sum(1 for ids in seen.values() if ids) >= 2  # they really did run side by side


@pytest.mark.postgres
def test_concurrent_runs_apply_every_event_exactly_once(fresh_pg_url: str) -> None:
    engine = make_engine(fresh_pg_url, pool_size=8)
    load(engine, [event_doc(n) for n in range(400)])
    reports = []

    def run() -> None:
        reports.append(
            process_pending(engine, policy=RetryPolicy(), batch_size=9, apply=MarkingApply())
        )

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    counts = marks(engine)
    engine.dispose()
    assert len(counts) == 400 and set(counts.values()) == {1}
    assert sum(r.processed for r in reports) == 400
    assert sum(r.lost_leases for r in reports) == 0


# ---- crash ----


def test_killed_run_mid_batch_is_taken_over(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    docs = [event_doc(n) for n in range(25)]
    load(engine, docs)
    ready = tmp_path / "ready"
    lease = 2
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.crash_worker",
            database_url,
            str(ready),
            "10",
            str(lease),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert worker.poll() is None, "the crash worker exited early"
            assert time.monotonic() < deadline, "the crash worker never reached batch 2"
            time.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    state = list(statuses(engine).values())
    assert state.count("processed") == 10  # batch 1 committed
    assert sum(marks(engine).values()) == 10
    if engine.dialect.name == "postgresql":
        # batch 2 held its events by row locks, gone with the session: due at once;
        # its journal entry makes the next run charge each of them one attempt
        assert state.count("pending") == 15
        _wait_for_session_end(engine)
        late = process_pending(engine, policy=RetryPolicy(), apply=MarkingApply(use_real=REAL))
        assert late.processed == 15
        assert _scalar(engine, "SELECT sum(retry_count) FROM stripe_events") == 10
        assert _scalar(engine, "SELECT count(*) FROM processing_claims") == 0
    else:
        # SQLite: batch 2 is still leased (its apply rolled back); batch 3 pending
        assert state.count("processing") == 10 and state.count("pending") == 5
        # within the lease the orphaned events stay untouched
        early = process_pending(engine, policy=RetryPolicy(), apply=MarkingApply(use_real=REAL))
        assert early.processed == 5
        assert list(statuses(engine).values()).count("processing") == 10
        time.sleep(lease + 0.5)
        late = process_pending(engine, policy=RetryPolicy(), apply=MarkingApply(use_real=REAL))
        assert late.processed == 10
    counts = marks(engine)
    assert len(counts) == 25 and set(counts.values()) == {1}  # each applied exactly once
    assert set(statuses(engine).values()) == {"processed"}
    if REAL:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM stripe_payments")).scalar() == 25
    engine.dispose()


def _wait_for_session_end(engine: Engine) -> None:
    """The killed worker's PostgreSQL session ends once the server sees the socket close."""
    deadline = time.monotonic() + 30
    with engine.connect() as conn:
        while conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity a JOIN processing_claims c "
                "ON a.pid = c.backend_pid"
            )
        ).scalar():
            assert time.monotonic() < deadline, "the killed worker's session never ended"
            time.sleep(0.05)
            conn.rollback()
