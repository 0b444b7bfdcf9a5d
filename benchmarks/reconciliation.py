"""Reconciliation benchmark: N objects against a Stripe-shaped API at Stripe's speed limit.

The peer is the shared fake list API (``tests/support/fake_stripe_server.py``, the one
``benchmarks/listing.py`` and the tests use) in its own process on 127.0.0.1: 300 ms
per call (``--latency``), 100 requests/s per account and 25 per endpoint (429 with
Retry-After beyond), ``created`` filters and cursors as Stripe has them, objects
rendered from Stripe's fixtures. N objects across customers, subscriptions (canceled
ones listed with ``status=all``), refunds and disputes, created uniformly over 90 days
or skewed (``--kinds skewed``: 30 % in one burst day, 500 in one second).

For each size and distribution a fresh migrated database (PostgreSQL, or ``--sqlite``)
is filled in a helper process with the rows processing would build from the same
objects, minus and plus injected differences: objects missing locally, changed
fields, and rows Stripe does not know (fetched by id, answered 404). Then, each run in
its own child process (so peak RSS and start-up are its own), with ``repair`` off so
every run finds the same differences:

- ``startup``: a run over an empty window (the command's fixed cost; median of three);
- ``new``: one run through the parallel lister (``prelist``), limit shared through the
  app database (up to N = 20,000 the median of three runs: ``--repeat``);
- ``two processes``: two runs at once over the two halves of the window (as two Dagster
  partitions run), one shared limit: the fake's log must show no 1 s window over it;
- ``old``: the sequential path (``parallel_listing=False``: one page at a time, listing
  after listing), up to ``--old-max`` objects (its rate is constant).

Printed per case: objects/s, list calls against ceil(n/100) per resource (and
ceil(N/100)), fetches by id, peak requests in any 1 s window (account and endpoint,
from the fake's log), 429s, peak RSS, wall time less start-up against the rate-limit
bound max(calls / 100, busiest endpoint's calls / 25), and the discrepancies found
against those injected (none missed, none invented). Last line JSON.

    .venv/bin/python benchmarks/reconciliation.py [--sizes 10000 100000] [--kinds uniform skewed]
        [--sqlite] [--latency 0.3] [--old-max 10000] [--million] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.listing import (  # noqa: E402  (the listing benchmark's fake and traffic)
    ACCOUNT_RATE,
    ENDPOINT_RATE,
    FakeProcess,
    traffic,
)
from benchmarks.shared import fresh_database, peak_rss_mb  # noqa: E402

API_KEY = "sk_live_benchmark"  # live mode: Stripe's limits are 100/s and 25/s per endpoint
START = 1_700_000_000
END = START + 90 * 86_400
MID = START + 45 * 86_400
SHARES = {"customers": 0.25, "subscriptions": 0.30, "refunds": 0.30, "disputes": 0.15}
TYPES = {
    "customers": "customer",
    "subscriptions": "subscription",
    "refunds": "refund",
    "disputes": "dispute",
}
# the field changed locally for a field_mismatch injection, and its wrong value
MISMATCH = {
    "customer": ("delinquent", None),  # None: the opposite of Stripe's value
    "subscription": ("status", "past_due"),
    "refund": ("status", "pending"),
    "dispute": ("status", "lost"),
}
MISSING_LOCALLY_EVERY = 97
MISMATCH_EVERY = 89
UNKNOWN_TO_STRIPE = (
    3  # per type with no deletion marker: rows Stripe answers 404 for (fetched one by one)
)


def counts(n: int) -> dict[str, int]:
    out = {r: int(n * s) for r, s in SHARES.items()}
    out["customers"] += n - sum(out.values())
    return out


def spec_of(n: int, kind: str) -> dict[str, Any]:
    return {"counts": counts(n), "kind": kind, "start": START, "end": END, "seed": 7}


# --- the local rows and the differences ----------------------------------------------


def unknown_ids(object_type: str) -> list[str]:
    """Local rows Stripe never had (only for types reported missing, not deleted)."""
    if object_type not in ("refund", "dispute"):
        return []
    return [f"{object_type[:2]}_unknown{k:06d}" for k in range(UNKNOWN_TO_STRIPE)]


def expected_findings(spec: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    from tests.support.fake_stripe_server import dataset_from_spec

    data = dataset_from_spec({**spec, "templates": False})
    found = set()
    for name, r in data.resources.items():
        t = TYPES[name]
        for i in range(len(r)):
            if i % MISSING_LOCALLY_EVERY == 1:
                found.add((t, r.object_id(i), "missing_locally", ""))
            elif i % MISMATCH_EVERY == 2:
                found.add((t, r.object_id(i), "field_mismatch", MISMATCH[t][0]))
        found.update((t, k, "missing_in_stripe", "") for k in unknown_ids(t))
    return found


def populate(args: dict[str, Any]) -> dict[str, Any]:
    """Rows as processing builds them from the API objects, with the injections."""
    from sqlalchemy import insert

    from stripe_pipeline.catalog import CATALOG
    from stripe_pipeline.db.engine import make_engine
    from stripe_pipeline.reconcile.parse import row_from_api_object
    from tests.support.fake_stripe_server import dataset_from_spec

    data = dataset_from_spec(args["spec"])
    engine = make_engine(args["database_url"])
    rows = 0
    for name, r in data.resources.items():
        spec = CATALOG.by_type[TYPES[name]]
        read_as = spec.listings[0].read_as
        column, wrong = MISMATCH[spec.object_type]
        batch: list[dict[str, Any]] = []
        template_row: dict[str, Any] | None = None

        def flush(batch: list[dict[str, Any]] = batch, table: Any = spec.table) -> None:
            if batch:
                with engine.begin() as conn:
                    conn.execute(insert(table), batch)
                batch.clear()

        for i in range(len(r)):
            if i % MISSING_LOCALLY_EVERY == 1:
                continue
            obj = json.loads(r.render(i))
            write = row_from_api_object(CATALOG, spec, read_as, obj, observed_at=0)
            values = {c: write.values.get(c) for c in spec.policies}
            for c, default in spec.insert_defaults.items():
                if values.get(c) is None:
                    values[c] = default
            if i % MISMATCH_EVERY == 2:
                values[column] = (not values[column]) if wrong is None else wrong
            row = {spec.key: write.key, **values, "last_event_created": obj["created"] - 1}
            row["last_event_id"] = f"evt_bench{i:08d}"
            template_row = template_row or row
            batch.append(row)
            if len(batch) >= 5000:
                flush()
        for k in unknown_ids(spec.object_type):  # created in the window, unknown to Stripe
            assert template_row is not None
            batch.append({**template_row, spec.key: k, "stripe_created": MID})
        rows += len(batch)
        flush()
    engine.dispose()
    return {"rows": rows}


# --- one measured run (child process) ------------------------------------------------


def measure(args: dict[str, Any]) -> dict[str, Any]:
    from sqlalchemy import text

    from stripe_pipeline.db.engine import make_engine
    from stripe_pipeline.reconcile.run import RunConfig, run_reconciliation
    from stripe_pipeline.stripe_api.client import StripeApi
    from stripe_pipeline.stripe_api.ratelimit import RateLimiter

    engine = make_engine(args["database_url"])
    limiter = RateLimiter.shared(engine, API_KEY)
    api = StripeApi(API_KEY, api_base=args["api_base"], limiter=limiter)
    config = RunConfig(
        object_types=tuple(TYPES.values()),
        backfill=False,
        window_start=args["start"],
        window_end=args["end"],
        repair=False,
        parallel_listing=args["parallel"],
    )
    t0 = time.perf_counter()
    result = run_reconciliation(engine, api, config, now=END + 3600)
    seconds = time.perf_counter() - t0
    with engine.begin() as conn:
        found = [
            list(r)
            for r in conn.execute(
                text(
                    "SELECT object_type, object_id, kind, field FROM reconciliation_discrepancies"
                    " WHERE run_id = :r"
                ),
                {"r": result.run_id},
            )
        ]
    limiter.close()
    engine.dispose()
    listed = sum(result.counts["compare"]["listed"].values())
    return {
        "seconds": round(seconds, 2),
        "objects_listed": listed,
        "api_calls_client": api.calls,
        "fetched": sum(result.counts["compare"]["fetched"].values()),
        "listing": result.counts.get("listing", {}),
        "stage_seconds": result.counts.get("seconds", {}),
        "found": found,
        "peak_rss_mb": peak_rss_mb(),
    }


# --- orchestration -------------------------------------------------------------------


def spawn(mode: str, args: dict[str, Any]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", mode, json.dumps(args)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def finish(proc: subprocess.Popen) -> dict[str, Any]:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {out[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def clear_findings(db_url: str) -> None:
    """Each run starts from no discrepancies (repair is off: the rows stay as injected)."""
    from sqlalchemy import text

    from stripe_pipeline.db.engine import make_engine

    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM reconciliation_discrepancies"))
    engine.dispose()


def run_case(
    fake: FakeProcess, db_url: str, windows: list[tuple[int, int]], *, parallel: bool
) -> dict[str, Any]:
    clear_findings(db_url)
    fake.take_log()
    t0 = time.perf_counter()
    procs = [
        spawn(
            "measure",
            {
                "database_url": db_url,
                "api_base": fake.base_url,
                "start": start,
                "end": end,
                "parallel": parallel,
            },
        )
        for start, end in windows
    ]
    results = [finish(p) for p in procs]
    wall = time.perf_counter() - t0
    log = fake.take_log()
    lists = [e for e in log if e.params.get("limit")]
    return {
        "wall_seconds": round(wall, 2),
        "runs": results,
        "traffic": traffic(log),
        "list_calls": Counter(e.endpoint.split("/")[-1] for e in lists if e.status == 200),
        "fetch_calls": sum(1 for e in log if not e.params.get("limit") and e.status != 429),
    }


def median_case(
    fake: FakeProcess, db_url: str, windows: list[tuple[int, int]], repeats: int
) -> dict[str, Any]:
    """The run of median wall time of ``repeats`` (a short run is a few seconds, and this
    machine's noise is a few tenths of one), with every run's wall time."""
    cases = [run_case(fake, db_url, windows, parallel=True) for _ in range(repeats)]
    cases.sort(key=lambda c: c["wall_seconds"])
    return {**cases[len(cases) // 2], "walls": [c["wall_seconds"] for c in cases]}


def summarize(
    case: dict[str, Any], n: int, spec: dict[str, Any], startup: float, expected: set
) -> dict[str, Any]:
    found = {tuple(f) for run in case["runs"] for f in run["found"]}
    minimum = {r: max(1, math.ceil(c / 100)) for r, c in spec["counts"].items()}
    calls = sum(case["list_calls"].values())
    t = case["traffic"]
    net = max(case["wall_seconds"] - startup, 0.01)
    return {
        "objects": n,
        "wall_seconds": case["wall_seconds"],
        "seconds_less_startup": round(net, 2),
        "objects_per_second": round(n / net),
        "list_calls": calls,
        "list_calls_by_resource": dict(case["list_calls"]),
        "min_calls_per_resource": sum(minimum.values()),
        "min_calls_ceil_n": math.ceil(n / 100),
        "calls_ratio": round(calls / sum(minimum.values()), 3),
        "fetches_by_id": case["fetch_calls"],
        "status_429": t["status_429"],
        "peak_1s_account": t["peak_1s_account"],
        "peak_1s_endpoint": t["peak_1s_endpoint"],
        "windows_over_limit": t["windows_over_limit"],
        "rate_limit_bound_s": t["rate_limit_bound_s"],
        "ratio_to_bound": round(net / max(t["rate_limit_bound_s"], 0.01), 2),
        "walls": case.get("walls", [case["wall_seconds"]]),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in case["runs"]),
        "injected": len(expected),
        "found": len(found),
        "missed": len(expected - found),
        "invented": len(found - expected),
        "exact": found == expected,
        "invented_examples": sorted(found - expected)[:3],
        "missed_examples": sorted(expected - found)[:3],
    }


def run_size(n: int, kind: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    spec = spec_of(n, kind)
    expected = expected_findings(spec)
    db_url, drop = fresh_database(args.sqlite, tmp)
    fake = FakeProcess({**spec, "templates": True}, args.latency)
    out: dict[str, Any] = {"n": n, "kind": kind}
    try:
        t0 = time.perf_counter()
        finish(spawn("populate", {"database_url": db_url, "spec": {**spec, "templates": True}}))
        out["populate_seconds"] = round(time.perf_counter() - t0, 1)
        empty_window = [(START - 20 * 86_400, START - 10 * 86_400)]
        # the fixed cost (interpreter, imports, the listing process, one round trip, the
        # run's rows): the median of three, as noisy here as a short run
        startup = statistics.median(
            run_case(fake, db_url, empty_window, parallel=True)["wall_seconds"] for _ in range(3)
        )
        out["startup_seconds"] = startup
        repeats = args.repeat or (3 if n <= 20_000 else 1)
        new = median_case(fake, db_url, [(START, END)], repeats)
        out["new"] = summarize(new, n, spec, startup, expected)
        out["new"]["listing"] = new["runs"][0]["listing"]
        out["new"]["stage_seconds"] = new["runs"][0]["stage_seconds"]
        two = median_case(fake, db_url, [(START, MID), (MID + 1, END)], repeats)
        out["two_processes"] = summarize(two, n, spec, startup, expected)
        if n <= args.old_max:
            old = run_case(fake, db_url, [(START, END)], parallel=False)
            out["old"] = summarize(old, n, spec, startup, expected)
            out["speedup"] = round(
                out["old"]["seconds_less_startup"] / out["new"]["seconds_less_startup"], 1
            )
    finally:
        fake.stop()
        if drop:
            drop()
    return out


def line(label: str, r: dict[str, Any]) -> str:
    return (
        f"  {label:<14} {r['objects_per_second']:>7,} objects/s  {r['seconds_less_startup']:>7} s "
        f"(bound {r['rate_limit_bound_s']} s, x{r['ratio_to_bound']})  list calls "
        f"{r['list_calls']} vs {r['min_calls_per_resource']} (x{r['calls_ratio']}; ceil(N/100) "
        f"{r['min_calls_ceil_n']}) + {r['fetches_by_id']} by id  peak 1 s "
        f"{r['peak_1s_account']}/{ACCOUNT_RATE} acct {r['peak_1s_endpoint']}/{ENDPOINT_RATE} "
        f"endpoint, over limit {r['windows_over_limit']}, 429s {r['status_429']}  RSS "
        f"{r['peak_rss_mb']} MB  found {r['found']}/{r['injected']} "
        f"(missed {r['missed']}, invented {r['invented']})"
        + (f"  median of walls {r['walls']}" if len(r["walls"]) > 1 else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--kinds", nargs="+", default=["uniform", "skewed"])
    parser.add_argument("--million", action="store_true", help="add N = 1,000,000 (long)")
    parser.add_argument("--sqlite", action="store_true", help="embedded SQLite, not PostgreSQL")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per API call")
    parser.add_argument(
        "--old-max", type=int, default=10_000, help="run the sequential path up to this N"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="runs per case, the median reported (default 3 up to N=20,000, else 1)",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, payload = args.child
        fn = {"populate": populate, "measure": measure}[mode]
        print(json.dumps(fn(json.loads(payload)), default=str))
        return
    sizes = [*args.sizes, *([1_000_000] if args.million else [])]
    backend = "sqlite" if args.sqlite else "postgresql"
    print(
        f"load average {os.getloadavg()}; backend {backend}; latency {args.latency} s", flush=True
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for kind in args.kinds:
                r = run_size(n, kind, args, Path(tmp))
                results.append(r)
                print(f"N={n:,} {kind}: start-up {r['startup_seconds']} s", flush=True)
                for label in ("old", "new", "two_processes"):
                    if label in r:
                        print(line(label, r[label]), flush=True)
                print(f"  new run's stages (s): {r['new']['stage_seconds']}", flush=True)
                if "speedup" in r:
                    print(f"  speed-up new vs old: x{r['speedup']}", flush=True)
    print(json.dumps({"backend": backend, "latency": args.latency, "results": results}))


if __name__ == "__main__":
    main()
