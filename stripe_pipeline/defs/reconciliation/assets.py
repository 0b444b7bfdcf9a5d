"""Reconciliation as assets: by day (partitioned) and over any window.

``reconciliation_daily`` is partitioned by UTC day of ``created``: the nightly job
materializes yesterday and a few days before it, and a data engineer backfills any
range of days from the UI (each partition its own run; they run in parallel, under
the one rate limit shared through the app database). ``nightly_reconciliation_run``
covers an arbitrary window (watermark-based, a given window, or every object) and is
launched by hand (job ``reconciliation_window``).

One step per run: ``stripe_pipeline.reconcile.run.run_reconciliation`` is
all-or-nothing, so splitting it into steps would only add ways to half-finish it.
This module builds its config, runs it and publishes a preview and counts.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    Config,
    DailyPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)
from pydantic import Field
from sqlalchemy import Engine, select

from stripe_pipeline.catalog import CATALOG
from stripe_pipeline.config import ScheduleOptions, load_schedule_options
from stripe_pipeline.db.models import ReconciliationDiscrepancy
from stripe_pipeline.defs.common.resources import DatabaseResource, StripeApiResource
from stripe_pipeline.defs.processing.assets import DOMAIN_TABLE_KEYS
from stripe_pipeline.reconcile.run import (
    OBJECT_TYPES,
    ReconciliationFailed,
    RunConfig,
    RunResult,
    run_reconciliation,
)
from stripe_pipeline.reconcile.window import DEFAULT_OVERLAP_MINUTES

GROUP = "reconciliation"
PREVIEW_ROWS = 20
DOMAIN_DEPS = [
    "stripe_payments",
    "stripe_refunds",
    "stripe_disputes",
    "stripe_subscriptions",
    "stripe_invoices",
]

reconciliation_backfill = AssetSpec(
    key="reconciliation_backfill",
    group_name=GROUP,
    description="Events listed from Stripe's /v1/events over the window that the receiver "
    "missed, inserted into stripe_events with source 'reconciliation' (then processed "
    "as usual).",
    kinds={"sql"},
    skippable=False,
)
reconciliation_discrepancies = AssetSpec(
    key="reconciliation_discrepancies",
    group_name=GROUP,
    deps=DOMAIN_DEPS,
    description="Differences between the domain tables and the Stripe API (missing locally, "
    "missing in Stripe, field mismatch); deterministic ones repaired, the rest ticketed.",
    kinds={"sql", "pandas"},
    skippable=False,
)


class ReconciliationConfig(Config):
    """A run's window: empty means nightly (from the watermark, minus the overlap)."""

    window_start: str = Field(
        default="", description="ISO datetime or Unix seconds; empty: last watermark - overlap."
    )
    window_end: str = Field(default="", description="ISO datetime or Unix seconds; empty: now.")
    full_run: bool = Field(
        default=False, description="Every object (events: the 30 days Stripe keeps)."
    )
    overlap_minutes: int = Field(default=DEFAULT_OVERLAP_MINUTES, ge=0)
    object_types: list[str] = Field(default_factory=lambda: list(OBJECT_TYPES))
    backfill_events: bool = True
    repair: bool = Field(default=True, description="Repair deterministic discrepancies.")
    api_created_filter: bool = Field(
        default=True,
        description="Send created[gte/lte] to the API; off for fakes that refuse it.",
    )


