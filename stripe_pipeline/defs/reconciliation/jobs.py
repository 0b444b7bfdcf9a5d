"""Jobs: ``nightly_reconciliation`` (by day, partitioned) and ``reconciliation_window``."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

from stripe_pipeline.defs.reconciliation.assets import DAILY_KEY
from stripe_pipeline.defs.reconciliation.checks import (
    daily_discrepancies_are_ticketed,
    discrepancies_are_ticketed,
)

RECONCILIATION_JOB_NAME = "nightly_reconciliation"
WINDOW_JOB_NAME = "reconciliation_window"

nightly_reconciliation_job = define_asset_job(
    name=RECONCILIATION_JOB_NAME,
    selection=AssetSelection.assets(DAILY_KEY)
    | AssetSelection.checks(daily_discrepancies_are_ticketed),
    description="Reconcile one UTC day of Stripe objects (by created) and backfill its "
    "missed events; ticket what is left. The schedule runs yesterday and a trailing "
    "window each night; backfill a range of days from the asset's partitions page.",
    # days run in parallel (the queue's limit for this tag), under the one shared API limit
    executor_def=in_process_executor,
    tags={"stripe_pipeline/concurrency": "reconciliation_day"},
)

reconciliation_window_job = define_asset_job(
    name=WINDOW_JOB_NAME,
    selection=AssetSelection.assets("reconciliation_backfill", "reconciliation_discrepancies")
    | AssetSelection.checks(discrepancies_are_ticketed),
    description="Backfill events missed by the receiver and reconcile every resource against "
    "the Stripe API over one window: since the last run (default), a given one "
    "(window_start/window_end), or every object (full_run). Launched by hand.",
    executor_def=in_process_executor,
    tags={"stripe_pipeline/concurrency": "reconciliation"},
)
