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

from stripe_pipeline.reconcile.prelist import SPOOL_KEEP_SECONDS, spool_name, sweep_spools
from stripe_pipeline.reconcile.run import RunConfig, run_reconciliation
from stripe_pipeline.stripe_api.client import StripeApi
from tests.support.fake_stripe_data import DataSet, load_templates
from tests.support.fake_stripe_server import FakeStripeServer
from tests.support.local_rows import insert_customers, insert_refunds

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("spool_dir")]

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
        second_log = fake.log[len(log) :]

    expected = {TYPES[name]: n for name, n in COUNTS.items()}
    assert first.counts["listing"]["objects"] == sum(COUNTS.values())
    assert first.counts["compare"]["found"] == {"missing_locally": sum(COUNTS.values())}
    assert first.counts["heal"]["repaired_objects"] == sum(COUNTS.values())
    assert _local_counts(engine) == expected  # each object stored once
    assert second.counts["compare"]["found"] == {}  # repaired rows equal what Stripe says
    # the second run cut its windows where the local rows lie: every slice as planned,
    # no split, at most a call more than the minimum per listing
    listed = second.counts["listing"]
    assert listed["splits"] == 0 and listed["slices"] > len(COUNTS)
    least = sum(math.ceil(n / 100) for n in COUNTS.values())
    assert len(second_log) == listed["calls"] <= least + len(COUNTS)
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


def test_a_second_run_lists_each_crowded_second_by_its_local_ids_at_once(
    engine: Engine,
) -> None:
    """Skewed data: a second of each resource holds hundreds of objects, which Stripe
    can only page by cursor. Once the tables hold them, the next run cuts each such
    second by the ids of its rows: one page per slice, none waiting for another."""
    counts = {"refunds": 700, "customers": 300}
    data = DataSet.generate(counts, kind="skewed", start=START, end=END, templates=load_templates())
    config = RunConfig(
        object_types=("refund", "customer"),
        backfill=False,
        window_start=START,
        window_end=END,
        listing_workers=8,
    )
    with FakeStripeServer(data, latency=0.02, account_rate=10_000, endpoint_rate=10_000) as fake:
        api = StripeApi("sk_test_crowded", api_base=fake.base_url, requests_per_second=10_000)
        first = run_reconciliation(engine, api, config, now=END + 60)
        before = len(fake.log)
        second = run_reconciliation(engine, api, config, now=END + 60)
        log = fake.log[before:]
    assert first.counts["heal"]["repaired_objects"] == sum(counts.values())
    assert second.counts["compare"]["found"] == {}
    listed = second.counts["listing"]
    assert listed["objects"] == sum(counts.values())
    assert listed["splits"] == 0 and listed["pages"] == listed["slices"] == len(log)
    # 500 refunds and 300 customers in one second each: 5 and 3 slices start after a
    # cut (runs of 96), and no other page carries a cursor
    assert sum("starting_after" in entry.params for entry in log) == 5 + 3
    assert len(log) <= sum(math.ceil(n / 96) for n in counts.values()) + 2 * len(counts)


def test_a_failed_listing_fails_the_run_and_keeps_its_progress(
    engine: Engine, data: DataSet, spool_dir: Path
) -> None:
    from stripe_pipeline.reconcile.run import ReconciliationFailed

    with FakeStripeServer(data, latency=0.02, account_rate=10_000, endpoint_rate=10_000) as fake:
        fake.app.fail_next(1, status=400, path_prefix="/v1/disputes")  # not retryable
        api = StripeApi("sk_test_sliced", api_base=fake.base_url, requests_per_second=10_000)
        with pytest.raises(ReconciliationFailed, match="/v1/disputes") as failed:
            run_reconciliation(engine, api, _config(listing_workers=4), now=END + 60)
    assert failed.value.stage == "listing"
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status, error FROM reconciliation_runs")).one()
    assert status.status == "failed" and "listing" in status.error
    assert _local_counts(engine) == {t: 0 for t in TABLES}  # all or nothing
    # what was listed stays recorded for a rerun with the same listings
    assert _count(engine, "SELECT count(*) FROM stripe_listing_slices") > 0
    assert any(spool_dir.glob("*/*.jsonl"))


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


# --- the daily partitions in Dagster -----------------------------------------------------

DAYS = ("2023-11-20", "2023-11-21")


def _day_bounds(day: str) -> tuple[int, int]:
    from datetime import UTC, datetime

    start = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())
    return start, start + 86_399


def _objects_of_day(data: DataSet, day: str) -> dict[str, int]:
    lo, hi = _day_bounds(day)
    return {
        TYPES[name]: int(((r.created >= lo) & (r.created <= hi)).sum())
        for name, r in data.resources.items()
    }


