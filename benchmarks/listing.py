"""Listing benchmark: Stripe-speed listing against a Stripe-shaped fake, old and new.

The companion of ``reconciliation.py`` for issue 15: how fast can the pipeline list
what Stripe's rate limit allows? A fake list API (``tests/support/fake_stripe_server.py``)
runs in its own process on 127.0.0.1 with Stripe's behaviour where it matters here:
300 ms per call (``--latency``), 100 requests/s per account and 25 per endpoint
(beyond: 429 with Retry-After), ``created`` filters, cursors, newest first,
``status=all`` for subscriptions, realistic objects (Stripe's fixtures), and a log of
every request. It holds N objects across seven resources, created uniformly over 90
days or skewed (30 % in one burst day, 500 in a single second).

For each size it measures, each case in its own child process (so start-up and peak
RSS are the case's own):

- ``startup``: the new lister over an empty window: the command's fixed cost;
- ``new``: ``SlicedLister`` over every resource at once, rate limit shared through the
  app database (PostgreSQL, or ``--sqlite``), on uniform and on skewed data;
- ``two processes``: two listers at once, resources split between them, one shared
  limit: the fake's log must show no 1-second window over either limit;
- ``old``: ``StripeApi.list_all`` resource after resource (``starting_after``), for
  ``--baseline-seconds`` at most (its rate is constant: it is not run to the end).

It prints objects/s, API calls against the minimum (sum of ceil(n/100) per resource,
and ceil(N/100)), the peak requests in any 1 s window (account and per endpoint, from
the fake's log), 429s, peak RSS, and the wall time less start-up against the
rate-limit bound max(calls / 100, calls of the busiest endpoint / 25). For the two
processes also the peak 1 s window of the clients' own send times: on a loaded
machine the fake's event loop stalls and stamps arrivals together. Also the client
CPU per page of 100 charges (the library's decode before, the lean path now) and how
many grants per second the shared limiter gives one process. RSS is judged flat from
100k objects up (at 10k the lister never reaches its full parallelism, so fewer pages
are in flight). The machine's load average is printed first: on a shared 2-core
machine it moves the wall times more than anything here. Last line JSON.

    .venv/bin/python benchmarks/listing.py [--sizes 10000 100000] [--sqlite]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.shared import free_port, fresh_database, peak_rss_mb  # noqa: E402

API_KEY = "sk_live_benchmark"  # a live-mode key: Stripe's limits are 100/s and 25/s
ACCOUNT_RATE, ENDPOINT_RATE = 100, 25
START = 1_700_000_000
END = START + 90 * 86_400
SHARES = {
    "charges": 0.22,
    "payment_intents": 0.22,
    "invoices": 0.16,
    "subscriptions": 0.12,
    "customers": 0.12,
    "refunds": 0.10,
    "disputes": 0.06,
}
PARAMS = {"subscriptions": {"status": "all"}}  # canceled ones too, as reconciliation lists
SPLIT = (  # the two concurrent processes' resources
    ("charges", "invoices", "customers", "disputes"),
    ("payment_intents", "subscriptions", "refunds"),
)


def counts(n: int) -> dict[str, int]:
    out = {r: int(n * s) for r, s in SHARES.items()}
    out["charges"] += n - sum(out.values())
    return out


# --- child processes ---------------------------------------------------------------------


def child_new(args: dict[str, Any]) -> dict[str, Any]:
    """List every resource of the window with the new lister; count and checksum ids."""
    from stripe_pipeline.db.engine import make_engine
    from stripe_pipeline.stripe_api.client import StripeApi
    from stripe_pipeline.stripe_api.listing import ListingRequest, SlicedLister, paced_by
    from stripe_pipeline.stripe_api.ratelimit import RateLimiter

    engine = make_engine(args["database_url"])
    limiter = RateLimiter.shared(engine, API_KEY)
    api = StripeApi(API_KEY, api_base=args["api_base"], limiter=limiter)
    # as a reconciliation run lists: slices follow the limit and the latency
    lister = SlicedLister(api.list_page, workers=args["workers"], **paced_by(limiter))
    requests = [
        ListingRequest.resource(r, args["start"], args["end"], params=PARAMS.get(r))
        for r in args["resources"]
    ]
    objects, checksum = 0, 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _key, obj in lister.list_many(requests):
        objects += 1
        checksum = (checksum + zlib.crc32(obj["id"].encode())) % (1 << 64)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    limiter.close()
    to_wall = time.time() - time.monotonic()
    sends = [round(t + to_wall, 4) for t in api.call_times] if args.get("send_log") else []
    return {
        "send_times": sends,
        "objects": objects,
        "checksum": checksum,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "cpu_ms_per_page": round(1000 * cpu / max(lister.stats.pages, 1), 2),
        "stats": lister.stats.as_dict(),
        "limiter": {
            "grants": limiter.stats.grants,
            "rounds": limiter.stats.rounds,
            "late_slots": limiter.stats.late_slots,
            "cooldowns": limiter.stats.cooldowns,
        },
        "peak_rss_mb": peak_rss_mb(),
    }


def child_old(args: dict[str, Any]) -> dict[str, Any]:
    """``StripeApi.list_all`` resource after resource, until the time budget runs out."""
    from stripe_pipeline.stripe_api.client import StripeApi

    api = StripeApi(API_KEY, api_base=args["api_base"])  # its in-process limiter: Stripe's
    objects = 0
    t0 = time.perf_counter()
    deadline = t0 + args["budget"]
    for r in args["resources"]:
        for _obj in api.list_all(
            r, created_gte=args["start"], created_lte=args["end"], params=PARAMS.get(r)
        ):
            objects += 1
            if time.perf_counter() > deadline:
                break
        if time.perf_counter() > deadline:
            break
    seconds = time.perf_counter() - t0
    return {
        "objects": objects,
        "seconds": round(seconds, 2),
        "objects_per_second": round(objects / seconds),
        "api_calls": api.calls,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_cpu(args: dict[str, Any]) -> dict[str, Any]:
    """Client CPU per page of 100 realistic charges: the old decode path and the lean one."""
    from stripe_pipeline.stripe_api.client import StripeApi

    api = StripeApi(API_KEY, api_base=args["api_base"], requests_per_second=100_000)
    query = {"limit": 100}

    def old() -> dict:  # what StripeApi did before: the library's request, decoded twice
        response = api._client.raw_request("get", "/v1/charges", **query)
        return json.loads(response.body)

    def new() -> dict:
        return api.list_page("/v1/charges", query)

    out = {}
    for name, call in (("old_library_path", old), ("new_lean_path", new)):
        assert len(call()["data"]) == 100
        cpu0 = time.process_time()
        for _ in range(args["pages"]):
            call()
        out[name] = round(1000 * (time.process_time() - cpu0) / args["pages"], 2)
    out["page_bytes"] = len(json.dumps(new()))
    return out


def child_limiter(args: dict[str, Any]) -> dict[str, Any]:
    """Grants per second one process gets from the shared store when the limit is no object."""
    from stripe_pipeline.db.engine import make_engine
    from stripe_pipeline.stripe_api.ratelimit import RateLimiter, database_store

    engine = make_engine(args["database_url"])
    limiter = RateLimiter(
        database_store(engine),
        account=f"capacity-{uuid.uuid4().hex[:6]}",
        account_rate=1e6,
        endpoint_rate=1e6,
        headroom=1.0,
    )
    out = {}
    for threads in (1, 8, 32):  # waiters in one process: a round grants all that wait
        n = 4800 // threads

        def work(k: int, n: int = n) -> None:
            for _ in range(n):
                limiter.acquire("GET", f"/v1/resource{k}")

        cpu0, t0 = time.process_time(), time.perf_counter()
        pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        seconds = time.perf_counter() - t0
        out[f"threads_{threads}"] = {
            "grants_per_second": round(n * threads / seconds),
            "cpu_ms_per_grant": round(1000 * (time.process_time() - cpu0) / (n * threads), 3),
        }
    limiter.close()
    return out


CHILDREN = {"new": child_new, "old": child_old, "cpu": child_cpu, "limiter": child_limiter}


# --- orchestration -----------------------------------------------------------------------


def spawn(mode: str, args: dict[str, Any]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", mode, json.dumps(args)],
        stdout=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> dict[str, Any]:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {out[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def timed(mode: str, args: dict[str, Any]) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    result = finish(spawn(mode, args))
    return result, time.perf_counter() - t0


class FakeProcess:
    """The fake list API in its own process."""

    def __init__(self, spec: dict[str, Any], latency: float, **limits: float) -> None:

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "tests.support.fake_stripe_server",
            "--spec",
            json.dumps(spec),
            "--port",
            str(self.port),
            "--latency",
            str(latency),
            "--account-rate",
            str(limits.get("account_rate", ACCOUNT_RATE)),
            "--endpoint-rate",
            str(limits.get("endpoint_rate", ENDPOINT_RATE)),
        ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
        self._wait()

    def _wait(self, timeout: float = 600) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.base_url}/_log", timeout=5)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("the fake API did not start")

    def take_log(self) -> list[Any]:
        """The requests since the last call (then forgotten)."""
        import requests

        from tests.support.fake_stripe_server import fetch_log

        log = fetch_log(self.base_url)
        requests.delete(f"{self.base_url}/_log", timeout=30)
        return log

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def traffic(log: list[Any]) -> dict[str, Any]:
    """What the fake saw: calls, 429s, peak 1 s windows, the rate-limit bound."""
    from tests.support.fake_stripe_server import max_in_any_window

    by_endpoint = Counter(e.endpoint for e in log)
    endpoint_times = {ep: [e.at for e in log if e.endpoint == ep] for ep in by_endpoint}
    bound = max(len(log) / ACCOUNT_RATE, max(by_endpoint.values(), default=0) / ENDPOINT_RATE)
    return {
        "api_calls": len(log),
        "status_429": sum(e.status == 429 for e in log),
        "peak_1s_account": max_in_any_window(e.at for e in log),
        "peak_1s_endpoint": max((max_in_any_window(t) for t in endpoint_times.values()), default=0),
        "windows_over_limit": windows_over([e.at for e in log], ACCOUNT_RATE)
        + sum(windows_over(t, ENDPOINT_RATE) for t in endpoint_times.values()),
        "rate_limit_bound_s": round(bound, 2),
    }


def windows_over(times: list[float], limit: float) -> int:
    """Requests that ended a 1-second window holding more than ``limit`` requests."""
    ordered, start, over = sorted(times), 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= 1.0:
            start += 1
        over += end - start + 1 > limit
    return over


def expected(spec: dict[str, Any], resources: tuple[str, ...]) -> tuple[int, int]:
    """Objects and id checksum a complete listing of ``resources`` must produce."""
    from tests.support.fake_stripe_server import dataset_from_spec

    data = dataset_from_spec({**spec, "templates": False})
    n, checksum = 0, 0
    for r in resources:
        res = data.resources[r]
        for i in range(len(res)):
            checksum = (checksum + zlib.crc32(res.object_id(i).encode())) % (1 << 64)
        n += len(res)
    return n, checksum


def min_calls(spec: dict[str, Any], resources: tuple[str, ...]) -> int:
    return sum(max(1, math.ceil(spec["counts"][r] / 100)) for r in resources)


def run_new(
    fake: FakeProcess,
    base_args: dict[str, Any],
    spec: dict[str, Any],
    resources: tuple[str, ...],
    startup_s: float,
) -> dict[str, Any]:
    result, wall = timed("new", {**base_args, "resources": list(resources)})
    n, checksum = expected(spec, resources)
    seen = traffic(fake.take_log())
    minimum = min_calls(spec, resources)
    net = wall - startup_s
    return {
        "objects": result["objects"],
        "exact": result["objects"] == n and result["checksum"] == checksum,
        "wall_s": round(wall, 2),
        "wall_less_startup_s": round(net, 2),
        "objects_per_second": round(result["objects"] / max(net, 1e-9)),
        **seen,
        "min_calls_per_resource": minimum,
        "ceil_n_over_100": math.ceil(n / 100),
        "calls_vs_minimum": round(seen["api_calls"] / minimum, 3),
        "calls_vs_ceil_n": round(seen["api_calls"] / max(1, math.ceil(n / 100)), 3),
        "wall_vs_bound": round(net / max(seen["rate_limit_bound_s"], 1e-9), 3),
        "cpu_ms_per_page": result["cpu_ms_per_page"],
        "peak_rss_mb": result["peak_rss_mb"],
        "lister": result["stats"],
        "limiter_rounds_per_grant": round(
            result["limiter"]["rounds"] / max(result["limiter"]["grants"], 1), 2
        ),
    }


def run_size(n: int, args: argparse.Namespace, db_url: str) -> dict[str, Any]:
    resources = tuple(SHARES)
    base = {"database_url": db_url, "start": START, "end": END, "workers": args.workers}
    out: dict[str, Any] = {"n": n}
    for kind in ("uniform", "skewed"):
        spec = {"counts": counts(n), "kind": kind, "seed": 7, "start": START, "end": END}
        fake = FakeProcess(spec, args.latency)
        try:
            base["api_base"] = fake.base_url
            if kind == "uniform":  # the fixed cost: the median of three empty windows
                empty = {**base, "start": START - 10_000, "end": START - 1}
                walls = sorted(
                    timed("new", {**empty, "resources": list(resources)})[1] for _ in range(3)
                )
                startup = walls[1]
                startup_traffic = traffic(fake.take_log())
                out["startup"] = {
                    "wall_s": round(startup, 2),
                    "runs_s": [round(w, 2) for w in walls],
                    "api_calls": startup_traffic["api_calls"],
                }
            case = run_new(fake, base, spec, resources, startup)
            out[f"new_{kind}"] = case
            print(
                f"n={n:>9,} {kind:>7}: {case['objects']:,} objects "
                f"({'exact' if case['exact'] else 'NOT EXACT'}) in {case['wall_s']} s "
                f"(less start-up {case['wall_less_startup_s']} s) = "
                f"{case['objects_per_second']:,} objects/s; bound {case['rate_limit_bound_s']} s "
                f"-> {case['wall_vs_bound']}x; calls {case['api_calls']} = "
                f"{case['calls_vs_minimum']}x the minimum ({case['min_calls_per_resource']}), "
                f"{case['calls_vs_ceil_n']}x ceil(N/100); peak 1 s {case['peak_1s_account']} "
                f"(endpoint {case['peak_1s_endpoint']}); 429s {case['status_429']}; "
                f"RSS {case['peak_rss_mb']} MB; CPU {case['cpu_ms_per_page']} ms/page",
                flush=True,
            )
            if kind != "uniform":
                continue
            # two processes at once, one shared limit
            t0 = time.perf_counter()
            procs = [
                spawn("new", {**base, "resources": list(part), "send_log": True}) for part in SPLIT
            ]
            results = [finish(p) for p in procs]
            wall = time.perf_counter() - t0
            seen = traffic(fake.take_log())
            # the same windows from the clients' own send times: tells a client that sent
            # too many from a fake whose event loop stalled and stamped arrivals together
            from tests.support.fake_stripe_server import max_in_any_window

            sent = [t for r in results for t in r["send_times"]]
            seen["peak_1s_account_client_side"] = max_in_any_window(sent)
            seen["late_slots"] = sum(r["limiter"]["late_slots"] for r in results)
            n_all, checksum_all = expected(spec, resources)
            out["two_processes"] = {
                "exact": sum(r["objects"] for r in results) == n_all
                and sum(r["checksum"] for r in results) % (1 << 64) == checksum_all,
                "wall_s": round(wall, 2),
                "wall_vs_bound": round((wall - startup) / seen["rate_limit_bound_s"], 3),
                **seen,
            }
            two = out["two_processes"]
            print(
                f"n={n:>9,} two processes: calls {two['api_calls']}, peak 1 s "
                f"{two['peak_1s_account']} (endpoint {two['peak_1s_endpoint']}; the clients' own "
                f"send times: {two['peak_1s_account_client_side']}), windows over "
                f"the limit {two['windows_over_limit']}, 429s {two['status_429']}, "
                f"wall {two['wall_s']} s ({two['wall_vs_bound']}x the bound)",
                flush=True,
            )
            old = finish(
                spawn(
                    "old",
                    {
                        "api_base": fake.base_url,
                        "resources": list(resources),
                        "start": START,
                        "end": END,
                        "budget": args.baseline_seconds,
                    },
                )
            )
            fake.take_log()
            old["projected_seconds_for_n"] = round(n / max(old["objects_per_second"], 1))
            out["old_sequential"] = old
            print(
                f"n={n:>9,} old sequential list_all: {old['objects']:,} objects in "
                f"{old['seconds']} s = {old['objects_per_second']:,} objects/s "
                f"(all {n:,} would take ~{old['projected_seconds_for_n']:,} s); "
                f"speed-up {case_speedup(out)}x",
                flush=True,
            )
        finally:
            fake.stop()
    return out


def case_speedup(out: dict[str, Any]) -> float:
    return round(
        out["new_uniform"]["objects_per_second"]
        / max(out["old_sequential"]["objects_per_second"], 1),
        1,
    )


def cpu_and_limiter(db_url: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = {"counts": {"charges": 100}, "kind": "uniform", "seed": 1}
    fake = FakeProcess(spec, 0.0, account_rate=1e9, endpoint_rate=1e9)
    try:
        cpu = finish(spawn("cpu", {"api_base": fake.base_url, "pages": args.cpu_pages}))
    finally:
        fake.stop()
    print(
        f"client CPU per page of 100 charges ({cpu['page_bytes']:,} bytes): "
        f"old library path {cpu['old_library_path']} ms, lean path {cpu['new_lean_path']} ms",
        flush=True,
    )
    capacity = finish(spawn("limiter", {"database_url": db_url}))
    print(f"shared limiter capacity, one process: {json.dumps(capacity)}", flush=True)
    return {"cpu_ms_per_page": cpu, "limiter_capacity": capacity}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per fake call")
    parser.add_argument("--sqlite", action="store_true", help="share the limit via SQLite")
    parser.add_argument("--workers", type=int, default=96)
    parser.add_argument("--baseline-seconds", type=float, default=60.0)
    parser.add_argument("--cpu-pages", type=int, default=300)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, raw = args.child
        print(json.dumps(CHILDREN[mode](json.loads(raw))), flush=True)
        return

    backend = "sqlite" if args.sqlite else "postgresql"
    load_before = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load_before:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        db_url, drop = fresh_database(args.sqlite, Path(tmp))
        try:
            micro = cpu_and_limiter(db_url, args)
            results = [run_size(n, args, db_url) for n in args.sizes]
        finally:
            if drop:
                drop()
    rss = [r["new_uniform"]["peak_rss_mb"] for r in results]
    # the smallest size may not reach full parallelism (fewer pages in flight), so
    # flatness is judged from 100k objects up when the run has such sizes
    big = [r["new_uniform"]["peak_rss_mb"] for r in results if r["n"] >= 100_000] or rss
    targets = {
        "wall_within_1_3x_bound": all(r["new_uniform"]["wall_vs_bound"] <= 1.3 for r in results),
        "calls_uniform_within_1_1x": all(
            r["new_uniform"]["calls_vs_ceil_n"] <= 1.1 for r in results
        ),
        "calls_skewed_within_2x": all(r["new_skewed"]["calls_vs_ceil_n"] <= 2 for r in results),
        "no_window_over_limit_two_processes": all(
            r["two_processes"]["windows_over_limit"] == 0 for r in results
        ),
        "no_429": all(
            r[c]["status_429"] == 0
            for r in results
            for c in ("new_uniform", "new_skewed", "two_processes")
        ),
        "exact": all(
            r[c]["exact"] for r in results for c in ("new_uniform", "new_skewed", "two_processes")
        ),
        "rss_flat": max(big) <= 1.25 * min(big),
        "cpu_per_page_under_10ms": micro["cpu_ms_per_page"]["new_lean_path"] < 10,
    }
    print(
        json.dumps(
            {
                "benchmark": "listing",
                "limiter_backend": backend,
                "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                "latency_s": args.latency,
                **micro,
                "results": results,
                "rss_ratio_largest_to_smallest": round(max(rss) / min(rss), 2),
                "rss_ratio_from_100k": round(max(big) / min(big), 2),
                "targets": targets,
                "targets_met": all(targets.values()),
            }
        )
    )


if __name__ == "__main__":
    main()
