"""One reconciliation run, all-or-nothing.

Stages: plan the windows from the watermarks, backfill missed events, list and
compare every object type (findings spooled to disk), then write discrepancies,
repairs, resolutions, the new watermarks and the run's success in ONE transaction.
A failure anywhere before that commit leaves no discrepancy, repair or watermark
behind; the run row says ``failed`` and which stage failed why. (Backfilled events
are committed page by page on purpose: each is a deduplicated Stripe fact.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from stripe_pipeline.catalog import CATALOG
from stripe_pipeline.catalog.model import Catalog
from stripe_pipeline.db.models import ReconciliationRun
from stripe_pipeline.reconcile import heal
from stripe_pipeline.reconcile.api import ListingApi
from stripe_pipeline.reconcile.backfill import backfill_events
from stripe_pipeline.reconcile.compare import (
    CHUNK,
    MAX_FETCHES,
    CompareStats,
    compare_resource,
    create_seen_table,
    drop_seen_table,
    refresh_stale,
)
from stripe_pipeline.reconcile.spool import Spool
from stripe_pipeline.reconcile.window import (
    DEFAULT_OVERLAP_MINUTES,
    EVENTS,
    Window,
    advance_watermarks,
    from_unix,
    plan_window,
    read_watermarks,
)

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


def describe(exc: BaseException) -> str:
    message = " ".join(str(exc).split())[:500]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def plan_windows(conn: Connection, config: RunConfig, now: int) -> dict[str, Window]:
    """Per listed resource (events, then each object type), the window to cover."""
    marks = read_watermarks(conn)
    windows = {}
    for resource in ((EVENTS,) if config.backfill else ()) + config.object_types:
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


def _refuse_concurrent_run(conn: Connection) -> None:
    running = conn.execute(
        select(RUNS.c.id, RUNS.c.started_at).where(RUNS.c.status == "running").limit(1)
    ).first()
    if running is not None:
        raise RunInProgress(
            f"reconciliation run {running.id} (started {running.started_at}) is still running; "
            "wait for it, or after 12 h it is marked abandoned"
        )


def run_reconciliation(
    engine: Engine, api: ListingApi, config: RunConfig | None = None, *, now: int | None = None
) -> RunResult:
    """Run one reconciliation; raises :class:`ReconciliationFailed` after recording why."""
    config = config or RunConfig()
    now = int(datetime.now(UTC).timestamp()) if now is None else now
    calls_before = api.calls
    with engine.begin() as conn:
        _abandon_stale_runs(conn)
        _refuse_concurrent_run(conn)
        windows = plan_windows(conn, config, now)
        starts = [w.start for w in windows.values()]
        window_start = None if None in starts else min(starts)  # type: ignore[type-var]
        window_end = max(w.end for w in windows.values())
        run_id = conn.execute(
            insert(RUNS)
            .values(
                status="running",
                full_run=config.full_run,
                window_start=from_unix(window_start) if window_start is not None else None,
                window_end=from_unix(window_end),
                triggered_by=config.triggered_by,
                counts={"windows": _windows_doc(windows)},
            )
            .returning(RUNS.c.id)
        ).scalar_one()

    counts: dict[str, Any] = {"windows": _windows_doc(windows)}
    stage = "starting"
    spool = Spool()
    try:
        with engine.connect() as conn:
            try:
                create_seen_table(conn)
                conn.commit()
                if config.backfill:
                    stage = "backfilling events"
                    counts["backfill"] = backfill_events(
                        conn, api, windows[EVENTS], server_filter=config.server_filter
                    ).as_dict()
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
                # the catalog's order: a customer's listing before its payment methods
                for resource in catalog.resources:
                    if resource.object_type not in config.object_types:
                        continue
                    stage = f"comparing {resource.object_type} objects"
                    compare_resource(
                        conn,
                        api,
                        catalog,
                        resource,
                        windows[resource.object_type],
                        spool,
                        stats,
                        server_filter=config.server_filter,
                        chunk_size=config.chunk_size,
                        max_fetches=config.max_fetches,
                    )
                counts["compare"] = stats.as_dict()
                counts["api_calls"] = api.calls - calls_before
                stage = "writing results"
                conn.commit()
                with conn.begin():
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
                    healed.confirmed_objects = heal.confirm_unchanged(conn, catalog, run_id, spool)
                    healed.resolved = heal.resolve_vanished(
                        conn, catalog, run_id, config.object_types, full_run=config.full_run
                    )
                    heal.forget_refreshed(conn, refreshed)
                    counts["heal"] = healed.as_dict()
                    advance_watermarks(conn, windows, window_end, run_id)
                    conn.execute(
                        update(RUNS)
                        .where(RUNS.c.id == run_id)
                        .values(status="succeeded", finished_at=datetime.now(UTC), counts=counts)
                    )
            finally:
                _discard_seen(conn)
    except Exception as exc:
        counts["api_calls"] = api.calls - calls_before
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
    return RunResult(run_id, "succeeded", window_start, window_end, counts)


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