def test_daily_partitions_run_in_parallel_and_repair_their_day(
    engine: Engine, database_url: str, data: DataSet
) -> None:
    import threading

    from dagster import DagsterInstance, Definitions

    from stripe_pipeline.defs.common.resources import DatabaseResource, StripeApiResource
    from stripe_pipeline.defs.reconciliation.assets import reconciliation_daily
    from stripe_pipeline.defs.reconciliation.checks import daily_discrepancies_are_ticketed
    from stripe_pipeline.defs.reconciliation.jobs import nightly_reconciliation_job

    config = {"object_types": list(TYPES.values()), "backfill_events": False}
    with FakeStripeServer(data, latency=0.02, account_rate=10_000, endpoint_rate=10_000) as fake:
        defs = Definitions(
            assets=[reconciliation_daily],
            asset_checks=[daily_discrepancies_are_ticketed],
            jobs=[nightly_reconciliation_job],
            resources={
                "database": DatabaseResource(url=database_url),
                "stripe_api": StripeApiResource(
                    api_key="sk_test_daily", api_base=fake.base_url, requests_per_second=10_000
                ),
            },
        )
        job = defs.resolve_job_def("nightly_reconciliation")

        def run(day: str):
            # an instance per run: Dagster's in-memory SQLite storage locks under
            # concurrent run creation (ours, the app database, is what is tested here)
            return job.execute_in_process(
                run_config={"ops": {"reconciliation_daily": {"config": config}}},
                partition_key=day,
                instance=DagsterInstance.ephemeral(),
                raise_on_error=False,
            )

        results: dict[str, object] = {}
        threads = [
            threading.Thread(target=lambda d=d: results.__setitem__(d, run(d))) for d in DAYS
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        again = run(DAYS[0])

    expected = {t: 0 for t in TABLES}
    for day in DAYS:
        result = results[day]
        assert result.success, day
        [mat] = [
            m.materialization
            for m in result.get_asset_materialization_events()
            if m.asset_key.path[-1] == "reconciliation_daily"
        ]
        assert mat.partition == day
        of_day = _objects_of_day(data, day)
        assert mat.metadata["missing_locally"].value == sum(of_day.values()) > 0
        assert mat.metadata["repaired_objects"].value == sum(of_day.values())
        # the repaired domain tables are reported updated: their models refresh after
        updated = {
            m.asset_key.path[-1]
            for m in result.get_asset_materialization_events()
            if m.asset_key.path[-1] != "reconciliation_daily"
        }
        assert updated == set(TABLES.values())
        for t, n in of_day.items():
            expected[t] += n
    assert _local_counts(engine) == expected  # each day's objects, nothing else
    assert again.success
    [mat] = [
        m.materialization
        for m in again.get_asset_materialization_events()
        if m.asset_key.path[-1] == "reconciliation_daily"
    ]
    assert mat.metadata["found_total"].value == 0  # a day re-checked finds nothing
    with engine.connect() as conn:
        triggered = conn.execute(
            text("SELECT triggered_by FROM reconciliation_runs ORDER BY id")
        ).scalars()
        assert sorted(t.rsplit(":", 1)[1] for t in triggered) == sorted([*DAYS, DAYS[0]])


def test_listings_whose_objects_are_rows_are_planned_from_the_local_table(
    engine: Engine,
) -> None:
    """Runs of at most 96 rows per created second, the window's whole range covered,
    and the crowded second cut by its ids (descending, in byte order); a carried
    listing (discounts), a resource's second listing (a PaymentIntent's charges) and a
    listing with more rows than the limit go without a plan."""
    from stripe_pipeline.catalog import CATALOG
    from stripe_pipeline.reconcile.local_plan import with_local_plans
    from stripe_pipeline.reconcile.prelist import plan_listings
    from stripe_pipeline.reconcile.window import Window

    seconds = [START + 10] * 250 + [START + 20 + i for i in range(100)] + [END + 5] * 3
    ids = [f"re_{i}" for i in range(len(seconds))]
    insert_refunds(engine, list(zip(ids, seconds, strict=True)))
    resources = [CATALOG.by_type[t] for t in ("refund", "payment", "discount")]
    window = Window(START, END)
    planned = plan_listings(
        resources, dict.fromkeys(("refund", "payment", "discount"), window), events=None
    )
    with engine.connect() as conn:
        requests = {p.name: p.request for p in with_local_plans(conn, resources, planned)}
        plans = {name: request.plan for name, request in requests.items()}
        capped = {
            p.name: p.request.plan for p in with_local_plans(conn, resources, planned, most=349)
        }
    # the crowded second alone, then the 100 single seconds in runs of 96 and 4;
    # the rows created after the window are not counted
    assert plans["refund/refunds"] == ((START + 10, 250), (START + 20, 96), (START + 116, 4))
    crowded = sorted(ids[:250], reverse=True)  # "re_99" before "re_249", as bytes go
    assert requests["refund/refunds"].cuts == ((START + 10, (crowded[95], crowded[191])),)
    assert all(not r.cuts for name, r in requests.items() if name != "refund/refunds")
    assert all(not plan for name, plan in plans.items() if name != "refund/refunds")
    assert "payment/charges" in plans and "discount/customer_discounts" in plans
    assert capped["refund/refunds"] == ()  # 350 rows in the window, 349 allowed


def test_cuts_stripe_refuses_cost_calls_never_objects(engine: Engine) -> None:
    """Local rows Stripe does not have, in the crowded second, become cuts; Stripe
    answers 400 for them. The second is listed again whole, once, every object of it
    goes out once, and the rows are found missing in Stripe, nothing else."""
    data = DataSet.generate(
        {"refunds": 600}, kind="skewed", start=START, end=END, templates=load_templates()
    )
    config = RunConfig(
        object_types=("refund",),
        backfill=False,
        window_start=START,
        window_end=END,
        listing_workers=8,
    )
    crowded = START + (END - START) // 4  # where the skewed data puts 500 in one second
    with FakeStripeServer(data, latency=0.02, account_rate=10_000, endpoint_rate=10_000) as fake:
        api = StripeApi("sk_test_refused", api_base=fake.base_url, requests_per_second=10_000)
        run_reconciliation(engine, api, config, now=END + 60)
        # listed first in descending byte order: the first two cuts are among them
        insert_refunds(engine, [(f"re_zz{i:03d}", crowded) for i in range(200)])
        before = len(fake.log)
        second = run_reconciliation(engine, api, config, now=END + 60)
        log = fake.log[before:]
    assert second.counts["compare"]["found"] == {"missing_in_stripe": 200}
    assert second.counts["listing"]["objects"] == 600  # each once, the relisted second too
    lists = [e for e in log if "limit" in e.params]
    assert sum(e.status == 400 for e in lists) == 2  # the two cuts Stripe has not
    of_second = [e for e in lists if e.params.get("created[gte]") == str(crowded)]
    assert len(of_second) <= 8 + 5  # the slices, and the second once more: five pages


def test_a_row_marked_deleted_is_never_a_cut(engine: Engine) -> None:
    """A deleted customer is no longer listed, and Stripe may refuse it as a cursor
    (the second would be listed again whole): the cut moves to the last live row
    before it, so no run passes a page."""
    from stripe_pipeline.catalog import CATALOG
    from stripe_pipeline.reconcile.local_plan import local_cuts

    ids = [f"cus_{i:03d}" for i in range(200)]  # listed newest first: cus_199 first
    deleted = {"cus_104", "cus_103"}  # the 96th and 97th in that order
    insert_customers(engine, [(i, START + 10, i in deleted) for i in ids])
    with engine.connect() as conn:
        cuts = local_cuts(conn, CATALOG.by_type["customer"], [(START + 10, 200)])
    assert cuts == [(START + 10, ("cus_105", "cus_009"))]


def test_old_days_leave_the_whole_catalog_listings_to_recent_days() -> None:
    from stripe_pipeline.defs.reconciliation.assets import day_object_types
    from stripe_pipeline.reconcile.run import OBJECT_TYPES

    now = END + 30 * 86_400
    old = day_object_types(list(OBJECT_TYPES), END, now=now)
    assert {"price", "product", "coupon", "promotion_code"}.isdisjoint(old)
    assert {"payment", "subscription", "invoice", "customer"} <= set(old)
    assert day_object_types(list(OBJECT_TYPES), now - 86_400, now=now) == OBJECT_TYPES


def test_spools_of_runs_never_resumed_are_swept_after_a_week(
    engine: Engine, tmp_path: Path
) -> None:
    old = time.time() - SPOOL_KEEP_SECONDS - 60
    stale = tmp_path / spool_name(engine, "reconciliation:window:1-2")
    current = tmp_path / spool_name(engine, "reconciliation:window:3-4")
    recent = tmp_path / spool_name(engine, "reconciliation:window:5-6")
    other_db = tmp_path / "0123456789ab-reconciliation-window-1-2"
    for path in (stale, current, recent, other_db):
        path.mkdir()
        (path / "000.jsonl").write_bytes(b"{}\n")
    for path in (stale, current, other_db):
        os.utime(path, (old, old))
    swept = sweep_spools(tmp_path, engine, keep=current.name)
    assert swept == [stale]
    assert not stale.exists()
    assert current.exists() and recent.exists() and other_db.exists()
