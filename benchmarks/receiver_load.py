"""Load benchmark of the webhook receiver against two baselines, under one gunicorn setup.

Cases, each a fresh gunicorn (the receiver's worker class, 2 workers x 4 threads by
default) on 127.0.0.1:

- ``project-postgresql`` / ``project-sqlite``: the real receiver (``receiver.server``),
  on a fresh migrated PostgreSQL database / on the embedded SQLite default;
- ``naive-postgresql``: ``stripe.Webhook.construct_event`` plus one SQLAlchemy ORM
  insert per request, the way most tutorials write it;
- ``hello-world``: a Flask view that returns a constant (the ceiling of the stack);
- ``project-postgresql-gthread`` (not run by default): the real receiver app under
  gunicorn's gthread worker, the worker class before ``receiver.worker`` (which reads
  whole requests in an asyncio loop so slow clients hold no thread): the same app and
  settings, to compare the two workers in one run.

The load comes from a separate process: an asyncio HTTP/1.1 client with keep-alive
connections (one per concurrent sender) posting pre-signed, distinct Stripe events
built from Stripe's own example ``payment_intent`` object. After each run every
acknowledged (2xx) event id is looked up in ``stripe_events``: ``lost`` counts the
acknowledged events that are missing.

    .venv/bin/python benchmarks/receiver_load.py --events 20000

Prints one table row per case and concurrency, the ratios, and a last line of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.shared import PG_ADMIN, free_port, percentile  # noqa: E402

SECRET = "whsec_benchmark_secret"
FIXTURES = ROOT / "tests" / "data" / "fixtures3.json"
WEBHOOK_PATH = "/webhooks/stripe"


# ---------------------------------------------------------------- baseline servers


def hello_app():
    """The ceiling: Flask under the same gunicorn, no verification, no database."""
    from flask import Flask

    app = Flask("hello")

    @app.post(WEBHOOK_PATH)
    def hello():
        return {"received": True}

    return app


def naive_app(database_url: str):
    """What a tutorial receiver does: build Stripe objects, then one ORM insert."""
    import stripe
    from flask import Flask, request
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    from stripe_pipeline.db.engine import make_engine
    from stripe_pipeline.db.models import StripeEvent

    engine = make_engine(database_url, pool_size=8)
    app = Flask("naive")

    @app.post(WEBHOOK_PATH)
    def receive():
        payload = request.get_data()
        try:
            event = stripe.Webhook.construct_event(
                payload, request.headers.get("Stripe-Signature"), SECRET
            )
        except (ValueError, stripe.SignatureVerificationError):
            return {"error": "invalid"}, 400
        with Session(engine) as session:
            session.add(
                StripeEvent(
                    stripe_event_id=event.id,
                    event_type=event.type,
                    api_version=event.api_version,
                    livemode=bool(event.livemode),
                    stripe_created=event.created,
                    object_id=event.data.object.id,
                    payload=json.loads(payload),
                )
            )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return {"received": True, "duplicate": True}
        return {"received": True, "duplicate": False}

    return app


def run_baseline(kind: str, port: int, workers: int, threads: int, database_url: str) -> None:
    """Serve a baseline app under exactly the receiver's gunicorn options (``gthread``: the
    receiver app itself, under gunicorn's gthread worker)."""
    from gunicorn.app.base import BaseApplication

    from receiver.gunicorn_conf import gunicorn_options

    class Baseline(BaseApplication):
        def load_config(self) -> None:
            for key, value in gunicorn_options(
                "127.0.0.1", port, workers, threads, "WARNING"
            ).items():
                if key not in ("child_exit", "worker_exit"):
                    self.cfg.set(key, value)
            if kind == "gthread":
                self.cfg.set("worker_class", "gthread")

        def load(self):
            if kind == "gthread":
                from receiver.app import create_app

                return create_app()
            return hello_app() if kind == "hello" else naive_app(database_url)

    Baseline().run()


# ---------------------------------------------------------------- databases