def parse_time(value: str) -> int | None:
    """Unix seconds from '' (unset), digits, or an ISO datetime (UTC when naive)."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return int(value)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def run_config(config: ReconciliationConfig, triggered_by: str) -> RunConfig:
    return RunConfig(
        object_types=tuple(config.object_types),
        backfill=config.backfill_events,
        full_run=config.full_run,
        window_start=parse_time(config.window_start),
        window_end=parse_time(config.window_end),
        overlap_minutes=config.overlap_minutes,
        repair=config.repair,
        server_filter=config.api_created_filter,
        triggered_by=triggered_by,
    )


def preview_markdown(rows: list[dict[str, Any]]) -> str:
    """The first discrepancies of a run as a markdown table."""
    if not rows:
        return "_no discrepancies in this run_"
    columns = ["object_type", "object_id", "kind", "field", "local_value", "remote_value", "status"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [
            str(row[c]).replace("|", "\\|")[:80] if row[c] is not None else "" for c in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_preview(engine: Engine, run_id: int, limit: int = PREVIEW_ROWS) -> list[dict[str, Any]]:
    d = ReconciliationDiscrepancy.__table__.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                d.object_type,
                d.object_id,
                d.kind,
                d.field,
                d.local_value,
                d.remote_value,
                d.status,
            )
            .where(d.run_id == run_id)
            .order_by(d.object_type, d.object_id, d.kind, d.field)
            .limit(limit)
        )
        return [dict(r._mapping) for r in rows]


def discrepancy_metadata(result: RunResult, preview: list[dict[str, Any]]) -> dict[str, Any]:
    counts = result.counts
    compare = counts.get("compare", {})
    heal = counts.get("heal", {})
    found = compare.get("found", {})
    by_status = heal.get("discrepancies", {})
    return {
        "run_id": result.run_id,
        "preview": MetadataValue.md(preview_markdown(preview)),
        "found_total": sum(found.values()),
        "missing_locally": found.get("missing_locally", 0),
        "missing_in_stripe": found.get("missing_in_stripe", 0),
        "field_mismatch": found.get("field_mismatch", 0),
        "repaired_objects": heal.get("repaired_objects", 0),
        "left_open": by_status.get("open", 0) + by_status.get("ticketed", 0),
        "resolved_since_last_run": heal.get("resolved_since_last_run", 0),
        "objects_compared": MetadataValue.json(compare.get("compared", {})),
        "objects_listed": MetadataValue.json(compare.get("listed", {})),
        "api_calls": counts.get("api_calls", 0),
        "windows": MetadataValue.json(counts.get("windows", {})),
    }


@multi_asset(
    name="nightly_reconciliation_run",
    specs=[reconciliation_backfill, reconciliation_discrepancies],
    description="Backfill missed events and reconcile objects against the Stripe API "
    "(one all-or-nothing run; the watermark advances only when it succeeds).",
)
def nightly_reconciliation_run(
    context: AssetExecutionContext,
    config: ReconciliationConfig,
    database: DatabaseResource,
    stripe_api: StripeApiResource,
) -> Iterator[MaterializeResult]:
    engine = database.get_engine()
    # SQLite has one writer: audit rows of API calls would wait behind the run's writes
    audit_engine = None if engine.dialect.name == "sqlite" else engine
    api = stripe_api.get_client(audit_engine, actor="reconciliation", limit_engine=engine)
    try:
        result = run_reconciliation(
            engine, api, run_config(config, triggered_by=f"dagster:{context.run.run_id}")
        )
    except ReconciliationFailed as exc:
        # the run is rolled back and recorded; show its reason, not a bare traceback
        raise Failure(
            description=str(exc),
            metadata={"reconciliation_run_id": exc.run_id, "stage": exc.stage},
        ) from exc
    backfill = result.counts.get("backfill", {})
    context.log.info("reconciliation run %s succeeded: %s", result.run_id, result.counts)
    yield MaterializeResult(
        asset_key="reconciliation_backfill",
        metadata={"run_id": result.run_id, **backfill},
    )
    yield MaterializeResult(
        asset_key="reconciliation_discrepancies",
        metadata=discrepancy_metadata(result, run_preview(engine, result.run_id)),
    )


# --- by day ------------------------------------------------------------------------------


def daily_partitions(options: ScheduleOptions | None = None) -> DailyPartitionsDefinition:
    """UTC days of ``created`` from the configured start (default: Stripe's launch)."""
    options = options or load_schedule_options()
    return DailyPartitionsDefinition(start_date=options.reconciliation_start_date, timezone="UTC")


DAILY_PARTITIONS = daily_partitions()
DAILY_KEY = "reconciliation_daily"


class DailyReconciliationConfig(Config):
    """What a day's run covers; the window is the partition's day."""

    object_types: list[str] = Field(default_factory=lambda: list(OBJECT_TYPES))
    backfill_events: bool = Field(
        default=True, description="Also /v1/events of the day (Stripe keeps 30 days)."
    )
    repair: bool = Field(default=True, description="Repair deterministic discrepancies.")
    api_created_filter: bool = Field(
        default=True, description="Send created[gte/lte] to the API; off for fakes."
    )
    resume: bool = Field(
        default=True,
        description="Take over a run of the same day still marked running (a killed "
        "worker): its completed slices are not listed again.",
    )


def day_window(context: AssetExecutionContext) -> tuple[int, int]:
    """The partition's day as Unix seconds, both ends inclusive."""
    window = context.partition_time_window
    return int(window.start.timestamp()), int(window.end.timestamp()) - 1


# a day this recent compares the resources listed whole (prices, products, coupons...)
WHOLE_LISTINGS_DAYS = 2


def day_object_types(
    object_types: list[str], day_end: int, now: int | None = None
) -> tuple[str, ...]:
    """The types a day's run compares. Resources listed whole whatever the window
    (``Listing.full``: prices, products, coupons) are compared by recent days only:
    a backfill of a thousand days would otherwise list the whole catalog a thousand
    times."""
    now = int(datetime.now(UTC).timestamp()) if now is None else now
    if day_end >= now - WHOLE_LISTINGS_DAYS * 86_400:
        return tuple(object_types)
    whole = {
        r.object_type
        for r in CATALOG.resources
        if r.listings and all(listing.full for listing in r.listings)
    }
    return tuple(t for t in object_types if t not in whole)


def updated_tables(result: RunResult, object_types: list[str]) -> list[str]:
    """The domain tables a run wrote to (repairs): their models refresh after it."""
    if not result.counts.get("heal", {}).get("repaired_objects"):
        return []
    tables = {CATALOG.by_type[t].table_name for t in object_types}
    return sorted(tables & {key.path[-1] for key in DOMAIN_TABLE_KEYS})


@asset(
    key=DAILY_KEY,
    group_name=GROUP,
    deps=DOMAIN_DEPS,
    partitions_def=DAILY_PARTITIONS,
    kinds={"sql", "pandas"},
    description="One UTC day of Stripe objects (by created) reconciled against the API: "
    "listed in parallel time slices under the shared rate limit, missed events of the "
    "day backfilled, deterministic differences repaired, the rest ticketed. Backfill a "
    "range of days from the UI to land history.",
)
def reconciliation_daily(
    context: AssetExecutionContext,
    config: DailyReconciliationConfig,
    database: DatabaseResource,
    stripe_api: StripeApiResource,
) -> MaterializeResult:
    engine = database.get_engine()
    audit_engine = None if engine.dialect.name == "sqlite" else engine
    api = stripe_api.get_client(audit_engine, actor="reconciliation", limit_engine=engine)
    start, end = day_window(context)
    run = RunConfig(
        object_types=day_object_types(config.object_types, end),
        backfill=config.backfill_events,
        window_start=start,
        window_end=end,
        repair=config.repair,
        server_filter=config.api_created_filter,
        triggered_by=f"dagster:{context.run.run_id}:{context.partition_key}",
        resume=config.resume,
    )
    try:
        result = run_reconciliation(engine, api, run)
    except ReconciliationFailed as exc:
        raise Failure(
            description=str(exc),
            metadata={"reconciliation_run_id": exc.run_id, "stage": exc.stage},
        ) from exc
    # repaired tables count as updated, so the models and marts on them refresh after
    for table in updated_tables(result, list(run.object_types)):
        context.log_event(
            AssetMaterialization(
                asset_key=AssetKey(table),
                description=f"repaired by reconciliation run {result.run_id}",
                metadata={"reconciliation_run_id": result.run_id},
            )
        )
    listing = result.counts.get("listing", {})
    return MaterializeResult(
        metadata={
            **discrepancy_metadata(result, run_preview(engine, result.run_id)),
            **result.counts.get("backfill", {}),
            "listing": MetadataValue.json(listing),
        }
    )
