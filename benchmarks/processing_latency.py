"""Webhook POST -> domain row latency through the real stack (not a test).

Starts the receiver (gunicorn) and ``dagster dev`` (webserver + daemon, a temporary
DAGSTER_HOME with deploy/dagster.dev.yaml), lets ``stripe_events_sensor`` and job
``process_stripe_events`` do their work, POSTs signed ``customer.created`` events
spread over time (so they hit every phase of the sensor interval) and polls
``stripe_customers`` for each row. Prints p50/p95/max; the last line is JSON.

    .venv/bin/python benchmarks/processing_latency.py [--events 20] [--spacing 1.5]

``dagster dev`` ignores SIGINT/SIGTERM when backgrounded, so it runs in its own
process group, which is killed with SIGKILL at the end. Everything binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from benchmarks.shared import PG_ADMIN, free_port, percentile  # noqa: E402
from stripe_pipeline.db import migrate  # noqa: E402
from stripe_pipeline.db.engine import make_engine  # noqa: E402
from tests.support.receiver_process import start_receiver  # noqa: E402

SECRET = "whsec_latency_benchmark"


def customer_event(n: int) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": f"evt_latency_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": "customer.created",
        "api_version": "2025-03-31.basil",
        "created": now,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {
            "object": {
                "id": f"cus_latency_{n}_{uuid.uuid4().hex[:8]}",
                "object": "customer",
                "created": now,
                "email": f"latency{n}@example.com",
                "name": None,
                "livemode": False,
            }
        },
    }


class AppDatabase:
    """A fresh migrated app database: PostgreSQL when reachable, else a SQLite file."""

    def __init__(self, workdir: Path, backend: str) -> None:
        self.admin = None
        self.name = None
        if backend == "postgresql":
            self.admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            self.name = f"sp_latency_{uuid.uuid4().hex[:10]}"
            with self.admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
            self.url = PG_ADMIN.rpartition("/")[0] + f"/{self.name}"
        else:
            self.url = f"sqlite:///{workdir / 'app.db'}"
        engine = make_engine(self.url)
        migrate.upgrade(engine)
        engine.dispose()

    def drop(self) -> None:
        if self.admin is not None:
            with self.admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self.admin.dispose()


def start_dagster_dev(
    workdir: Path, database_url: str, sensor_interval: int, linger: float
) -> subprocess.Popen:
    home = workdir / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "dagster.dev.yaml", home / "dagster.yaml")
    workspace = workdir / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - python_module:\n"
        "      module_name: stripe_pipeline.definitions\n"
        "      attribute: defs\n"
        f"      working_directory: {ROOT}\n"
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "STRIPE_PIPELINE_DATABASE_URL": database_url,
        "STRIPE_PIPELINE_DATA_DIR": str(workdir / "data"),
        "STRIPE_PIPELINE_SENSOR_INTERVAL": str(sensor_interval),
        "STRIPE_PIPELINE_LINGER_SECONDS": str(linger),
        "PYTHONPATH": str(ROOT),
    }
    dagster = Path(sys.executable).with_name("dagster")
    cmd = [str(dagster), "dev", "-w", str(workspace), "-h", "127.0.0.1"]
    cmd += ["-p", str(free_port())]
    log = open(workdir / "dagster_dev.log", "wb")  # noqa: SIM115 - lives as long as the child
    return subprocess.Popen(
        cmd, cwd=workdir, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
    )


def wait_for_row(engine, customer_id: str, timeout: float) -> float | None:
    """Monotonic time the customer row became visible (polled every 50 ms)."""
    deadline = time.monotonic() + timeout
    query = text("SELECT 1 FROM stripe_customers WHERE stripe_customer_id = :id")
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query, {"id": customer_id}).first():
                return time.monotonic()
        time.sleep(0.05)
    return None


def retried_events(engine) -> int:
    """Events that needed more than one attempt (a retry shows up as latency)."""
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM stripe_events WHERE retry_count > 0")
        ).scalar_one()


def measure(receiver, engine, events: int, spacing: float, timeout: float) -> list[float]:
    """POST events ``spacing`` s apart; each latency runs from its POST to its row."""
    latencies: list[float | None] = [None] * events
    threads = []

    def track(i: int, sent: float, customer_id: str) -> None:
        seen = wait_for_row(engine, customer_id, timeout)
        latencies[i] = None if seen is None else seen - sent

    for i in range(events):
        event = customer_event(i)
        sent = time.monotonic()
        response = receiver.post_event(event)
        if response.status_code != 200:
            raise RuntimeError(f"receiver answered {response.status_code}: {response.text}")
        t = threading.Thread(target=track, args=(i, sent, event["data"]["object"]["id"]))
        t.start()
        threads.append(t)
        time.sleep(spacing)
    for t in threads:
        t.join()
    lost = sum(1 for x in latencies if x is None)
    if lost:
        raise RuntimeError(f"{lost} event(s) not processed within {timeout} s")
    return [x for x in latencies if x is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=1.5, help="seconds between POSTs")
    parser.add_argument("--sensor-interval", type=int, default=5)
    parser.add_argument(
        "--linger", type=float, default=0.0, help="STRIPE_PIPELINE_LINGER_SECONDS for the runs"
    )
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--startup-timeout", type=float, default=180)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sp-latency-"))
    db = AppDatabase(workdir, args.backend)
    engine = make_engine(db.url)
    receiver = dagster = None
    try:
        receiver = start_receiver(db.url, SECRET)
        dagster = start_dagster_dev(workdir, db.url, args.sensor_interval, args.linger)
        started = time.monotonic()
        # warm-up: the first event waits for the code location, daemon and first tick
        warm = customer_event(-1)
        receiver.post_event(warm).raise_for_status()
        seen = wait_for_row(engine, warm["data"]["object"]["id"], args.startup_timeout)
        if seen is None:
            tail = (workdir / "dagster_dev.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"dagster dev processed nothing in time; log tail:\n{tail}")
        print(f"warm-up: first event processed {seen - started:.1f} s after start", flush=True)

        latencies = measure(receiver, engine, args.events, args.spacing, timeout=120)
        result = {
            "benchmark": "webhook_post_to_domain_row",
            "backend": args.backend,
            "events": len(latencies),
            "spacing_s": args.spacing,
            "sensor_interval_s": args.sensor_interval,
            "linger_s": args.linger,
            "p50_s": round(statistics.median(latencies), 2),
            "p95_s": round(percentile(latencies, 0.95), 2),
            "min_s": round(min(latencies), 2),
            "max_s": round(max(latencies), 2),
            "mean_s": round(statistics.fmean(latencies), 2),
            "target_p50_s": 10,
            "latencies_s": [round(x, 2) for x in latencies],  # in POST order
            "events_retried": retried_events(engine),
        }
        print(
            f"POST -> domain row over {len(latencies)} events: p50 {result['p50_s']} s, "
            f"p95 {result['p95_s']} s, min {result['min_s']} s, max {result['max_s']} s, "
            f"events retried {result['events_retried']}"
        )
        print("latencies in POST order (s):", result["latencies_s"])
        print(json.dumps(result))
    finally:
        if dagster is not None and dagster.poll() is None:
            os.killpg(dagster.pid, signal.SIGKILL)  # it ignores SIGINT/SIGTERM in background
            dagster.wait(timeout=30)
        if receiver is not None:
            receiver.stop()
        engine.dispose()
        db.drop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
