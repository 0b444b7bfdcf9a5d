"""Load test of payment recovery: 5,000 failed payments all due at the same moment.

A purpose-built fake of the two Stripe endpoints recovery uses (``POST
/v1/invoices/<id>/pay``) runs in its own process on 127.0.0.1 (aiohttp; localstripe is
far slower and not what is measured here) and records when each request arrived. The
recovery run (``run_due_retries``: database-enforced per-card/customer limits, the
client's shared token bucket) is compared with a naive baseline that pays every due
invoice in a thread pool with no limiter. Printed: attempts/s, the most requests the
server saw in any 1-second window, the worst per-card attempt count; last line JSON.

    .venv/bin/python benchmarks/recovery_load.py [--payments 5000] [--cards 1000] [--rps 100]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests
from sqlalchemy import create_engine, insert, text

from benchmarks.shared import PG_ADMIN, free_port
from stripe_pipeline.db import migrate
from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.db.models import (
    PaymentAttempt,
    PaymentRecoveryAttempt,
    StripePaymentMethod,
)
from stripe_pipeline.recover.limits import AttemptLimits
from stripe_pipeline.recover.retry import run_due_retries
from stripe_pipeline.stripe_api import StripeApi


def _serve(port: int) -> None:
    """The fake Stripe: answers pay like Stripe and remembers each arrival time."""
    from aiohttp import web

    arrivals: list[tuple[float, str]] = []

    async def pay(request: web.Request) -> web.Response:
        invoice = request.match_info["id"]
        arrivals.append((time.time(), invoice))
        return web.json_response({"id": invoice, "object": "invoice", "status": "paid"})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(arrivals)

    async def reset(_: web.Request) -> web.Response:
        arrivals.clear()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/invoices/{id}/pay", pay)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def max_per_window(times: list[float], window: float = 1.0) -> int:
    """Most events in any half-open window ``[t, t + window)``."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def seed(engine, payments: int, cards: int, due: datetime) -> dict[str, str]:
    """Due recoveries spread over ``cards`` cards (one customer per card)."""
    card_of: dict[str, str] = {}
    pms, recoveries = [], []
    for c in range(cards):
        pms.append(
            {
                "stripe_payment_method_id": f"pm_{c}",
                "customer_id": f"cus_{c}",
                "card_fingerprint": f"fp_{c}",
                "type": "card",
                "attached": True,
            }
        )
    for i in range(payments):
        c = i % cards
        card_of[f"in_{i}"] = f"fp_{c}"
        recoveries.append(
            {
                "recovery_key": f"invoice:in_{i}",
                "invoice_id": f"in_{i}",
                "customer_id": f"cus_{c}",
                "payment_method_id": f"pm_{c}",
                "status": "open",
                "recovery_strategy": "retry_later",
                "last_error_type": "insufficient_funds",
                "next_attempt_at": due,
                "amount_minor": 1000,
                "currency": "usd",
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(StripePaymentMethod.__table__), pms)
        conn.execute(insert(PaymentRecoveryAttempt.__table__), recoveries)
    return card_of


def database() -> tuple[str, callable]:
    """A fresh migrated PostgreSQL database, else a SQLite file."""
    try:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"bench_recovery_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        return url, drop
    except Exception:
        path = Path("/tmp") / f"bench_recovery_{uuid.uuid4().hex[:8]}.db"
        return f"sqlite:///{path}", lambda: path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=5000)
    parser.add_argument("--cards", type=int, default=1000)
    parser.add_argument("--rps", type=float, default=100.0, help="API limit (live: 100)")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    port = free_port()
    server = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(f"{base}/_stats", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.05)

    url, drop = database()
    engine = make_engine(url, pool_size=args.workers + 2)
    try:
        migrate.upgrade(engine)
        now = datetime.now(UTC)
        card_of = seed(engine, args.payments, args.cards, now - timedelta(seconds=1))
        limits = AttemptLimits()  # 15 per card per 30 days, 4 per card per day

        # --- the recovery run ---
        api = StripeApi(
            "sk_live_benchmark", api_base=base, requests_per_second=args.rps, audit_engine=engine
        )
        started = time.perf_counter()
        summary = run_due_retries(engine, api, limits=limits, workers=args.workers)
        elapsed = time.perf_counter() - started
        arrivals = requests.get(f"{base}/_stats", timeout=30).json()
        with engine.connect() as conn:
            worst_card_ledger = conn.execute(
                text(
                    "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM payment_attempts "
                    "WHERE decision = 'allowed' GROUP BY card_key) t"
                )
            ).scalar()
            refused = conn.execute(
                text("SELECT count(*) FROM payment_attempts WHERE decision = 'refused'")
            ).scalar()
            audit_rows = conn.execute(
                text("SELECT count(*) FROM audit_log WHERE action = 'stripe_api_call'")
            ).scalar()
        per_card = Counter(card_of[inv] for _, inv in arrivals)
        recovery = {
            "recoveries_due": args.payments,
            "api_attempts": len(arrivals),
            "refused_by_card_limits": refused,
            "seconds": round(elapsed, 2),
            "attempts_per_second": round(len(arrivals) / elapsed, 1),
            "recoveries_processed_per_second": round(summary.claimed / elapsed, 1),
            "max_requests_in_any_1s_window": max_per_window([t for t, _ in arrivals]),
            "worst_per_card_count": max(per_card.values(), default=0),
            "worst_per_card_ledger": worst_card_ledger,
            "api_limit_rps": args.rps,
            "card_daily_cap": 4,
            "audit_rows": audit_rows,
            "outcomes": dict(summary.outcomes),
        }
        print(f"recovery run: {recovery}")

        # --- naive baseline: every due invoice, no limiter, no card limits ---
        requests.post(f"{base}/_reset", timeout=5)
        session_local = __import__("threading").local()

        def pay(invoice: str) -> None:
            session = getattr(session_local, "s", None) or requests.Session()
            session_local.s = session
            session.post(f"{base}/v1/invoices/{invoice}/pay", timeout=30)

        started = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(pay, list(card_of)))
        elapsed = time.perf_counter() - started
        arrivals = requests.get(f"{base}/_stats", timeout=30).json()
        per_card = Counter(card_of[inv] for _, inv in arrivals)
        baseline = {
            "api_attempts": len(arrivals),
            "seconds": round(elapsed, 2),
            "attempts_per_second": round(len(arrivals) / elapsed, 1),
            "max_requests_in_any_1s_window": max_per_window([t for t, _ in arrivals]),
            "worst_per_card_count": max(per_card.values(), default=0),
        }
        print(f"naive baseline: {baseline}")
        within = (
            recovery["max_requests_in_any_1s_window"] <= args.rps
            and recovery["worst_per_card_count"] <= 4
        )
        print(
            json.dumps(
                {
                    "benchmark": "recovery_load",
                    "backend": engine.dialect.name,
                    "recovery": recovery,
                    "baseline": baseline,
                    "within_limits": within,
                }
            )
        )
    finally:
        engine.dispose()
        drop()
        server.terminate()


if __name__ == "__main__":
    assert PaymentAttempt  # the ledger the limits are counted from
    main()
