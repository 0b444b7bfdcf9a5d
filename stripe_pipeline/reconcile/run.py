"""One reconciliation run, all-or-nothing.

Stages: plan the windows from the watermarks (or the given window), start listing
every windowed listing and ``/v1/events`` at once in the background (``prelist``:
parallel time slices under the shared rate limit, spooled to disk, resumable by the
run's listing key), backfill missed events and compare every object type as their
listings complete (findings spooled to disk), then write discrepancies,
repairs, resolutions, the new watermarks and the run's success in ONE transaction.
A failure anywhere before that commit leaves no discrepancy, repair or watermark
behind; the run row says ``failed`` and which stage failed why. (Backfilled events
are committed page by page on purpose: each is a deduplicated Stripe fact.)
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text, update

from stripe_pipeline.catalog import CATALOG
from stripe_pipeline.catalog.model import Catalog, Resource
from stripe_pipeline.db.models import ReconciliationRun
from stripe_pipeline.reconcile import heal
from stripe_pipeline.reconcile.api import ListingApi
from stripe_pipeline.reconcile.backfill import backfill_events
from stripe_pipeline.reconcile.compare import (
    CHUNK,
    MAX_FETCHES,
    SPOOLED_CHUNK,
    CompareStats,
    Unlisted,
    UnseenFetches,
    compare_prelisted,
    compare_resource,
    create_seen_table,
    drop_seen_table,
    refresh_stale,
    resource_window,
)
from stripe_pipeline.reconcile.local_plan import with_local_plans
from stripe_pipeline.reconcile.prelist import (
    ListingAborted,
    Prelisted,
    can_prelist,
    describe,
    forget,
    plan_listings,
    prelist,
    run_key_of,
)
from stripe_pipeline.reconcile.spool import Spool
from stripe_pipeline.reconcile.window import (
    DEFAULT_OVERLAP_MINUTES,
    EVENT_RETENTION_SECONDS,
    EVENTS,
    Window,
    advance_watermarks,
    from_unix,
    plan_window,
    read_watermarks,
    to_unix,
)
from stripe_pipeline.stripe_api.listing import paced_by

log = logging.getLogger(__name__)

RUNS = ReconciliationRun.__table__
# a run still "running" after this long died without saying so (killed worker)
ABANDONED_AFTER = timedelta(hours=12)


def reconciled_types(catalog: Catalog = CATALOG) -> tuple[str, ...]:
    """Object types with a listing, in the catalog's order."""
    return tuple(r.object_type for r in catalog.resources if r.listings)


OBJECT_TYPES = reconciled_types()


@dataclass(frozen=True)
class RunConfig:
    """What a run covers and how; defaults are the nightly run."""

    object_types: tuple[str, ...] = OBJECT_TYPES
    backfill: bool = True
    full_run: bool = False
    window_start: int | None = None
    window_end: int | None = None
    overlap_minutes: int = DEFAULT_OVERLAP_MINUTES
    repair: bool = True
    # False for fakes whose list endpoints refuse created[...] (localstripe)
    server_filter: bool = True
    chunk_size: int = CHUNK
    # objects fetched by id per resource (unlisted local rows) and stale rows refreshed
    max_fetches: int = MAX_FETCHES
    triggered_by: str | None = None
    actor: str = "reconciliation"
    catalog: Catalog = CATALOG
    # listings read ahead in parallel (``prelist``) when the client can, with at most
    # this many threads (pages in flight follow the client's limit and the API's
    # latency: ``SlicedLister`` with ``rates``); False: one page at a time, listing
    # after listing (the old path)
    parallel_listing: bool = True
    listing_workers: int = 96
    # list in a process of its own when the client can be rebuilt there (its limit
    # shared through the database), so that listing and comparison each have a core
    listing_process: bool = True
    # take over a "running" run with the same listings (killed): resume its listing
    resume: bool = False

    def __post_init__(self) -> None:
        known = reconciled_types(self.catalog)
        unknown = set(self.object_types) - set(known)
        if unknown:
            raise ValueError(f"unknown object types {sorted(unknown)}; known: {known}")


