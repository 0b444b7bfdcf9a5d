"""Retention under load: the receiver keeps landing while a retention run prunes a
million rows on PostgreSQL.

A fresh PostgreSQL database gets ``--events`` processed events 120 days old (Stripe's
~3.4 KB example charge as payload) and ``--deliveries`` old delivery rows; the real
receiver (gunicorn, ``benchmarks/receiver_load.py``'s server and load generator) then
takes signed events at ``--concurrency``:

1. a child process runs ``run_retention`` (default settings: 90-day payloads, 30-day
   deliveries, 5,000 rows per transaction, paced);
2. load chunks alternate: one with the retention process running (SIGCONT), one with
   it stopped (SIGSTOP, after its current statement has finished in the database), so
   busy and idle samples interleave in time and the machine's drift (other work on
   it) falls on both alike;
3. the ratio compares the busy chunks with the idle ones.

Prints receiver events/s and p99 during retention against idle (ratio), retention
rows/s, and checks that every acknowledged event is stored and every old payload was
dropped. Last line: JSON.

    .venv/bin/python benchmarks/retention.py --events 1000000 --deliveries 250000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import receiver_load as rl  # noqa: E402 - the receiver benchmark's server and load helpers

from stripe_pipeline.config import PrivacyOptions  # noqa: E402

SEED_CHUNK = 100_000


def seed(url: str, events: int, deliveries: int) -> float:
    """Old processed events and old deliveries, generated in the database."""
    from sqlalchemy import text

    from stripe_pipeline.db.engine import make_engine

    charge = json.loads(rl.FIXTURES.read_text())["resources"]["charge"]
    engine = make_engine(url)
    started = time.perf_counter()
    insert_events = text(
        """
        INSERT INTO stripe_events (stripe_event_id, event_type, api_version, livemode,
            object_id, stripe_created, payload, status, received_at, processed_at)
        SELECT 'evt_old_' || g, 'charge.succeeded', '2025-03-31.basil', false,
            'ch_old_' || g, extract(epoch FROM now() - interval '120 days')::bigint + g,
            jsonb_build_object(
                'id', 'evt_old_' || g, 'object', 'event', 'type', 'charge.succeeded',
                'api_version', '2025-03-31.basil', 'livemode', false,
                'created', extract(epoch FROM now() - interval '120 days')::bigint + g,
                'data', jsonb_build_object(
                    'object', CAST(:template AS jsonb) || jsonb_build_object(
                        'id', 'ch_old_' || g, 'amount', 1000 + g % 5000))),
            'processed', now() - interval '120 days', now() - interval '120 days'
        FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g
        """
    )
    insert_deliveries = text(
        """
        INSERT INTO webhook_deliveries (received_at, endpoint, remote_addr, outcome,
            status_code, stripe_event_id, event_type, body_bytes)
        SELECT now() - interval '40 days', 'default', '127.0.0.1', 'stored', 200,
            'evt_old_' || g, 'charge.succeeded', 3500
        FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g
        """
    )
    for statement, total, label in (
        (insert_events, events, "events"),
        (insert_deliveries, deliveries, "deliveries"),
    ):
        for lo in range(1, total + 1, SEED_CHUNK):
            hi = min(lo + SEED_CHUNK - 1, total)
            with engine.begin() as conn:
                conn.execute(statement, {"template": json.dumps(charge), "lo": lo, "hi": hi})
            print(f"  seeded {hi:,} {label}", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE stripe_events"))
        conn.execute(text("VACUUM ANALYZE webhook_deliveries"))
    engine.dispose()
    return time.perf_counter() - started


def load_chunk(port: int, size: int, concurrency: int) -> dict[str, Any]:
    requests, ids = rl.build_requests(size, uuid.uuid4().hex[:8])
    started = time.perf_counter()
    out, elapsed = rl.run_load(port, requests, concurrency)
    return {
        "started": started,
        "elapsed": elapsed,
        "latencies": [r[2] for r in out],
        "acked": [ids[r[0]] for r in out if 200 <= r[1] < 300],
        "errors": sum(1 for r in out if not 200 <= r[1] < 300),
    }


def summarize(case: str, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for c in chunks for x in c["latencies"]]
    acked = sum(len(c["acked"]) for c in chunks)
    elapsed = sum(c["elapsed"] for c in chunks)
    return {
        "case": case,
        "chunks": len(chunks),
        "events": len(latencies),
        "events_per_s": round(acked / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(rl.percentile(latencies, 0.50) * 1000, 2) if latencies else None,
        "p99_ms": round(rl.percentile(latencies, 0.99) * 1000, 2) if latencies else None,
        "errors": sum(c["errors"] for c in chunks),
    }


APP_NAME = "retention-bench"


def retention_worker(url: str, pause_ratio: float, pipe) -> None:
    """Child process: one retention run, its result sent back through the pipe."""
    from sqlalchemy import event

    from stripe_pipeline.config import PrivacyOptions
    from stripe_pipeline.db.engine import make_engine
    from stripe_pipeline.privacy.retention import run_retention

    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def name_session(dbapi_connection, _record) -> None:  # so the parent can watch it
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET application_name = '{APP_NAME}'")
        dbapi_connection.commit()

    pipe.send("ready")
    try:
        result = run_retention(
            engine, PrivacyOptions(pause_ratio=pause_ratio), triggered_by="benchmark"
        )
        pipe.send({"result": result.as_dict()})
    except BaseException as exc:  # reported, not swallowed
        pipe.send({"error": repr(exc)})
    finally:
        engine.dispose()


def wait_statement_done(url: str, timeout: float = 10.0) -> None:
    """After SIGSTOP: let the statement the retention session is running finish."""
    from sqlalchemy import text

    from stripe_pipeline.db.engine import make_engine

    engine = make_engine(url)
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            active = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :n "
                    "AND state = 'active'"
                ),
                {"n": APP_NAME},
            ).scalar_one()
            conn.commit()
            if not active:
                break
            time.sleep(0.05)
    engine.dispose()


def check(url: str, acked: list[str], events: int) -> dict[str, int]:
    from sqlalchemy import text

    from stripe_pipeline.db.engine import make_engine

    lost = len(set(acked) - rl.stored_ids(url, acked))
    engine = make_engine(url)
    with engine.connect() as conn:
        pruned = conn.execute(
            text("SELECT count(*) FROM stripe_events WHERE payload ? 'pruned'")
        ).scalar_one()
        kept = conn.execute(
            text(
                "SELECT count(*) FROM stripe_events WHERE NOT payload ? 'pruned' "
                "AND stripe_event_id LIKE 'evt_old_%'"
            )
        ).scalar_one()
    engine.dispose()
    return {"lost": lost, "payloads_pruned": pruned, "old_payloads_left": kept, "seeded": events}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="old events to prune")
    parser.add_argument("--deliveries", type=int, default=250_000, help="old deliveries")
    parser.add_argument("--chunk", type=int, default=10_000, help="events per load chunk")
    parser.add_argument(
        "--pause-ratio",
        type=float,
        default=PrivacyOptions().pause_ratio,
        help="retention's pause after each batch, times the batch's duration (0: full speed)",
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)

    url = rl.create_pg_database()
    print(
        f"retention under load: {args.events:,} old events, {args.deliveries:,} old "
        f"deliveries, receiver c{args.concurrency}, chunks of {args.chunk:,}, retention "
        f"pause ratio {args.pause_ratio}",
        flush=True,
    )
    try:
        seconds = seed(url, args.events, args.deliveries)
        print(f"seeded in {seconds:.1f} s", flush=True)
        with tempfile.TemporaryDirectory(prefix="sp-retention-") as tmp:
            proc, port, log = rl.start_server("project", url, Path(tmp), args.workers, args.threads)
            try:
                rl.run_load(port, rl.build_requests(1000, "warm")[0], args.concurrency)
                ctx = multiprocessing.get_context("spawn")
                parent, child = ctx.Pipe(duplex=False)
                worker = ctx.Process(target=retention_worker, args=(url, args.pause_ratio, child))
                worker.start()
                assert parent.recv() == "ready"
                started, stopped = time.perf_counter(), 0.0
                busy: list[dict[str, Any]] = []
                idle: list[dict[str, Any]] = []
                try:
                    while worker.is_alive() and not parent.poll():
                        os.kill(worker.pid, signal.SIGCONT)
                        chunk = load_chunk(port, args.chunk, args.concurrency)
                        if not worker.is_alive() or parent.poll():
                            break  # retention ended during the chunk: not a clean sample
                        busy.append(chunk)
                        os.kill(worker.pid, signal.SIGSTOP)
                        paused = time.perf_counter()
                        wait_statement_done(url)
                        idle.append(load_chunk(port, args.chunk, args.concurrency))
                        stopped += time.perf_counter() - paused
                finally:
                    if worker.is_alive():
                        os.kill(worker.pid, signal.SIGCONT)
                outcome = parent.recv()
                worker.join()
                wall = time.perf_counter() - started
            finally:
                rl.stop_server(proc, log)
        if "error" in outcome:
            print(f"retention failed: {outcome['error']}")
            return 1
        result = outcome["result"]
        running = wall - stopped  # the retention process's time while not stopped
        rows = [summarize("idle", idle), summarize("during retention", busy)]
        for row in rows:
            print(
                f"| {row['case']:<17} | {row['chunks']:>3} chunks | {row['events_per_s']:>8,.0f} "
                f"events/s | p50 {row['p50_ms']:>6} ms | p99 {row['p99_ms']:>6} ms | "
                f"errors {row['errors']} |"
            )
        idle_row, busy_row = rows
        ratio = {
            "events_per_s_during_vs_idle": round(
                busy_row["events_per_s"] / idle_row["events_per_s"], 3
            ),
            "p99_during_vs_idle": round(busy_row["p99_ms"] / idle_row["p99_ms"], 3),
        }
        retention = {
            "rows_changed": result["rows_changed"],
            "payloads_dropped": result["payloads_dropped"],
            "deliveries_deleted": result["deliveries_deleted"],
            "transactions": result["transactions"],
            "seconds_running": round(running, 1),
            "rows_per_s": round(result["rows_changed"] / running, 1),
            "pause_ratio": args.pause_ratio,
            "wall_seconds": round(wall, 1),
        }
        acked = [i for c in idle + busy for i in c["acked"]]
        checks = check(url, acked, args.events)
        print(
            f"retention: {retention['rows_changed']:,} rows ({retention['payloads_dropped']:,} "
            f"payloads, {retention['deliveries_deleted']:,} deliveries) in "
            f"{retention['seconds_running']} s running = {retention['rows_per_s']:,.0f} rows/s, "
            f"{retention['transactions']:,} transactions"
        )
        print(
            f"receiver during retention vs idle: events/s x{ratio['events_per_s_during_vs_idle']}"
            f", p99 x{ratio['p99_during_vs_idle']}; acknowledged events lost: {checks['lost']}; "
            f"old payloads left: {checks['old_payloads_left']}"
        )
        print(json.dumps({"receiver": rows, "ratio": ratio, "retention": retention, **checks}))
        ok = checks["lost"] == 0 and checks["old_payloads_left"] == 0
        return 0 if ok else 1
    finally:
        rl.drop_pg_database(url)


if __name__ == "__main__":
    sys.exit(main())