def create_pg_database() -> str:
    from sqlalchemy import create_engine, text

    from stripe_pipeline.db import migrate
    from stripe_pipeline.db.engine import make_engine

    name = f"sp_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = PG_ADMIN.rpartition("/")[0] + "/" + name
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def drop_pg_database(url: str) -> None:
    from sqlalchemy import create_engine, text

    name = url.rpartition("/")[2]
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def stored_ids(database_url: str, ids: list[str]) -> set[str]:
    from sqlalchemy import select

    from stripe_pipeline.db.engine import make_engine
    from stripe_pipeline.db.models import StripeEvent

    engine = make_engine(database_url)
    found: set[str] = set()
    col = StripeEvent.__table__.c.stripe_event_id
    with engine.connect() as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found.update(conn.execute(select(col).where(col.in_(chunk))).scalars())
    engine.dispose()
    return found


# ---------------------------------------------------------------- load generator


def build_requests(n: int, run_tag: str) -> tuple[list[bytes], list[str]]:
    """Pre-signed HTTP requests for n distinct events (signing is not measured)."""
    from stripe_pipeline.land.signature import sign

    obj = json.loads(FIXTURES.read_text())["resources"]["payment_intent"]
    now = int(time.time())
    requests, ids = [], []
    for i in range(n):
        event_id = f"evt_bench_{run_tag}_{i:07d}"
        event = {
            "id": event_id,
            "object": "event",
            "api_version": "2025-03-31.basil",
            "created": now,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": "payment_intent.succeeded",
            "data": {"object": {**obj, "id": f"pi_{run_tag}_{i}"}},
        }
        body = json.dumps(event).encode()
        head = (
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json; charset=utf-8\r\n"
            f"User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
            f"Stripe-Signature: {sign(body, SECRET, now)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        requests.append(head + body)
        ids.append(event_id)
    return requests, ids


async def _sender(port: int, queue: list[int], requests: list[bytes], out: list[tuple]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while queue:
            index = queue.pop()
            started = time.perf_counter()
            writer.write(requests[index])
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            status = int(status_line.split()[1]) if status_line else 0
            out.append((index, status, time.perf_counter() - started))
            if not status_line:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


def load_worker(port: int, requests: list[bytes], concurrency: int, conn) -> None:
    """Child process: send every request at the given concurrency, report timings."""
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass

    async def main() -> tuple[list[tuple], float]:
        queue = list(range(len(requests)))[::-1]
        out: list[tuple] = []
        started = time.perf_counter()
        await asyncio.gather(*(_sender(port, queue, requests, out) for _ in range(concurrency)))
        return out, time.perf_counter() - started

    out, elapsed = asyncio.run(main())
    conn.send((out, elapsed))
    conn.close()


def run_load(port: int, requests: list[bytes], concurrency: int) -> tuple[list[tuple], float]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=load_worker, args=(port, requests, concurrency, child))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


# ---------------------------------------------------------------- orchestration


def wait_until_up(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def start_server(kind: str, database_url: str, data_dir: Path, workers: int, threads: int):
    port = free_port()
    env = {
        **os.environ,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_PIPELINE_DATA_DIR": str(data_dir),
        "STRIPE_PIPELINE_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if database_url:
        env["STRIPE_PIPELINE_DATABASE_URL"] = database_url
    else:
        env.pop("STRIPE_PIPELINE_DATABASE_URL", None)
    if kind == "project":
        cmd = [sys.executable, "-m", "receiver", "--port", str(port)]
        cmd += ["--workers", str(workers), "--threads", str(threads)]
    else:
        cmd = [sys.executable, __file__, "--serve-baseline", kind, "--port", str(port)]
        cmd += ["--workers", str(workers), "--threads", str(threads)]
    log = open(data_dir / f"{kind}.log", "ab")  # noqa: SIM115 - closed with the server
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
    wait_until_up(port, proc)
    return proc, port, log


def stop_server(proc: subprocess.Popen, log) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user+system) used so far by the live processes of one group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of /proc/pid/stat: process group
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine (every core), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLK_TCK


def measure(case: str, kind: str, database_url: str, args, data_dir: Path) -> list[dict]:
    proc, port, log = start_server(kind, database_url, data_dir, args.workers, args.threads)
    rows = []
    try:
        warm, _ = build_requests(args.warmup, f"w{uuid.uuid4().hex[:6]}")
        run_load(port, warm, 8)
        for concurrency in args.concurrency:
            tag = uuid.uuid4().hex[:8]
            requests, ids = build_requests(args.events, tag)
            cpu0, machine0 = group_cpu_seconds(proc.pid), machine_cpu_seconds()
            out, elapsed = run_load(port, requests, concurrency)
            server_cpu = group_cpu_seconds(proc.pid) - cpu0
            machine_cpu = machine_cpu_seconds() - machine0
            latencies = [r[2] for r in out]
            acked = [ids[r[0]] for r in out if 200 <= r[1] < 300]
            errors = sum(1 for r in out if not 200 <= r[1] < 300)
            lost = None
            if kind != "hello":
                url = database_url or f"sqlite:///{(data_dir / 'stripe_pipeline.db').resolve()}"
                lost = len(set(acked) - stored_ids(url, acked))
            rows.append(
                {
                    "case": case,
                    "concurrency": concurrency,
                    "events": len(out),
                    "acked": len(acked),
                    "errors": errors,
                    "events_per_s": round(len(acked) / elapsed, 1),
                    "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
                    "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
                    "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
                    "lost": lost,
                    "server_cpu_us": round(server_cpu / len(out) * 1e6),
                    "machine_cpu_us": round(machine_cpu / len(out) * 1e6),
                }
            )
            print(format_row(rows[-1]), flush=True)
    finally:
        stop_server(proc, log)
    return rows


def format_row(row: dict) -> str:
    lost = "n/a" if row["lost"] is None else str(row["lost"])
    return (
        f"| {row['case']:<26} | {row['concurrency']:>4} | {row['events_per_s']:>9,.0f} "
        f"| {row['p50_ms']:>7.2f} | {row['p99_ms']:>7.2f} | {row['errors']:>6} | {lost:>4} "
        f"| {row['server_cpu_us']:>7} | {row['machine_cpu_us']:>8} |"
    )


def ratios(rows: list[dict]) -> dict[str, float]:
    by = {(r["case"], r["concurrency"]): r["events_per_s"] for r in rows}
    out = {}
    for (case, conc), rate in by.items():
        if case == "project-postgresql":
            if ("naive-postgresql", conc) in by:
                out[f"project_vs_naive_c{conc}"] = round(rate / by[("naive-postgresql", conc)], 2)
            if ("hello-world", conc) in by:
                out[f"project_vs_hello_c{conc}"] = round(rate / by[("hello-world", conc)], 2)
            if ("project-postgresql-gthread", conc) in by:
                out[f"project_vs_gthread_c{conc}"] = round(
                    rate / by[("project-postgresql-gthread", conc)], 2
                )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["hello-world", "naive-postgresql", "project-postgresql", "project-sqlite"],
    )
    parser.add_argument(
        "--serve-baseline", choices=["hello", "naive", "gthread"], help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve_baseline:
        run_baseline(
            args.serve_baseline,
            args.port,
            args.workers,
            args.threads,
            os.environ.get("STRIPE_PIPELINE_DATABASE_URL", ""),
        )
        return 0

    print(
        f"receiver load: {args.events} events per run, gunicorn with receiver.worker "
        f"({args.workers} workers x {args.threads} threads), {os.cpu_count()} CPUs\n"
        f"| {'case':<26} | conc | events/s  | p50 ms  | p99 ms  | errors | lost "
        f"| srv µs  | total µs |\n"
        f"|{'-' * 28}|------|-----------|---------|---------|--------|------|---------|----------|",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for case in args.cases:
        with tempfile.TemporaryDirectory(prefix="sp-bench-") as tmp:
            data_dir = Path(tmp)
            if case == "hello-world":
                rows += measure(case, "hello", "", args, data_dir)
            elif case == "project-sqlite":
                rows += measure(case, "project", "", args, data_dir)
            else:
                url = create_pg_database()
                try:
                    kind = (
                        "naive"
                        if case.startswith("naive")
                        else "gthread"
                        if case.endswith("-gthread")
                        else "project"
                    )
                    rows += measure(case, kind, url, args, data_dir)
                finally:
                    drop_pg_database(url)
    summary = ratios(rows)
    for key, value in summary.items():
        print(f"{key}: {value}x")
    print(json.dumps({"rows": rows, "ratios": summary}))
    lost = sum(r["lost"] or 0 for r in rows)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
