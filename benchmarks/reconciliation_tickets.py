"""The discrepancy check with thousands of open discrepancies, on one connection.

A reconciliation run can leave thousands of discrepancies open (a corrupted import, a
first run against an old account). ``discrepancies_are_ticketed`` tickets them all in
one transaction on one connection, and closes the tickets once a later run no longer
finds them. For each size this seeds N open discrepancies in a fresh migrated database
and times, in the same process:

- project: the Dagster check (``open_tickets`` / ``resolve_tickets``: multi-row inserts,
  one UPDATE per chunk of keys, one audit insert);
- naive: the per-row loop the check ran before (one INSERT ... ON CONFLICT, one audit
  insert and one UPDATE per discrepancy; one SELECT, UPDATE and audit insert per
  closed ticket), with the partial-index predicate already written as SQL text (with
  a bound parameter it fails on PostgreSQL after about eleven tickets).

    .venv/bin/python benchmarks/reconciliation_tickets.py [--sizes 5000] [--sqlite]

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from processing import cpu_calibration_seconds  # noqa: E402
from sqlalchemy import Connection, Engine, insert, select, text, update  # noqa: E402

from benchmarks.shared import fresh_database  # noqa: E402
from stripe_pipeline.audit import AuditEntry, record  # noqa: E402
from stripe_pipeline.db.engine import make_engine  # noqa: E402
from stripe_pipeline.db.models import (  # noqa: E402
    UNRESOLVED_TICKET,
    ReconciliationDiscrepancy,
    ReconciliationRun,
)
from stripe_pipeline.defs.common.resources import DatabaseResource  # noqa: E402
from stripe_pipeline.defs.reconciliation.checks import discrepancies_are_ticketed  # noqa: E402
from stripe_pipeline.reconcile.heal import DISCREPANCIES, TICKETS, _ticket_request  # noqa: E402


def seed(engine: Engine, n: int) -> int:
    runs, d = ReconciliationRun.__table__, ReconciliationDiscrepancy.__table__
    with engine.begin() as conn:
        run_id = conn.execute(insert(runs).returning(runs.c.id)).scalar_one()
        conn.execute(
            insert(d),
            [
                {
                    "run_id": run_id,
                    "first_seen_run_id": run_id,
                    "object_type": ("subscription", "refund", "payment")[i % 3],
                    "object_id": f"obj_{i}",
                    "kind": "field_mismatch",
                    "field": ("current_period_end", "currency", "status")[i % 3],
                    "local_value": (1795750000 + i, "eur", "processing")[i % 3],
                    "remote_value": (1795760000 + i, "usd", "succeeded")[i % 3],
                }
                for i in range(n)
            ],
        )
    return run_id


def resolve_all(engine: Engine, run_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(update(DISCREPANCIES).values(status="resolved", resolved_run_id=run_id + 1))


# --- the per-row loop the check ran before ----------------------------------------------


def _naive_open(conn: Connection) -> int:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    d = DISCREPANCIES.c
    rows = conn.execute(select(DISCREPANCIES).where(d.status == "open").order_by(d.id)).all()
    for row in rows:
        request = _ticket_request(row)
        values = {
            "issue_type": request.issue_type,
            "dedupe_key": request.dedupe_key,
            "title": request.title,
            "priority": request.priority,
            "payment_intent_id": request.payment_intent_id,
            "subscription_id": request.subscription_id,
            "details": request.details,
            "status": "open",
        }
        ticket_id = conn.execute(
            dialect.insert(TICKETS)
            .values(values)
            .on_conflict_do_nothing(
                index_elements=["dedupe_key"], index_where=text(UNRESOLVED_TICKET)
            )
            .returning(TICKETS.c.id)
        ).scalar_one()
        record(
            conn,
            [AuditEntry("bench", "ticket_opened", "support_ticket", str(ticket_id))],
        )
        conn.execute(
            update(DISCREPANCIES)
            .where(d.id == row.id)
            .values(status="ticketed", ticket_id=ticket_id, updated_at=datetime.now(UTC))
        )
    return len(rows)


def _naive_close(conn: Connection) -> int:
    d, t = DISCREPANCIES.c, TICKETS.c
    ids = conn.execute(
        select(d.ticket_id)
        .select_from(DISCREPANCIES.join(TICKETS, t.id == d.ticket_id))
        .where(d.status == "resolved", t.status != "resolved")
        .distinct()
    ).scalars()
    closed = 0
    for ticket_id in list(ids):
        before = conn.execute(select(TICKETS).where(t.id == ticket_id)).mappings().first()
        now = datetime.now(UTC)
        conn.execute(
            update(TICKETS)
            .where(t.id == ticket_id)
            .values(status="resolved", resolution="auto_closed", resolved_at=now, updated_at=now)
        )
        record(
            conn,
            [
                AuditEntry(
                    "bench",
                    "ticket_resolved",
                    "support_ticket",
                    str(ticket_id),
                    before={"status": before["status"]},
                )
            ],
        )
        closed += 1
    return closed


# --- measuring ---------------------------------------------------------------------------


def _timed(fn) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def measure(case: str, n: int, sqlite: bool, tmp: Path) -> dict[str, Any]:
    url, drop = fresh_database(sqlite, tmp)
    engine = make_engine(url)
    try:
        run_id = seed(engine, n)
        if case == "project":
            database = DatabaseResource(url=url)
            open_s, first = _timed(lambda: discrepancies_are_ticketed(database=database))
            opened = first.metadata["tickets_opened_or_seen_again"].value
            resolve_all(engine, run_id)
            close_s, second = _timed(lambda: discrepancies_are_ticketed(database=database))
            closed = second.metadata["tickets_closed"].value
        else:

            def naive(step):
                with engine.begin() as conn:
                    return step(conn)

            open_s, opened = _timed(lambda: naive(_naive_open))
            resolve_all(engine, run_id)
            close_s, closed = _timed(lambda: naive(_naive_close))
        with engine.connect() as conn:
            open_tickets = conn.execute(
                text("SELECT count(*) FROM payment_support_tickets WHERE status <> 'resolved'")
            ).scalar_one()
        assert opened == n and closed == n and open_tickets == 0, (opened, closed, open_tickets)
        return {
            "case": case,
            "backend": "sqlite" if sqlite else "postgresql",
            "discrepancies": n,
            "ticket_seconds": round(open_s, 3),
            "close_seconds": round(close_s, 3),
            "discrepancies_per_s": round(n / open_s),
        }
    finally:
        engine.dispose()
        if drop is not None:
            drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000])
    parser.add_argument("--sqlite", action="store_true", help="the embedded backend")
    args = parser.parse_args()
    calibration = cpu_calibration_seconds()
    print(f"machine: {os.cpu_count()} CPUs, 5M-iteration Python loop {calibration:.3f}s")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            for case in ("naive", "project"):
                result = measure(case, n, args.sqlite, Path(tmp))
                results.append(result)
                print(
                    f"{result['backend']:10} {case:8} {n:>7,} discrepancies: ticketed in "
                    f"{result['ticket_seconds']:.2f} s ({result['discrepancies_per_s']:,}/s), "
                    f"closed in {result['close_seconds']:.2f} s",
                    flush=True,
                )
    ratios = {
        str(n): round(
            next(r for r in results if r["case"] == "naive" and r["discrepancies"] == n)[
                "ticket_seconds"
            ]
            / next(r for r in results if r["case"] == "project" and r["discrepancies"] == n)[
                "ticket_seconds"
            ],
            1,
        )
        for n in args.sizes
    }
    print(
        json.dumps({"cpu_calibration_s": calibration, "results": results, "ticket_speedup": ratios})
    )


if __name__ == "__main__":
    main()
