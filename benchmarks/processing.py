"""Event processing benchmark: the project's set-based runner against a naive ORM loop.

For each backend (PostgreSQL, SQLite) a fresh migrated database is loaded with N
Stripe events (default 100,000) built from Stripe's own example objects
(``tests/data/fixtures3.json``): distinct ids, several events per object through
its lifecycle (payments, charges and refunds, disputes, customers, subscriptions,
invoices, payment methods, plus a few unhandled types), inserted out of order.
Loading uses the fastest bulk path of each backend (COPY; one executemany).

Cases, each in its own child process so its peak RSS is its own:

- ``project``: ``process_pending`` (what the Dagster asset runs) until the queue is
  empty, at N events and at N/4, to show memory is bounded by the batch, not N;
- ``naive``: one SQLAlchemy ORM round trip per event (get the event, get-or-create the
  domain row, set attributes, commit per event) over a subset, rate extrapolated.

    .venv/bin/python benchmarks/processing.py --events 100000

Prints a table, the ratio, and a last line of JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.shared import PG_ADMIN, peak_rss_mb  # noqa: E402

FIXTURES = ROOT / "tests" / "data" / "fixtures3.json"
BASE_TIME = 1_735_689_600  # 2025-01-01


# ---- event generation ----


def _lifecycles(res: dict[str, Any], k: int) -> list[tuple[str, dict[str, Any]]]:
    """Events about object family ``k``: (type, object) in lifecycle order."""
    cus = f"cus_b{k}"
    pi = copy.deepcopy(res["payment_intent"]) | {"id": f"pi_b{k}", "customer": cus}
    charge = copy.deepcopy(res["charge"]) | {
        "id": f"ch_b{k}",
        "payment_intent": pi["id"],
        "customer": cus,
    }
    refund = copy.deepcopy(res["refund"]) | {
        "id": f"re_b{k}",
        "charge": charge["id"],
        "payment_intent": pi["id"],
    }
    dispute = copy.deepcopy(res["dispute"]) | {
        "id": f"dp_b{k}",
        "charge": charge["id"],
        "payment_intent": pi["id"],
    }
    customer = copy.deepcopy(res["customer"]) | {"id": cus}
    sub = copy.deepcopy(res["subscription"]) | {"id": f"sub_b{k}", "customer": cus}
    invoice = copy.deepcopy(res["invoice"]) | {"id": f"in_b{k}", "customer": cus}
    for n, line in enumerate(invoice["lines"]["data"]):  # a line belongs to one invoice
        line.update(id=f"il_b{k}_{n}", invoice=invoice["id"])
    pm = copy.deepcopy(res["payment_method"]) | {"id": f"pm_b{k}", "customer": cus}

    def st(obj: dict[str, Any], **values: Any) -> dict[str, Any]:
        return obj | values

    refunded = st(
        charge,
        refunded=True,
        amount_refunded=charge["amount"],
        refunds={"object": "list", "data": [refund], "has_more": False},
    )
    return [
        ("customer.created", customer),
        ("payment_method.attached", pm),
        ("payment_intent.requires_action", st(pi, status="requires_action")),
        ("payment_intent.payment_failed", st(pi, status="requires_payment_method")),
        ("payment_intent.succeeded", st(pi, status="succeeded", amount_received=pi["amount"])),
        ("charge.succeeded", charge),
        ("charge.refunded", refunded),
        ("charge.dispute.created", st(dispute, status="needs_response")),
        ("charge.dispute.updated", st(dispute, status="under_review")),
        ("charge.dispute.closed", st(dispute, status="lost")),
        ("customer.subscription.created", st(sub, status="trialing")),
        ("customer.subscription.updated", st(sub, status="active")),
        ("invoice.finalized", st(invoice, status="open")),
        ("invoice.payment_failed", st(invoice, status="open")),
        ("invoice.paid", st(invoice, status="paid")),
        ("customer.updated", st(customer, name=f"Customer {k}")),
        ("balance.available", {"id": f"bal_b{k}", "object": "balance"}),
    ]


def generate(n: int, seed: int = 7) -> list[tuple[str, str, str, int, str]]:
    """n events as (stripe_event_id, type, object_id, created, payload JSON), shuffled."""
    res = json.loads(FIXTURES.read_text())["resources"]
    rng = random.Random(seed)
    out: list[tuple[str, str, str, int, str]] = []
    k = 0
    while len(out) < n:
        for step, (etype, obj) in enumerate(_lifecycles(res, k)):
            if len(out) >= n:
                break
            created = BASE_TIME + k * 3 + step * 60
            eid = f"evt_b{k}_{step}"
            doc = {
                "id": eid,
                "object": "event",
                "type": etype,
                "api_version": "2024-06-20",
                "created": created,
                "livemode": False,
                "data": {"object": obj},
            }
            out.append((eid, etype, obj["id"], created, json.dumps(doc, separators=(",", ":"))))
        k += 1
    rng.shuffle(out)  # delivered out of order
    return out


# ---- databases ----


def create_database(backend: str, workdir: Path) -> str:
    from sqlalchemy import create_engine, text

    from stripe_pipeline.db import migrate
    from stripe_pipeline.db.engine import make_engine

    if backend == "sqlite":
        url = f"sqlite:///{workdir / f'bench_{uuid.uuid4().hex[:8]}.db'}"
    else:
        name = f"bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def drop_database(url: str) -> None:
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def bulk_load(url: str, events: list[tuple[str, str, str, int, str]]) -> float:
    """Insert events as pending with COPY (PostgreSQL) or one executemany (SQLite)."""
    from stripe_pipeline.db.engine import make_engine

    engine = make_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        raw = conn.connection.driver_connection
        if engine.dialect.name == "postgresql":
            cols = "stripe_event_id, event_type, object_id, stripe_created, payload, api_version"
            with raw.cursor() as cur, cur.copy(f"COPY stripe_events ({cols}) FROM STDIN") as copy_:
                for row in events:
                    copy_.write_row((*row, "2024-06-20"))
        else:
            cur = raw.cursor()
            cur.executemany(
                "INSERT INTO stripe_events (stripe_event_id, event_type, object_id, "
                "stripe_created, payload, api_version) VALUES (?, ?, ?, ?, ?, '2024-06-20')",
                events,
            )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE stripe_events")
    engine.dispose()
    return time.perf_counter() - started


# ---- child processes (one per case, for an honest peak RSS) ----


def cpu_calibration_seconds() -> float:
    """Seconds for a fixed pure-Python loop (best of 3): how fast this machine's cores are.

    Absolute events/s differ between machines (the same code measured 3x apart on two
    sessions' machines); this number lets runs on different machines be compared.
    """
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(5_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_project(url: str, batch_size: int, threads: int = 1) -> dict[str, Any]:
    from stripe_pipeline.db.engine import make_engine
    from stripe_pipeline.pipeline import build_processor  # import cost outside the timing
    from stripe_pipeline.process.backoff import RetryPolicy
    from stripe_pipeline.process.runner import process_pending
    from stripe_pipeline.support.notify import LogNotifier

    engine = make_engine(url)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    rss_before, cpu_before, wall_start = peak_rss_mb(), _cpu_s(), time.time()
    # what `stripe-pipeline process` runs: the catalog with dunning, notifications logged
    processor = build_processor(LogNotifier())
    report = process_pending(
        engine,
        processor=processor,
        policy=RetryPolicy(),
        batch_size=batch_size,
        workers=threads,
    )
    meta = report.as_metadata()
    return {
        "wall_start": wall_start,
        "wall_end": time.time(),
        "client_cpu_s": _cpu_s() - cpu_before,
        "events": report.claimed,
        "seconds": report.duration_seconds,
        "events_per_s": report.claimed / report.duration_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss_before,
        "processed": report.processed,
        "ignored": report.ignored,
        "failures": report.retries_scheduled + report.dead_lettered,
        "rows_written": meta["rows_written"],
    }


def child_naive(url: str, limit: int) -> dict[str, Any]:
    """One ORM round trip per event, commit per event: the loop most tutorials show."""
    from datetime import UTC, datetime

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from stripe_pipeline.db import models as m
    from stripe_pipeline.db.engine import make_engine

    engine = make_engine(url)
    with Session(engine) as session:
        ids = session.scalars(
            select(m.StripeEvent.id)
            .where(m.StripeEvent.status == "pending")
            .order_by(m.StripeEvent.stripe_created)
            .limit(limit)
        ).all()
    rss_before = peak_rss_mb()

    def ts(value: Any) -> datetime | None:
        return datetime.fromtimestamp(value, UTC) if isinstance(value, int) else None

    def ref(value: Any) -> Any:
        return value.get("id") if isinstance(value, dict) else value

    def upsert(session: Session, model: type, key_col: str, key: str, **values: Any) -> None:
        row = session.scalars(select(model).where(getattr(model, key_col) == key)).first()
        if row is None:
            row = model(**{key_col: key})
            session.add(row)
        for name, value in values.items():
            setattr(row, name, value)

    started = time.perf_counter()
    with Session(engine) as session:
        for event_id in ids:
            ev = session.get(m.StripeEvent, event_id)
            obj = ev.payload["data"]["object"]
            kind = obj.get("object")
            ver = {"last_event_id": ev.stripe_event_id, "last_event_created": ev.stripe_created}
            if kind == "payment_intent":
                upsert(
                    session,
                    m.StripePayment,
                    "payment_intent_id",
                    obj["id"],
                    status=obj["status"],
                    amount_minor=obj["amount"],
                    currency=obj["currency"],
                    customer_id=ref(obj.get("customer")),
                    **ver,
                )
            elif kind == "charge":
                upsert(
                    session,
                    m.StripePayment,
                    "payment_intent_id",
                    ref(obj.get("payment_intent")) or obj["id"],
                    charge_id=obj["id"],
                    status=obj["status"],
                    amount_minor=obj["amount"],
                    amount_refunded_minor=obj.get("amount_refunded") or 0,
                    currency=obj["currency"],
                    **ver,
                )
                for refund in (obj.get("refunds") or {}).get("data", []):
                    upsert(
                        session,
                        m.StripeRefund,
                        "stripe_refund_id",
                        refund["id"],
                        payment_intent_id=ref(obj.get("payment_intent")) or obj["id"],
                        amount_minor=refund["amount"],
                        currency=refund["currency"],
                        status=refund["status"],
                        **ver,
                    )
            elif kind == "dispute":
                upsert(
                    session,
                    m.StripeDispute,
                    "stripe_dispute_id",
                    obj["id"],
                    payment_intent_id=ref(obj.get("payment_intent")) or obj["charge"],
                    amount_minor=obj["amount"],
                    currency=obj["currency"],
                    status=obj["status"],
                    reason=obj.get("reason"),
                    due_by=ts((obj.get("evidence_details") or {}).get("due_by")),
                    **ver,
                )
            elif kind == "customer":
                upsert(
                    session,
                    m.StripeCustomer,
                    "stripe_customer_id",
                    obj["id"],
                    email=obj.get("email"),
                    name=obj.get("name"),
                    **ver,
                )
            elif kind == "subscription":
                upsert(
                    session,
                    m.StripeSubscription,
                    "stripe_subscription_id",
                    obj["id"],
                    status=obj["status"],
                    customer_id=ref(obj.get("customer")),
                    trial_end=ts(obj.get("trial_end")),
                    **ver,
                )
            elif kind == "invoice":
                upsert(
                    session,
                    m.StripeInvoice,
                    "stripe_invoice_id",
                    obj["id"],
                    status=obj.get("status"),
                    customer_id=ref(obj.get("customer")),
                    amount_due_minor=obj.get("amount_due"),
                    currency=obj.get("currency"),
                    **ver,
                )
            elif kind == "payment_method":
                card = obj.get("card") or {}
                upsert(
                    session,
                    m.StripePaymentMethod,
                    "stripe_payment_method_id",
                    obj["id"],
                    customer_id=ref(obj.get("customer")),
                    type=obj.get("type"),
                    card_brand=card.get("brand"),
                    card_last4=card.get("last4"),
                    attached=True,
                    **ver,
                )
            ev.status = "processed" if kind != "balance" else "ignored"
            ev.processed_at = datetime.now(UTC)
            session.commit()
    seconds = time.perf_counter() - started
    return {
        "events": len(ids),
        "seconds": seconds,
        "events_per_s": len(ids) / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss_before,
    }


def run_child(*args: str) -> dict[str, Any]:
    return run_children(1, *args)[0]


def run_children(count: int, *args: str) -> list[dict[str, Any]]:
    """``count`` concurrent children (concurrent processing runs share the queue)."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "_child", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(count)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"child {args[0]} failed:\n{err[-4000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def run_parallel(url: str, args: argparse.Namespace, size: int) -> dict[str, Any]:
    results = run_children(args.workers, "project", url, str(args.batch_size))
    seconds = max(r["wall_end"] for r in results) - min(r["wall_start"] for r in results)
    events = sum(r["events"] for r in results)
    assert events == size, f"{events} claimed for {size} events"
    return {
        "workers": args.workers,
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "per_worker_events": [r["events"] for r in results],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
    }


# ---- driver ----


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sizes = sorted({args.events, max(args.batch_size, args.events // 4)}, reverse=True)
    out: dict[str, Any] = {"backend": backend, "project": {}}
    for size in sizes:
        url = create_database(backend, workdir)
        try:
            load_s = bulk_load(url, generate(size))
            result = run_child("project", url, str(args.batch_size), str(args.threads))
            result["load_events_per_s"] = size / load_s
            out["project"][str(size)] = result
        finally:
            drop_database(url)
        print(
            f"{backend:<10} project  N={size:>7}  {result['events_per_s']:>9,.0f} events/s  "
            f"{result['seconds']:7.1f}s  client CPU {result['client_cpu_s']:5.1f}s  peak RSS "
            f"{result['peak_rss_mb']:4.0f} MB (before {result['rss_before_mb']:.0f} MB)  "
            f"load {result['load_events_per_s']:,.0f}/s  failures {result['failures']}",
            flush=True,
        )
    if args.workers > 1 and backend == "postgresql":
        url = create_database(backend, workdir)
        try:
            bulk_load(url, generate(args.events))
            par = run_parallel(url, args, args.events)
        finally:
            drop_database(url)
        out["parallel"] = par
        print(
            f"{backend:<10} project  N={args.events:>7}  {par['events_per_s']:>9,.0f} events/s  "
            f"{par['seconds']:7.1f}s  {par['workers']} concurrent runs, "
            f"events per run {par['per_worker_events']}",
            flush=True,
        )
    url = create_database(backend, workdir)
    try:
        bulk_load(url, generate(args.naive_events))
        naive = run_child("naive", url, str(args.naive_events))
    finally:
        drop_database(url)
    out["naive"] = naive
    print(
        f"{backend:<10} naive    N={naive['events']:>7}  {naive['events_per_s']:>9,.0f} events/s  "
        f"{naive['seconds']:7.1f}s  peak RSS {naive['peak_rss_mb']:6.0f} MB  "
        f"(extrapolated to {args.events:,}: {args.events / naive['events_per_s']:,.0f}s)",
        flush=True,
    )
    main_rate = out["project"][str(args.events)]["events_per_s"]
    out["ratio_vs_naive"] = main_rate / naive["events_per_s"]
    print(f"{backend:<10} ratio project/naive: {out['ratio_vs_naive']:.1f}x", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        mode, url, number = argv[1], argv[2], int(argv[3])
        threads = int(argv[4]) if len(argv) > 4 else 1
        if mode == "project":
            result = child_project(url, number, threads)
        else:
            result = child_naive(url, number)
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--naive-events", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=2_000)
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument(
        "--workers", type=int, default=2, help="also run N concurrent runs (PostgreSQL)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="claim/apply loops inside the one run (process_pending(workers=...), as the "
        "Dagster asset runs it; SQLite always uses one)",
    )
    args = parser.parse_args(argv)
    calibration = cpu_calibration_seconds()
    print(
        f"machine: {os.cpu_count()} CPUs, 5M-iteration Python loop {calibration:.3f}s", flush=True
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_processing_") as tmp:
        for backend in args.backends.split(","):
            results.append(run_backend(backend.strip(), args, Path(tmp)))
    summary = {
        "benchmark": "processing",
        "events": args.events,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "cpu_calibration_s": calibration,
        "results": results,
    }
    summary["machine_load_avg"] = os.getloadavg()
    pg = next((r for r in results if r["backend"] == "postgresql"), None)
    if pg:
        rate = pg["project"][str(args.events)]["events_per_s"]
        summary["targets_met"] = {
            "pg_10k_events_per_s": rate >= 10_000,
            "pg_10x_naive": pg["ratio_vs_naive"] >= 10,
        }
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
