"""The run's listing in a process of its own, and comparison that follows the listings
as they fill (issue 15: comparison must keep up with listing at the rate limit).

Peer: the Stripe-shaped fake list API (``tests/support/fake_stripe_server.py``) on
127.0.0.1, in a thread of the test process; the listing process reaches it over HTTP.
The client shares its rate limit through the app database (SQLite file or
PostgreSQL), which is what lets a run list in another process at all.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, text

from stripe_pipeline.catalog import CATALOG
from stripe_pipeline.reconcile import compare
from stripe_pipeline.reconcile.compare import (
    CompareStats,
    compare_prelisted,
    create_seen_table,
    drop_seen_table,
)
from stripe_pipeline.reconcile.prelist import Prelisted
from stripe_pipeline.reconcile.run import ReconciliationFailed, RunConfig, run_reconciliation
from stripe_pipeline.reconcile.spool import Spool
from stripe_pipeline.reconcile.window import Window
from stripe_pipeline.stripe_api.client import StripeApi
from stripe_pipeline.stripe_api.ratelimit import RateLimiter
from tests.support.fake_stripe_data import DataSet, load_templates
from tests.support.fake_stripe_server import FakeStripeServer
from tests.support.local_rows import insert_refunds

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("spool_dir")]

KEY = "sk_test_listing_process_0123456789"
START, END = 1_700_000_000, 1_700_000_000 + 20 * 86_400
COUNTS = {"customers": 150, "refunds": 250}
TYPES = {"customers": "customer", "refunds": "refund"}
TABLES = {"customer": "stripe_customers", "refund": "stripe_refunds"}
MODULE = "stripe_pipeline.reconcile.listing_process"


@pytest.fixture(scope="module")
def data() -> DataSet:
    return DataSet.generate(COUNTS, start=START, end=END, templates=load_templates())


def _config(**options) -> RunConfig:
    return RunConfig(
        object_types=tuple(TYPES.values()),
        backfill=False,
        window_start=START,
        window_end=END,
        listing_workers=8,
        **options,
    )


def _shared_api(engine: Engine, fake: FakeStripeServer) -> StripeApi:
    """A client whose limit lives in the app database: one a listing process can join."""
    limiter = RateLimiter.shared(engine, KEY, account_rate=10_000, endpoint_rate=10_000)
    return StripeApi(KEY, api_base=fake.base_url, limiter=limiter, audit_engine=engine)


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar_one()


def _local_counts(engine: Engine) -> dict[str, int]:
    return {t: _count(engine, f"SELECT count(*) FROM {table}") for t, table in TABLES.items()}


def _listing_processes() -> list[int]:
    """Listing processes started by this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if MODULE.encode() in cmdline and ppid == os.getpid():
            found.append(int(entry.name))
    return found


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_run_lists_in_a_process_of_its_own_through_the_shared_limit(
    engine: Engine, data: DataSet
) -> None:
    with FakeStripeServer(data, latency=0.02, account_rate=10_000, endpoint_rate=10_000) as fake:
        api = _shared_api(engine, fake)
        try:
            result = run_reconciliation(engine, api, _config(), now=END + 60)
        finally:
            api.limiter.close()
        requests = len(fake.log)

    listing = result.counts["listing"]
    assert listing["pid"] != os.getpid()  # listed elsewhere
    total = sum(COUNTS.values())
    assert listing["objects"] == total
    # its calls are the run's: the process's own client never made them
    assert result.counts["api_calls"] == requests >= listing["calls"] > 0
    assert result.counts["compare"]["found"] == {"missing_locally": total}  # each once
    assert _local_counts(engine) == {TYPES[name]: n for name, n in COUNTS.items()}
    # the listing process audited its calls in the app database, as the run's client does
    audited = _count(
        engine,
        "SELECT count(*) FROM audit_log WHERE action = 'stripe_api_call' AND "
        "object_type IN ('customers', 'refunds')",
    )
    assert audited == listing["calls"]
    assert not _listing_processes()


def test_a_killed_listing_process_fails_the_run_and_a_rerun_lists_each_object_once(
    engine: Engine, data: DataSet
) -> None:
    outcome: dict[str, BaseException] = {}
    with FakeStripeServer(data, latency=0.02, account_rate=10_000, endpoint_rate=10_000) as fake:
        fake.app.hold_after(2, path_prefix="/v1/")  # a listing stopped mid-way
        api = _shared_api(engine, fake)

        def first_run() -> None:
            try:
                run_reconciliation(engine, api, _config(), now=END + 60)
            except ReconciliationFailed as exc:
                outcome["error"] = exc

        runner = threading.Thread(target=first_run)
        runner.start()
        _wait_for(lambda: len(_listing_processes()) == 1 and len(fake.log) >= 2)
        [child] = _listing_processes()
        # the job (and the API key in it) went on the child's stdin, not its command line
        assert KEY.encode() not in Path(f"/proc/{child}/cmdline").read_bytes()
        os.kill(child, signal.SIGKILL)
        runner.join(60)
        assert not runner.is_alive()
        error = outcome["error"]
        assert error.stage == "listing"  # type: ignore[attr-defined]
        assert "listing process ended (exit code -9)" in str(error)

        fake.release()
        try:
            second = run_reconciliation(engine, api, _config(resume=True), now=END + 60)
        finally:
            api.limiter.close()

    total = sum(COUNTS.values())
    assert second.counts["compare"]["found"] == {"missing_locally": total}
    assert _local_counts(engine) == {TYPES[name]: n for name, n in COUNTS.items()}
    with engine.connect() as conn:
        statuses = [r[0] for r in conn.execute(text("SELECT status FROM reconciliation_runs"))]
    assert sorted(statuses) == ["failed", "succeeded"]
    assert not _listing_processes()


