"""The event queue: backoff math, leased batch claims on both backends, concurrency, crash."""

from __future__ import annotations

import itertools
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


# ---- claims on both backends ----


def test_claim_takes_oldest_first_with_a_lease(engine: Engine) -> None:
    # inserted newest first: the claim orders by Stripe created, not by arrival
    load(engine, [event_doc(n, created=1_700_000_000 + n) for n in range(10, 0, -1)])
    assert queue.has_due_events(engine)
    stats = queue.queue_stats(engine)
    assert (stats.pending, stats.due, stats.processing) == (10, 10, 0)
    assert stats.oldest_due_age_seconds is not None and stats.oldest_due_age_seconds >= 0

    first = queue.claim_batch(engine, worker_id="w1", batch_size=4, lease_seconds=60)
    assert [e.stripe_event_id for e in first] == [f"evt_{n:06d}" for n in range(1, 5)]
    # PostgreSQL leaves payloads in the database (extracted in place); both load on demand
    if engine.dialect.name == "postgresql":
        assert all(e.payload is None for e in first)
    with engine.connect() as conn:
        loaded = queue.with_payloads(conn, first)
    assert loaded[0].payload["data"]["object"]["id"] == "pi_1"
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


def test_expired_lease_is_claimed_again_and_counts_as_an_attempt(engine: Engine) -> None:
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


def test_retry_events_are_due_only_after_next_retry_at(engine: Engine) -> None:
    load(engine, [event_doc(1), event_doc(2)])
    claimed = queue.claim_batch(engine, worker_id="w", batch_size=10, lease_seconds=60)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        queue.mark_failed(
            conn,
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
    again = queue.claim_batch(engine, worker_id="w2", batch_size=10, lease_seconds=60)
    assert [e.id for e in again] == [claimed[0].id]
    assert not queue.has_due_events(engine)


def test_release_gives_claims_back(engine: Engine) -> None:
    load(engine, [event_doc(n) for n in range(4)])
    claimed = queue.claim_batch(engine, worker_id="w", batch_size=10, lease_seconds=60)
    assert queue.release(engine, [e.id for e in claimed], worker_id="other") == 0
    assert queue.release(engine, [e.id for e in claimed], worker_id="w") == 4
    assert queue.queue_stats(engine).pending == 4


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
                batch = queue.claim_batch(engine, worker_id=name, batch_size=7, lease_seconds=60)
                if not batch:
                    break
                taken += [e.id for e in batch]
                with engine.begin() as conn:
                    owned = queue.lock_owned(
                        conn, [e.id for e in batch], worker_id=name, lease_seconds=60
                    )
                    assert owned == {e.id for e in batch}
                    queue.mark_finished(conn, dict.fromkeys(owned, "processed"), worker_id=name)
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


def test_killed_run_mid_batch_is_taken_over_after_its_lease(
    database_url: str, tmp_path: Path
) -> None:
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
    # batch 1 committed, batch 2 was in flight (rolled back, still claimed), batch 3 pending
    state = statuses(engine)
    assert list(state.values()).count("processed") == 10
    assert list(state.values()).count("processing") == 10
    assert list(state.values()).count("pending") == 5
    assert sum(marks(engine).values()) == 10

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
