"""Reconciliation benchmark: N local objects against a local Stripe-shaped API server.

For each size (10,000 and 100,000 local objects across payments, refunds, disputes,
subscriptions and invoices) it:

1. creates a fresh migrated database (PostgreSQL by default, ``--sqlite`` for the
   embedded backend) and fills it in a helper process, built with the processing
   parsers from the same deterministic objects the server holds;
2. starts a small aiohttp server on 127.0.0.1 in its own process: pre-rendered list
   pages of 100, newest first, ``starting_after`` / ``has_more``, per-resource counts;
3. injects differences: objects only in Stripe, rows only local, changed fields;
4. runs one full reconciliation (the real ``StripeApi`` client, rate limit raised
   for the local server) in a separate child process, so its peak RSS is its own.

Prints objects/s, API calls made vs ceil(n/100) per listed resource, peak RSS, and
discrepancies found vs injected; the last line is JSON.

    .venv/bin/python benchmarks/reconciliation.py [--sizes 10000 100000] [--sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.shared import free_port, fresh_database, peak_rss_mb  # noqa: E402

BASE_TIME = 1_790_000_000
SHARES = {"payment": 0.40, "refund": 0.15, "dispute": 0.05, "subscription": 0.20, "invoice": 0.20}
PREFIX = {"payment": "pi", "refund": "re", "dispute": "dp", "subscription": "sub", "invoice": "in"}
# which listings each object type is read from
LISTINGS = {
    "payment": ("payment_intents", "charges"),
    "refund": ("refunds",),
    "dispute": ("disputes",),
    "subscription": ("subscriptions",),
    "invoice": ("invoices",),
}
# field changed locally for a field_mismatch injection, and how
MISMATCH = {
    "payment": ("status", "processing"),
    "refund": ("status", "pending"),
    "dispute": ("status", "needs_response"),
    "subscription": ("status", "past_due"),
    "invoice": ("amount_paid_minor", 1),
}


# --- the deterministic data set ---------------------------------------------------------


def counts(n: int) -> dict[str, int]:
    """Local objects per type (before injected differences), summing to n."""
    out = {t: int(n * share) for t, share in SHARES.items()}
    out["payment"] += n - sum(out.values())
    return out


def injections(n: int) -> dict[str, dict[str, set[int]]]:
    """Per type, indexes of objects only in Stripe, only local, and with a changed field.

    Objects only in Stripe are extra indexes past the local count; the other two pick
    spread-out local indexes (0.5 % of each type each).
    """
    out = {}
    for object_type, count in counts(n).items():
        k = max(1, count // 200)
        step = max(1, count // (2 * k))
        picks = list(range(0, count, step))[: 2 * k]
        out[object_type] = {
            "missing_locally": set(range(count, count + k)),
            "missing_in_stripe": set(picks[:k]),
            "field_mismatch": set(picks[k : 2 * k]),
            # payments also get a refunded amount changed locally (found via charges)
            "refund_mismatch": set(picks[k : 2 * k][: k // 2])
            if object_type == "payment"
            else set(),
        }
    return out


def object_id(object_type: str, i: int) -> str:
    return f"{PREFIX[object_type]}_bench{i:08d}"


def remote_objects(object_type: str, i: int) -> dict[str, list[dict[str, Any]]]:
    """Stripe-shaped objects of index i, by listed resource."""
    created = BASE_TIME + i
    oid = object_id(object_type, i)
    amount = 1000 + (i % 97) * 10
    if object_type == "payment":
        charge = f"ch_bench{i:08d}"
        return {
            "payment_intents": [
                {
                    "id": oid,
                    "object": "payment_intent",
                    "amount": amount,
                    "amount_received": amount,
                    "currency": "usd",
                    "status": "succeeded",
                    "customer": f"cus_bench{i % 1000:05d}",
                    "latest_charge": charge,
                    "created": created,
                    "livemode": False,
                }
            ],
            "charges": [
                {
                    "id": charge,
                    "object": "charge",
                    "payment_intent": oid,
                    "amount": amount,
                    "amount_captured": amount,
                    "amount_refunded": amount // 4 if i % 5 == 0 else 0,
                    "currency": "usd",
                    "status": "succeeded",
                    "paid": True,
                    "captured": True,
                    "created": created,
                    "livemode": False,
                }
            ],
        }
    if object_type in ("refund", "dispute"):
        obj: dict[str, Any] = {
            "id": oid,
            "object": object_type,
            "amount": amount,
            "currency": "usd",
            "charge": f"ch_bench{i:08d}",
            "payment_intent": f"pi_bench{i:08d}",
            "created": created,
            "livemode": False,
        }
        if object_type == "refund":
            obj["status"] = "succeeded"
        else:
            obj.update(
                status="under_review",
                reason="fraudulent",
                evidence_details={"due_by": created + 7 * 86400, "has_evidence": False},
            )
        return {f"{object_type}s": [obj]}
    if object_type == "subscription":
        return {
            "subscriptions": [
                {
                    "id": oid,
                    "object": "subscription",
                    "status": "active",
                    "customer": f"cus_bench{i % 1000:05d}",
                    "created": created,
                    "livemode": False,
                    "items": {
                        "object": "list",
                        "data": [
                            {
                                "id": f"si_bench{i:08d}",
                                "quantity": 1,
                                "current_period_start": created,
                                "current_period_end": created + 30 * 86400,
                                "price": {
                                    "id": "price_bench",
                                    "currency": "usd",
                                    "unit_amount": 1500,
                                    "product": "prod_bench",
                                    "recurring": {"interval": "month", "interval_count": 1},
                                },
                            }
                        ],
                    },
                }
            ]
        }
    return {
        "invoices": [
            {
                "id": oid,
                "object": "invoice",
                "status": "paid",
                "amount_due": amount,
                "amount_paid": amount,
                "amount_remaining": 0,
                "currency": "usd",
                "customer": f"cus_bench{i % 1000:05d}",
                "created": created,
                "livemode": False,
            }
        ]
    }


def remote_indexes(n: int, object_type: str) -> Iterator[int]:
    inj = injections(n)[object_type]
    for i in range(counts(n)[object_type] + len(inj["missing_locally"])):
        if i not in inj["missing_in_stripe"]:
            yield i


def expected_discrepancies(n: int) -> set[tuple[str, str, str, str]]:
    out = set()
    for object_type, inj in injections(n).items():
        for i in inj["missing_locally"]:
            out.add((object_type, object_id(object_type, i), "missing_locally", ""))
        for i in inj["missing_in_stripe"]:
            out.add((object_type, object_id(object_type, i), "missing_in_stripe", ""))
        field = MISMATCH[object_type][0]
        for i in inj["field_mismatch"]:
            out.add((object_type, object_id(object_type, i), "field_mismatch", field))
        for i in inj["refund_mismatch"]:
            out.add(
                (object_type, object_id(object_type, i), "field_mismatch", "amount_refunded_minor")
            )
    return out


# --- the local API server (its own process) ---------------------------------------------


def serve(n: int, port: int) -> None:
    """Pre-render every page, then answer GET /v1/<resource> like Stripe's list API."""
    from aiohttp import web

    objects: dict[str, list[dict[str, Any]]] = {}
    for object_type in SHARES:
        for i in remote_indexes(n, object_type):
            for resource_name, items in remote_objects(object_type, i).items():
                objects.setdefault(resource_name, []).extend(items)
    pages: dict[str, list[bytes]] = {}
    after: dict[tuple[str, str], int] = {}  # (resource, last id of a page) -> next page
    for resource_name, items in objects.items():
        items.sort(key=lambda o: -o["created"])  # newest first, as Stripe lists
        rendered = []
        for p, start in enumerate(range(0, len(items), 100)):
            chunk = items[start : start + 100]
            rendered.append(
                json.dumps(
                    {
                        "object": "list",
                        "url": f"/v1/{resource_name}",
                        "has_more": start + 100 < len(items),
                        "data": chunk,
                    }
                ).encode()
            )
            after[(resource_name, chunk[-1]["id"])] = p + 1
        pages[resource_name] = rendered
    object_counts = {r: len(items) for r, items in objects.items()}
    del objects
    empty = json.dumps({"object": "list", "has_more": False, "data": []}).encode()
    calls: dict[str, int] = {}

    async def list_handler(request: web.Request) -> web.Response:
        name = request.match_info["resource"]
        calls[name] = calls.get(name, 0) + 1
        if request.query.get("limit", "10") != "100":
            return web.json_response(
                {"error": {"message": "benchmark serves limit=100"}}, status=400
            )
        cursor = request.query.get("starting_after")
        index = 0 if cursor is None else after.get((name, cursor))
        rendered = pages.get(name, [])
        if index is None:
            return web.json_response({"error": {"message": "bad starting_after"}}, status=400)
        body = rendered[index] if index < len(rendered) else empty
        return web.Response(body=body, content_type="application/json")

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response({"calls": calls, "objects": object_counts})

    async def fetch_handler(request: web.Request) -> web.Response:
        """Objects are only listed here: a fetch by id is for a row Stripe lacks (404)."""
        calls["fetch"] = calls.get("fetch", 0) + 1
        error = {"type": "invalid_request_error", "code": "resource_missing"}
        return web.json_response({"error": {**error, "message": "No such object"}}, status=404)

    app = web.Application()
    app.router.add_get("/_stats", stats)
    app.router.add_get("/v1/{resource}", list_handler)
    app.router.add_get("/v1/{resource}/{id}", fetch_handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- filling the local database (helper process) ----------------------------------------


def populate(database_url: str, n: int) -> None:
    """Local rows exactly as processing would build them, minus/plus the injections."""
    from stripe_pipeline.catalog import CATALOG
    from stripe_pipeline.db.engine import make_engine
    from stripe_pipeline.reconcile.parse import row_from_api_object

    engine = make_engine(database_url)
    inj_all = injections(n)
    for object_type, count in counts(n).items():
        spec = CATALOG.by_type[object_type]
        table = spec.table
        inj = inj_all[object_type]
        field, wrong = MISMATCH[object_type]
        batch: list[dict[str, Any]] = []
        for i in range(count):  # local indexes; missing_locally ones are >= count
            listed = remote_objects(object_type, i)
            first_resource = LISTINGS[object_type][0]
            read_as = CATALOG.listings[first_resource][1].read_as
            write = row_from_api_object(
                CATALOG, spec, read_as, listed[first_resource][0], observed_at=0
            )
            values = {c: write.values.get(c) for c in spec.policies}
            if object_type == "payment":
                values["amount_refunded_minor"] = listed["charges"][0]["amount_refunded"]
                if i in inj["refund_mismatch"]:
                    values["amount_refunded_minor"] += 1
            for column, default in spec.insert_defaults.items():
                if values.get(column) is None:
                    values[column] = default
            if i in inj["field_mismatch"]:
                values[field] = wrong
            created = BASE_TIME + i
            batch.append(
                {
                    spec.key: write.key,
                    **values,
                    "last_event_created": created,
                    "last_event_id": f"evt_bench{i:08d}",
                }
            )
            if len(batch) >= 5000:
                _insert_rows(engine, table, batch)
        _insert_rows(engine, table, batch)
    engine.dispose()


def _insert_rows(engine: Any, table: Any, batch: list[dict[str, Any]]) -> None:
    from sqlalchemy import insert

    if batch:
        with engine.begin() as conn:
            conn.execute(insert(table), batch)
        batch.clear()


# --- the measured run (child process) ---------------------------------------------------


def measure(database_url: str, api_base: str, n: int) -> dict[str, Any]:
    from sqlalchemy import text

    from stripe_pipeline.db.engine import make_engine
    from stripe_pipeline.reconcile.run import RunConfig, run_reconciliation
    from stripe_pipeline.stripe_api.client import StripeApi

    engine = make_engine(database_url)
    rss_before = peak_rss_mb()
    api = StripeApi("sk_test_benchmark", api_base=api_base, requests_per_second=2000)
    started = time.perf_counter()
    config = RunConfig(full_run=True, backfill=False, object_types=tuple(SHARES))
    result = run_reconciliation(engine, api, config)
    seconds = time.perf_counter() - started
    with engine.connect() as conn:
        found = {
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT object_type, object_id, kind, field FROM reconciliation_discrepancies "
                    "WHERE run_id = :r"
                ),
                {"r": result.run_id},
            )
        }
    engine.dispose()
    expected = expected_discrepancies(n)
    compared = sum(result.counts["compare"]["listed"].values())
    return {
        "n_local_objects": n,
        "seconds": round(seconds, 2),
        "objects_listed": compared,
        "objects_per_second": round(compared / seconds),
        "api_calls": api.calls,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_imports_mb": rss_before,
        "discrepancies_injected": len(expected),
        "discrepancies_found": len(found),
        "missed": sorted(expected - found)[:5],
        "unexpected": sorted(found - expected)[:5],
        "exact": found == expected,
        "repaired_objects": result.counts["heal"]["repaired_objects"],
    }


