"""The lister and the shared rate limit over HTTP, across real processes.

Peers: the Stripe-shaped fake list API (``tests/support/fake_stripe_server.py``) on
127.0.0.1, with Stripe's rate limits scaled down so the tests stay short (it answers
429 beyond them and logs every request), and the app database on both backends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import stripe
from sqlalchemy import text

from stripe_pipeline.stripe_api.client import StripeApi, encode_params
from stripe_pipeline.stripe_api.listing import (
    DatabaseListingProgress,
    ListingRequest,
    SlicedLister,
)
from stripe_pipeline.stripe_api.ratelimit import RateLimiter
from tests.support.fake_stripe_data import DataSet
from tests.support.fake_stripe_server import FakeStripeServer, max_in_any_window

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
START, END = 1_700_000_000, 1_700_000_000 + 30 * 86_400
KEY = "sk_live_listing_test"


def worker(mode: str, args: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.listing_worker", mode, json.dumps(args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def result(proc: subprocess.Popen, timeout: float = 120) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_list_page_decodes_once_and_passes_params(engine) -> None:
    data = DataSet.generate({"subscriptions": 250}, start=START, end=END)
    with FakeStripeServer(data, latency=0.0) as fake:
        api = StripeApi(KEY, api_base=fake.base_url, requests_per_second=500, audit_engine=engine)
        lister = SlicedLister(api.list_page, workers=4)
        listed = Counter(
            o["id"] for o in lister.list("subscriptions", START, END, params={"status": "all"})
        )
        api.flush_audit()
    assert listed == Counter(data.visible_ids("subscriptions"))
    assert all(e.params["status"] == "all" and "created[gte]" in e.params for e in fake.log)
    assert api.calls == len(fake.log) == lister.stats.calls
    with engine.connect() as conn:
        audited = conn.execute(
            text("SELECT count(*) FROM audit_log WHERE action = 'stripe_api_call'")
        ).scalar_one()
    assert audited == len(fake.log)


def test_params_are_encoded_as_stripe_expects() -> None:
    assert encode_params(
        {
            "limit": 100,
            "created": {"gte": 1, "lte": 2},
            "expand": ["data.customer", "data.invoice"],
            "status": "all",
            "livemode": False,
            "starting_after": None,
        }
    ) == [
        ("limit", "100"),
        ("created[gte]", "1"),
        ("created[lte]", "2"),
        ("expand[0]", "data.customer"),
        ("expand[1]", "data.invoice"),
        ("status", "all"),
        ("livemode", "false"),
    ]


def test_errors_keep_the_library_classes() -> None:
    data = DataSet.generate({"charges": 5}, start=START, end=END)
    with FakeStripeServer(data, latency=0.0) as fake:
        api = StripeApi(KEY, api_base=fake.base_url, requests_per_second=500)
        with pytest.raises(stripe.InvalidRequestError) as missing:
            api.list_page("/v1/charges", {"limit": 100, "starting_after": "ch_unknown"})
        assert missing.value.http_status == 400 and "No such charge" in str(missing.value)
        fake.app.fail_next(2, status=500)
        assert len(api.list_page("/v1/charges", {"limit": 100})["data"]) == 5  # retried
        assert [e.status for e in fake.log[-3:]] == [500, 500, 200]


def test_a_429_cools_every_client_down_for_retry_after() -> None:
    """Two clients on one limiter: a 429 seen by one holds the other back too."""
    data = DataSet.generate({"charges": 5, "refunds": 5}, start=START, end=END)
    with FakeStripeServer(data, latency=0.0, account_rate=2) as fake:
        limiter = RateLimiter.in_process(KEY, account_rate=50, endpoint_rate=50)
        first = StripeApi(KEY, api_base=fake.base_url, limiter=limiter)
        second = StripeApi(KEY, api_base=fake.base_url, limiter=limiter)

        def second_client() -> None:
            # once the first client has seen its 429 (not when the fake sent it: the
            # answer may still be on its way, and the cool-down starts when it arrives)
            while limiter.stats.cooldowns < 1:
                time.sleep(0.001)
            second.list_page("/v1/refunds", {"limit": 1})  # another endpoint, same account

        other = threading.Thread(target=second_client)
        other.start()
        for _ in range(3):  # the fake allows 2 per second: the third is answered 429
            first.list_page("/v1/charges", {"limit": 1})
        other.join(10)
    log = fake.log
    rejected = [e for e in log if e.status == 429]
    assert len(rejected) == 1 and limiter.stats.cooldowns == 1
    assert [e.status for e in log].count(200) == 4  # the retry and the other client served
    # after the 429 nobody asked again before its Retry-After (1 s) had passed
    assert all(e.at >= rejected[0].at + 0.95 for e in log if e.at > rejected[0].at)


def test_processes_share_one_budget_and_payments_are_not_starved(database_url: str) -> None:
    """Two backfill processes saturate the shared budget; a third pays invoices meanwhile."""
    account_rate, endpoint_rate = 20, 8
    data = DataSet.generate(
        {"charges": 3000, "invoices": 3000, "refunds": 3000, "customers": 3000},
        start=START,
        end=END,
    )
    with FakeStripeServer(
        data, latency=0.05, account_rate=account_rate, endpoint_rate=endpoint_rate
    ) as fake:
        common = {
            "database_url": database_url,
            "api_base": fake.base_url,
            "account_rate": account_rate,
            "endpoint_rate": endpoint_rate,
            "start": START,
            "end": END,
        }
        backfills = [
            worker("backfill", {**common, "resources": {"charges": {}, "invoices": {}}}),
            worker("backfill", {**common, "resources": {"refunds": {}, "customers": {}}}),
        ]
        deadline = time.monotonic() + 60
        while len(fake.log) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)  # the backfills are under way
        payer = worker("recover", {**common, "payments": 5})
        paid = result(payer)
        listed = [result(p) for p in backfills]
        log = fake.log
    assert [c["status"] for c in paid["calls"]] == ["paid"] * 5
    for out, names in zip(listed, (("charges", "invoices"), ("refunds", "customers")), strict=True):
        assert sorted(out["seen"].values()) == [3000, 3000], names
    # no 1-second window over either limit across the three processes, as the fake
    # stamps arrivals. A test run shares two cores with other tests: a thread descheduled
    # between its slot and its send (or the fake's loop stalling, stamping arrivals
    # together) may put one request into the next window, which the fake answers 429 and
    # the client retries after Retry-After; the benchmark measures this on a quiet machine
    overshoot = [e.status for e in log].count(429)
    assert overshoot <= max(1, len(log) // 200), f"{overshoot} 429s in {len(log)} requests"
    assert max_in_any_window(e.at for e in log) <= account_rate + overshoot
    for endpoint in {e.endpoint for e in log}:
        window = max_in_any_window(e.at for e in log if e.endpoint == endpoint)
        assert window <= endpoint_rate + overshoot, endpoint
    # every payment went through while the backfills were still listing
    bulk = [e.at for e in log if e.method == "GET"]
    payments = [e.at for e in log if e.method == "POST"]
    assert len(payments) == 5
    assert min(bulk) < min(payments) and max(payments) < max(bulk)


def test_a_killed_run_resumes_from_its_completed_slices(database_url: str) -> None:
    data = DataSet.generate({"charges": 6000, "subscriptions": 3000}, start=START, end=END)
    resources = {"charges": {}, "subscriptions": {"status": "all"}}
    from stripe_pipeline.db.engine import make_engine

    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE listed_objects (listing VARCHAR(1000), object_id VARCHAR(64))")
        )
    args = {
        "database_url": database_url,
        "account_rate": 1000,
        "endpoint_rate": 1000,
        "start": START,
        "end": END,
        "resources": resources,
        "run_key": "backfill-test",
        "workers": 6,  # more than one listing's slices: a held listing blocks no other
        "max_slices": 3,
    }

    def count(sql: str) -> int:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar_one()

    try:
        with FakeStripeServer(data, latency=0.03, account_rate=10_000) as fake:
            args["api_base"] = fake.base_url
            # charges stop after 20 of their 60 pages, so the first run can never
            # finish; subscriptions (3 workers of their own) list to the end
            fake.app.hold_after(20, path_prefix="/v1/charges")
            first = worker("list", args)
            deadline = time.monotonic() + 60
            subscriptions = "SELECT count(*) FROM listed_objects WHERE listing LIKE '%subscr%'"
            while time.monotonic() < deadline and count(subscriptions) < 3000:
                time.sleep(0.01)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            assert first.returncode == -signal.SIGKILL  # killed mid-listing, not finished
            progress = DatabaseListingProgress(engine)
            keys = [
                ListingRequest.resource(n, START, END, params=p).listing_key
                for n, p in resources.items()
            ]
            done = {k: [r for r in progress.load("backfill-test", k) if r.done] for k in keys}
            listed_before = count("SELECT count(*) FROM listed_objects")
            assert 0 < listed_before < 9000 and any(done.values())
            fake.release()
            time.sleep(0.2)  # the dead run's held requests are answered to nobody
            requests_before = len(fake.log)

            second = result(worker("list", args))
            later = fake.log[requests_before:]
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT object_id FROM listed_objects")).scalars().all()
        listed = Counter(rows)
        expected = Counter(data.visible_ids("charges")) + Counter(data.visible_ids("subscriptions"))
        assert listed == expected  # every object exactly once across the two runs
        assert second["skipped_slices"] == sum(len(v) for v in done.values())
        for entry in later:  # completed slices were not listed again
            lo, hi = int(entry.params["created[gte]"]), int(entry.params["created[lte]"])
            key = next(k for k in keys if k.startswith(entry.endpoint.split(" ")[1]))
            assert all(hi < r.gte or lo > r.lte for r in done[key])
    finally:
        engine.dispose()