@dataclass
class RunResult:
    run_id: int
    status: str
    window_start: int | None
    window_end: int
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class ReconciliationFailed(RuntimeError):
    """The run failed and was rolled back; ``str()`` says which stage and why."""

    def __init__(self, run_id: int, stage: str, cause: BaseException) -> None:
        self.run_id = run_id
        self.stage = stage
        super().__init__(f"reconciliation run {run_id} failed while {stage}: {describe(cause)}")


def plan_windows(conn: Connection, config: RunConfig, now: int) -> dict[str, Window]:
    """Per listed resource (events, then each object type), the window to cover."""
    marks = read_watermarks(conn)
    windows = {}
    backfill = config.backfill and not _before_event_retention(config, now)
    for resource in ((EVENTS,) if backfill else ()) + config.object_types:
        windows[resource] = plan_window(
            resource,
            marks.get(resource),
            now=now,
            overlap_minutes=config.overlap_minutes,
            full_run=config.full_run,
            start=config.window_start,
            end=config.window_end,
        )
    return windows


def _before_event_retention(config: RunConfig, now: int) -> bool:
    """A window that ends before the 30 days Stripe keeps events has none to backfill."""
    return config.window_end is not None and config.window_end < now - EVENT_RETENTION_SECONDS


def _abandon_stale_runs(conn: Connection) -> None:
    cutoff = datetime.now(UTC) - ABANDONED_AFTER
    conn.execute(
        update(RUNS)
        .where(RUNS.c.status == "running", RUNS.c.started_at < cutoff)
        .values(
            status="failed",
            finished_at=datetime.now(UTC),
            error="abandoned: still running after 12 h (worker killed?)",
        )
    )


class RunInProgress(RuntimeError):
    """Another run is still going: two runs would race for the same discrepancies."""


def _refuse_concurrent_run(
    conn: Connection, start: int | None, end: int, listing_key: str | None, resume: bool
) -> None:
    """Runs over disjoint windows may run at once (daily partitions); overlapping
    ones would race for the same objects. With ``resume``, a run still marked running
    with the same listings is taken as killed: this run continues its listing."""
    running = conn.execute(
        select(RUNS.c.id, RUNS.c.started_at, RUNS.c.window_start, RUNS.c.window_end, RUNS.c.counts)
        .where(RUNS.c.status == "running")
        .order_by(RUNS.c.id)
    ).all()
    for run in running:
        if resume and listing_key and (run.counts or {}).get("listing_key") == listing_key:
            conn.execute(
                update(RUNS)
                .where(RUNS.c.id == run.id)
                .values(
                    status="failed",
                    finished_at=datetime.now(UTC),
                    error="abandoned: a later run with the same listings resumed it",
                )
            )
            continue
        other_start = to_unix(run.window_start) if run.window_start is not None else None
        other_end = to_unix(run.window_end) if run.window_end is not None else None
        disjoint = other_end is not None and (
            (other_start is not None and other_start > end)
            or (start is not None and start > other_end)
        )
        if not disjoint:
            raise RunInProgress(
                f"reconciliation run {run.id} (started {run.started_at}) is still running "
                "over an overlapping window; wait for it, resume it (resume), or after 12 h "
                "it is marked abandoned"
            )