# --- orchestration ----------------------------------------------------------------------


def wait_for_server(base: str, timeout: float = 300) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(f"{base}/_stats", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError("benchmark API server did not start")


def run_size(n: int, sqlite: bool, tmp: Path) -> dict[str, Any]:
    import requests

    url, drop = fresh_database(sqlite, tmp)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen([*me, "--serve", str(n), "--port", str(port)], start_new_session=True)
    try:
        t0 = time.perf_counter()
        subprocess.run([*me, "--populate", str(n), "--db", url], check=True)
        populate_s = time.perf_counter() - t0
        wait_for_server(base)
        out = subprocess.run(
            [*me, "--measure", str(n), "--db", url, "--api", base],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            out.check_returncode()
        result = json.loads(out.stdout.strip().splitlines()[-1])
        stats = requests.get(f"{base}/_stats", timeout=10).json()
        expected_calls = {r: max(1, math.ceil(c / 100)) for r, c in stats["objects"].items()}
        listing_calls = {r: c for r, c in stats["calls"].items() if r != "fetch"}
        # each local row no listing returned is fetched once by id before it is reported
        fetches = stats["calls"].get("fetch", 0)
        missing_in_stripe = sum(len(i["missing_in_stripe"]) for i in injections(n).values())
        result["populate_seconds"] = round(populate_s, 1)
        result["api_calls_by_resource"] = listing_calls
        result["api_calls_expected"] = expected_calls
        result["fetches_by_id"] = fetches
        result["api_calls_ok"] = (
            listing_calls == expected_calls
            and fetches == missing_in_stripe
            and result["api_calls"] == sum(expected_calls.values()) + fetches
        )
        return result
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        if drop:
            drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--sqlite", action="store_true", help="embedded SQLite, not PostgreSQL")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--populate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.set_event_loop(asyncio.new_event_loop())
        serve(args.serve, args.port)
        return
    if args.populate:
        populate(args.db, args.populate)
        return
    if args.measure:
        print(json.dumps(measure(args.db, args.api, args.measure)))
        return

    backend = "sqlite" if args.sqlite else "postgresql"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            r = run_size(n, args.sqlite, Path(tmp))
            results.append(r)
            print(
                f"{backend} n={n:>7,}: {r['objects_listed']:,} objects listed in {r['seconds']} s "
                f"= {r['objects_per_second']:,} objects/s; API calls {r['api_calls']} "
                f"(ceil(n/100) per resource: {'yes' if r['api_calls_ok'] else 'NO'}); "
                f"peak RSS {r['peak_rss_mb']} MB (after imports {r['rss_after_imports_mb']} MB); "
                f"discrepancies found {r['discrepancies_found']} / injected "
                f"{r['discrepancies_injected']} ({'exact' if r['exact'] else 'MISMATCH'})",
                flush=True,
            )
    rss = [r["peak_rss_mb"] for r in results]
    summary = {
        "benchmark": "reconciliation",
        "backend": backend,
        "results": results,
        "rss_ratio_largest_to_smallest": round(max(rss) / min(rss), 2),
        "targets_met": all(r["api_calls_ok"] and r["exact"] for r in results)
        and max(rss) <= 2 * min(rss),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
