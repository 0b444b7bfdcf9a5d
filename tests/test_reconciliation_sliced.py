"""Reconciliation through the parallel lister, over HTTP, on both backends.

Peer: the Stripe-shaped fake list API (``tests/support/fake_stripe_server.py``) on
127.0.0.1, serving objects rendered from Stripe's fixtures with ``created`` filters and
cursors as Stripe has them (localstripe refuses ``created`` filters). It has no fetch
by id, so these runs start from empty tables: every listed object is missing locally
and repaired, and a second run must find nothing.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from stripe_pipeline.reconcile.run import RunConfig, run_reconciliation
from stripe_pipeline.stripe_api.client import StripeApi
from tests.support.fake_stripe_data import DataSet, load_templates
from tests.support.fake_stripe_server import FakeStripeServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
START, END = 1_700_000_000, 1_700_000_000 + 30 * 86_400
COUNTS = {"customers": 400, "subscriptions": 700, "disputes": 250, "refunds": 450}
TYPES = {"customers": "customer", "subscriptions": "subscription", "disputes": "dispute"}
TYPES["refunds"] = "refund"
TABLES = {
    "customer": "stripe_customers",
    "subscription": "stripe_subscriptions",
    "dispute": "stripe_disputes",
    "refund": "stripe_refunds",
}


@pytest.fixture(scope="module")
def data() -> DataSet:
    return DataSet.generate(COUNTS, start=START, end=END, templates=load_templates())


@pytest.fixture(autouse=True)
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "spool"
    monkeypatch.setenv("STRIPE_PIPELINE_SPOOL_DIR", str(path))
    return path


def _config(**options) -> RunConfig:
    return RunConfig(
        object_types=tuple(TYPES.values()),
        backfill=False,
        window_start=START,
        window_end=END,
        **options,
    )


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar_one()


def _local_counts(engine: Engine) -> dict[str, int]:
    return {t: _count(engine, f"SELECT count(*) FROM {table}") for t, table in TABLES.items()}


def test_one_run_lists_every_resource_at_once_and_repairs_each_object_once(
    engine: Engine, data: DataSet, spool_dir: Path
) -> None:
    with FakeStripeServer(data, latency=0.02, account_rate=10_000, endpoint_rate=10_000) as fake:
        api = StripeApi("sk_test_sliced", api_base=fake.base_url, requests_per_second=10_000)
        first = run_reconciliation(engine, api, _config(listing_workers=8), now=END + 60)
        log = list(fake.log)
        second = run_reconciliation(engine, api, _config(listing_workers=8), now=END + 60)

    expected = {TYPES[name]: n for name, n in COUNTS.items()}
    assert first.counts["listing"]["objects"] == sum(COUNTS.values())
    assert first.counts["compare"]["found"] == {"missing_locally": sum(COUNTS.values())}
    assert first.counts["heal"]["repaired_objects"] == sum(COUNTS.values())
    assert _local_counts(engine) == expected  # each object stored once
    assert second.counts["compare"]["found"] == {}  # repaired rows equal what Stripe says
    # listed in parallel, every endpoint at once, within twice the minimum of calls
    minimum = sum(math.ceil(n / 100) for n in COUNTS.values())
    assert minimum <= len(log) <= 2 * minimum + 4 * len(COUNTS)
    paths = {entry.endpoint for entry in log}
    assert paths == {f"GET /v1/{name}" for name in COUNTS}
    first_of = {p: min(e.at for e in log if e.endpoint == p) for p in paths}
    last_of = {p: max(e.at for e in log if e.endpoint == p) for p in paths}
    assert max(first_of.values()) < min(last_of.values())  # all endpoints overlapped
    # the run forgets its listing progress and spool files once committed
    assert _count(engine, "SELECT count(*) FROM stripe_listing_slices") == 0
    assert not any(spool_dir.glob("*/*.jsonl"))


def _worker(args: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.reconcile_worker", json.dumps(args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ},
    )


def test_a_killed_run_resumes_from_its_completed_slices(
    engine: Engine, database_url: str, data: DataSet
) -> None:
    with FakeStripeServer(data, latency=0.05, account_rate=10_000, endpoint_rate=10_000) as fake:
        args = {
            "database_url": database_url,
            "api_base": fake.base_url,
            "object_types": list(TYPES.values()),
            "start": START,
            "end": END,
            "workers": 2,
        }
        first = _worker(args)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            _count(engine, "SELECT count(*) FROM stripe_listing_slices WHERE done") < 3
        ):
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        assert first.returncode == -signal.SIGKILL  # killed while listing
        with engine.connect() as conn:
            done = conn.execute(
                text("SELECT listing, gte, lte FROM stripe_listing_slices WHERE done")
            ).all()
        assert done and _count(engine, "SELECT count(*) FROM reconciliation_runs") == 1
        requests_before = len(fake.log)

        second = _worker({**args, "resume": True, "workers": 8})
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 0, out
        counts = json.loads(out.strip().splitlines()[-1])
        later = fake.log[requests_before:]

    assert counts["listing"]["skipped_slices"] >= len(done)
    total = sum(COUNTS.values())
    assert counts["compare"]["found"] == {"missing_locally": total}  # each object once
    assert _local_counts(engine) == {TYPES[name]: n for name, n in COUNTS.items()}
    for entry in later:  # completed slices were not listed again
        params = entry.params
        lo, hi = int(params["created[gte]"]), int(params["created[lte]"])
        path = entry.endpoint.split(" ")[1]
        for listing, gte, lte in done:
            if listing.startswith(path + "?") or listing.startswith(path + " "):
                assert hi < gte or lo > lte, (entry, listing, gte, lte)
    with engine.connect() as conn:
        statuses = conn.execute(text("SELECT status, error FROM reconciliation_runs ORDER BY id"))
        rows = statuses.all()
    assert [r.status for r in rows] == ["failed", "succeeded"]
    assert "resumed" in rows[0].error