def _serialize_writers(conn: Connection) -> None:
    """One run writes its results at a time (SQLite has one writer anyway): runs of
    several partitions compare in parallel, then commit one after the other."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(1515)"))


def run_reconciliation(
    engine: Engine, api: ListingApi, config: RunConfig | None = None, *, now: int | None = None
) -> RunResult:
    """Run one reconciliation; raises :class:`ReconciliationFailed` after recording why."""
    config = config or RunConfig()
    now = int(datetime.now(UTC).timestamp()) if now is None else now
    calls_before = api.calls
    with engine.begin() as conn:
        _abandon_stale_runs(conn)
        windows = plan_windows(conn, config, now)
        starts = [w.start for w in windows.values()]
        window_start = None if None in starts else min(starts)  # type: ignore[type-var]
        window_end = max(w.end for w in windows.values())
        planned = None
        if config.parallel_listing and can_prelist(api, config.server_filter):
            resources = [
                r for r in config.catalog.resources if r.object_type in config.object_types
            ]
            planned = plan_listings(resources, windows, events=windows.get(EVENTS))
            planned = with_local_plans(conn, resources, planned)
        listing_key = run_key_of(planned) if planned else None
        _refuse_concurrent_run(conn, window_start, window_end, listing_key, config.resume)
        run_doc = {"windows": _windows_doc(windows), "listing_key": listing_key}
        run_id = conn.execute(
            insert(RUNS)
            .values(
                status="running",
                full_run=config.full_run,
                window_start=from_unix(window_start) if window_start is not None else None,
                window_end=from_unix(window_end),
                triggered_by=config.triggered_by,
                counts=run_doc,
            )
            .returning(RUNS.c.id)
        ).scalar_one()

    counts: dict[str, Any] = dict(run_doc)
    seconds: dict[str, float] = {}  # per stage: where a run's time goes
    counts["seconds"] = seconds
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now_ = time.perf_counter()
        seconds[name] = round(seconds.get(name, 0.0) + now_ - clock, 3)
        clock = now_

    stage = "starting"
    spool = Spool()
    prelisted: Prelisted | None = None
    _quiet_collector()
    try:
        if planned:
            stage = "listing"
            prelisted = prelist(
                engine,
                api.list_page,  # type: ignore[attr-defined]
                planned,
                run_key=listing_key,  # type: ignore[arg-type]
                workers=config.listing_workers,
                client=api.spec() if config.listing_process and hasattr(api, "spec") else None,
                lister_options=paced_by(getattr(api, "limiter", None)),
            )
        with engine.connect() as conn:
            try:
                create_seen_table(conn)
                conn.commit()
                if EVENTS in windows:
                    stage = "backfilling events"
                    counts["backfill"] = backfill_events(
                        conn,
                        api,
                        windows[EVENTS],
                        server_filter=config.server_filter,
                        listed=prelisted.objects("events") if prelisted else None,
                    ).as_dict()
                    lap("backfilling")
                stats = CompareStats()
                catalog = config.catalog
                stage = "refreshing objects left as a guess"
                refreshed = refresh_stale(
                    conn,
                    api,
                    catalog,
                    config.object_types,
                    spool,
                    stats,
                    limit=config.max_fetches,
                )
                resources = [r for r in catalog.resources if r.object_type in config.object_types]
                compared: set[str] = set()
                confirmed = 0

                def confirm(c: Connection) -> None:
                    # rows found as stored get their new version now, beside the
                    # comparison, not all in the final transaction. Not flushed to disk
                    # at each commit (a thousand flushes at 1M objects, each waiting on
                    # a disk busy with the run's own writes): a confirmation lost in a
                    # crash is made again by the next run
                    nonlocal confirmed
                    if c.dialect.name == "postgresql":
                        c.execute(text("SET LOCAL synchronous_commit = off"))
                    confirmed += heal.confirm_unchanged(c, catalog, run_id, spool)
                    c.commit()

                fetches = UnseenFetches(api, catalog, spool, stats, max_fetches=config.max_fetches)

                def ask_unseen(
                    c: Connection, resource: Resource, ranges: Sequence[tuple[int, int]] = ()
                ) -> None:
                    window = resource_window(resource, windows[resource.object_type])
                    unlisted = Unlisted(window, ranges=ranges)
                    fetches.submit(c, resource, unlisted, chunk_size=config.chunk_size)

                try:
                    if prelisted is not None:
                        stage = "comparing listed objects"
                        compared = compare_prelisted(
                            conn,
                            catalog,
                            resources,
                            prelisted,
                            spool,
                            stats,
                            chunk_size=min(config.chunk_size, SPOOLED_CHUNK),
                            after_chunk=confirm,
                            listed=ask_unseen,
                            covered=ask_unseen,
                        )
                    # the catalog's order: a customer's listing before its payment methods
                    for resource in resources:
                        stage = f"comparing {resource.object_type} objects"
                        compare_resource(
                            conn,
                            api,
                            catalog,
                            resource,
                            windows[resource.object_type],
                            spool,
                            stats,
                            fetches,
                            server_filter=config.server_filter,
                            chunk_size=config.chunk_size,
                            prelisted=prelisted,
                            compared=compared,
                        )
                    stage = "comparing objects fetched by id"
                    fetches.drain(conn)
                finally:
                    fetches.close()
                if prelisted is not None:  # every listing was read: its stats
                    counts["listing"] = prelisted.finish()
                counts["compare"] = stats.as_dict()
                counts["api_calls"] = api.calls - calls_before + _calls_elsewhere(prelisted)
                lap("listing and comparing")
                stage = "writing results"
                conn.commit()
                with conn.begin():
                    _serialize_writers(conn)
                    # a write first: on SQLite it takes the single write lock up front,
                    # so the transaction cannot fail later on a stale read snapshot
                    conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(counts=counts))
                    healed = heal.record_findings(
                        conn, catalog, run_id, spool, repair=config.repair, actor=config.actor
                    )
                    if config.repair:
                        healed.links_settled = heal.settle_links(
                            conn, catalog, run_id, actor=config.actor
                        )
                    healed.confirmed_objects = confirmed + heal.confirm_unchanged(
                        conn, catalog, run_id, spool
                    )
                    healed.resolved = heal.resolve_vanished(
                        conn, catalog, run_id, config.object_types, full_run=config.full_run
                    )
                    heal.forget_refreshed(conn, refreshed)
                    counts["heal"] = healed.as_dict()
                    advance_watermarks(conn, windows, window_end, run_id)
                    lap("writing")
                    conn.execute(
                        update(RUNS)
                        .where(RUNS.c.id == run_id)
                        .values(status="succeeded", finished_at=datetime.now(UTC), counts=counts)
                    )
            finally:
                _discard_seen(conn)
    except Exception as exc:
        if prelisted is not None:
            prelisted.cancel()
            if isinstance(exc, ListingAborted):  # what compare waited for failed
                stage, exc = "listing", _listing_cause(exc)
        counts["api_calls"] = api.calls - calls_before + _calls_elsewhere(prelisted)
        error = f"failed while {stage}: {describe(exc)}"
        log.error("reconciliation run %s %s", run_id, error)
        with engine.begin() as conn:
            conn.execute(
                update(RUNS)
                .where(RUNS.c.id == run_id)
                .values(status="failed", finished_at=datetime.now(UTC), counts=counts, error=error)
            )
        raise ReconciliationFailed(run_id, stage, exc) from exc
    finally:
        spool.close()
        gc.unfreeze()
    try:  # kept after a failure: a rerun with the same listings resumes from them
        forget(engine, prelisted, listing_key)
    except Exception:
        log.warning("could not forget the listing progress of run %s", run_id, exc_info=True)
    return RunResult(run_id, "succeeded", window_start, window_end, counts)


def _quiet_collector() -> None:
    """Keep what is alive now (modules, the engine) out of the cycle collector's sight
    for the run (``gc.unfreeze`` at its end): a run allocates millions of objects, and
    every full collection walked the ~130k objects of pandas, SQLAlchemy and the
    catalog again (measured: comparison 25 % faster)."""
    gc.collect()
    gc.freeze()


def _calls_elsewhere(prelisted: Prelisted | None) -> int:
    """The API calls a listing process made (this process's client did not count them)."""
    if prelisted is None or not prelisted.elsewhere:
        return 0
    return int(prelisted.stats.get("calls", 0))


def _listing_cause(exc: Exception) -> Exception:
    """A comparison that waited for a failed listing fails because of the listing."""
    if isinstance(exc, ListingAborted) and isinstance(exc.__cause__, Exception):
        return exc.__cause__
    return exc


def _discard_seen(conn: Connection) -> None:
    """Drop the staging table; never hides the run's own error (the connection may be dead)."""
    try:
        if conn.in_transaction():
            conn.rollback()
        drop_seen_table(conn)
        conn.commit()
    except Exception:
        log.warning("could not drop the reconciliation staging table", exc_info=True)


def _windows_doc(windows: dict[str, Window]) -> dict[str, dict[str, int | None]]:
    return {r: {"start": w.start, "end": w.end} for r, w in windows.items()}