def test_a_run_that_fails_while_comparing_stops_its_listing_process(
    engine: Engine, data: DataSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("comparison broke")

    monkeypatch.setattr(compare, "compare_chunk", broken)
    with FakeStripeServer(data, latency=0.02, account_rate=10_000, endpoint_rate=10_000) as fake:
        fake.app.hold_after(2, path_prefix="/v1/")  # the listing would never end by itself
        api = _shared_api(engine, fake)
        try:
            with pytest.raises(ReconciliationFailed, match="comparison broke"):
                run_reconciliation(engine, api, _config(), now=END + 60)
            # asked to stop, the process left at once or within its grace period
            _wait_for(lambda: not _listing_processes(), timeout=15)
        finally:
            fake.release()
            api.limiter.close()


# --- comparison follows the listings as they fill ---------------------------------------


def _spool(tmp_path: Path, data: DataSet) -> tuple[Prelisted, dict[str, list[bytes]]]:
    lines = {
        f"{TYPES[name]}/{CATALOG.by_type[TYPES[name]].listings[0].name}": [
            data.resources[name].render(i) for i in range(len(data.resources[name]))
        ]
        for name in COUNTS
    }
    files = {name: tmp_path / f"{i}.jsonl" for i, name in enumerate(lines)}
    for path in files.values():
        path.write_bytes(b"")
    window = Window(START, END)
    return Prelisted(tmp_path, files, dict.fromkeys(files, window), END), lines


def _append(prelisted: Prelisted, name: str, lines: list[bytes]) -> None:
    path = prelisted.files[name]
    with open(path, "ab") as out:
        out.write(b"".join(orjson.dumps(orjson.loads(line)) + b"\n" for line in lines))
    prelisted.flushed(name, path.stat().st_size)


def test_comparison_takes_what_any_listing_has_ready_first(
    engine: Engine, data: DataSet, tmp_path: Path
) -> None:
    """Customers come first in the catalog, but while their listing is still going, the
    refunds already listed are compared: comparison never waits on one listing while
    another's objects pile up."""
    prelisted, lines = _spool(tmp_path, data)
    customers, refunds = "customer/customers", "refund/refunds"
    _append(prelisted, customers, lines[customers][:20])  # customers: still listing
    _append(prelisted, refunds, lines[refunds])
    prelisted.finished(refunds)  # refunds: complete
    resources = [CATALOG.by_type["customer"], CATALOG.by_type["refund"]]
    stats, spool = CompareStats(), Spool()
    compared: dict[str, set[str]] = {}
    with engine.connect() as conn:
        create_seen_table(conn)
        conn.commit()
        comparing = threading.Thread(
            target=lambda: compared.update(
                done=compare_prelisted(conn, CATALOG, resources, prelisted, spool, stats)
            )
        )
        comparing.start()
        # every refund, and the customers listed so far, while customers are still going
        _wait_for(
            lambda: (
                stats.compared["refund"] == COUNTS["refunds"] and stats.compared["customer"] == 20
            )
        )
        time.sleep(0.2)
        assert comparing.is_alive()  # the customers' listing is not complete: it waits
        _append(prelisted, customers, lines[customers][20:])
        prelisted.finished(customers)
        comparing.join(30)
        assert not comparing.is_alive()
        drop_seen_table(conn)
        conn.commit()
    spool.close()
    assert compared["done"] == {customers, refunds}
    assert stats.compared == {"customer": COUNTS["customers"], "refund": COUNTS["refunds"]}
    assert stats.found["missing_locally"] == sum(COUNTS.values())  # the tables are empty


def test_a_failed_listing_ends_the_comparison_that_follows_it(
    engine: Engine, data: DataSet, tmp_path: Path
) -> None:
    from stripe_pipeline.reconcile.prelist import ListingAborted

    prelisted, lines = _spool(tmp_path, data)
    customers = "customer/customers"
    _append(prelisted, customers, lines[customers][:10])
    prelisted.failed(RuntimeError("page refused"))
    with engine.connect() as conn:
        create_seen_table(conn)
        conn.commit()
        with pytest.raises(ListingAborted) as aborted:
            compare_prelisted(
                conn,
                CATALOG,
                [CATALOG.by_type["customer"], CATALOG.by_type["refund"]],
                prelisted,
                Spool(),
                CompareStats(),
            )
        drop_seen_table(conn)
        conn.commit()
    assert "page refused" in str(aborted.value.__cause__)


def test_confirmations_are_taken_once_each() -> None:
    with Spool() as spool:
        spool.confirm("customer", ["cus_1", "cus_2"], 100)
        assert list(spool.confirmations()) == [("customer", 100, ["cus_1", "cus_2"])]
        assert list(spool.confirmations()) == []  # written already
        spool.confirm("refund", ["re_1"], 101)
        assert list(spool.confirmations()) == [("refund", 101, ["re_1"])]
        assert spool.confirmed == 3


class _RecordingGets:
    """``get`` for ``UnseenFetches``: Stripe answers 404 for every id (the rows are
    gone), and each call records whether the listing was still going when it came."""

    def __init__(self, listing_done: threading.Event) -> None:
        self.listing_done = listing_done
        self.calls: list[tuple[str, bool]] = []

    def get(self, path: str) -> dict:
        from stripe_pipeline.reconcile.api import NotFound

        self.calls.append((path.rsplit("/", 1)[-1], self.listing_done.is_set()))
        raise NotFound(path)


def test_rows_unseen_in_a_range_read_whole_are_fetched_while_the_rest_is_listed(
    engine: Engine, data: DataSet, tmp_path: Path
) -> None:
    """Once the listing has read a created range whole (its slices done) and comparison
    has taken those objects, a local row created there that was not listed is fetched
    by id at once, not after the whole window: at a few hundred ms a call, the fetches
    then overlap the listing instead of trailing it. A row of the range still listed
    waits for the end, and no row is fetched twice."""
    half = START + 10 * 86_400
    insert_refunds(engine, [("re_gone_early", START + 100), ("re_gone_late", END - 100)])
    prelisted, lines = _spool(tmp_path, data)
    refunds = "refund/refunds"
    older = [line for line in lines[refunds] if orjson.loads(line)["created"] <= half]
    newer = [line for line in lines[refunds] if orjson.loads(line)["created"] > half]
    resource = CATALOG.by_type["refund"]
    done = threading.Event()
    api = _RecordingGets(done)
    stats, spool = CompareStats(), Spool()
    fetches = compare.UnseenFetches(api, CATALOG, spool, stats)
    asked: list[list[tuple[int, int]]] = []

    def covered(c, r, ranges) -> None:
        asked.append(ranges)
        fetches.submit(c, r, compare.Unlisted(Window(START, END), ranges=ranges))

    with engine.connect() as conn:
        create_seen_table(conn)
        conn.commit()
        comparing = threading.Thread(
            target=compare_prelisted,
            args=(conn, CATALOG, [resource], prelisted, spool, stats),
            kwargs={
                "listed": lambda c, r: fetches.submit(c, r, compare.Unlisted(Window(START, END))),
                "covered": covered,
            },
        )
        comparing.start()
        # a slice ends below 1/16 of the window: not worth a query of its own yet
        _append(prelisted, refunds, older[:5])
        prelisted.flushed(refunds, prelisted.files[refunds].stat().st_size, (half - 3600, half))
        time.sleep(0.3)
        assert asked == [] and api.calls == []
        # the older half is read whole: its unseen row is fetched while listing goes on
        _append(prelisted, refunds, older[5:])
        prelisted.flushed(refunds, prelisted.files[refunds].stat().st_size, (START, half - 3601))
        _wait_for(lambda: len(api.calls) == 1)
        assert api.calls == [("re_gone_early", False)]
        assert asked == [[(START, half)]]
        _append(prelisted, refunds, newer)
        done.set()
        prelisted.finished(refunds)
        comparing.join(30)
        assert not comparing.is_alive()
        fetches.drain(conn)
        fetches.close()
        drop_seen_table(conn)
        conn.commit()
    spool.close()
    # the late row when the listing was done; the early one not again
    assert api.calls == [("re_gone_early", False), ("re_gone_late", True)]
    assert stats.found["missing_in_stripe"] == 2
    assert stats.fetched == {"refund": 2}


def test_only_ranges_of_the_objects_own_created_time_settle_what_was_not_listed() -> None:
    from stripe_pipeline.reconcile.compare import _ranges_decide_unseen, merge_ranges

    refund, payment = CATALOG.by_type["refund"], CATALOG.by_type["payment"]
    assert _ranges_decide_unseen(refund, refund.listings)
    assert _ranges_decide_unseen(payment, payment.listings)  # asked once both are read
    assert not _ranges_decide_unseen(payment, payment.listings[:1])  # one not prelisted
    discount = CATALOG.by_type["discount"]  # windowed on the objects that carry them
    assert not _ranges_decide_unseen(discount, discount.listings)
    card = CATALOG.by_type["payment_method"]  # listed per customer, no created filter
    assert not _ranges_decide_unseen(card, card.listings)
    assert merge_ranges([(5, 9), (1, 3), (4, 4), (20, 30), (25, 26)]) == [(1, 9), (20, 30)]
