"""Job ``nightly_reconciliation``: the run, then the discrepancy check (tickets)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

from stripe_pipeline.defs.reconciliation.checks import discrepancies_are_ticketed

RECONCILIATION_JOB_NAME = "nightly_reconciliation"

nightly_reconciliation_job = define_asset_job(
    name=RECONCILIATION_JOB_NAME,
    selection=AssetSelection.assets("reconciliation_backfill", "reconciliation_discrepancies")
    | AssetSelection.checks(discrepancies_are_ticketed),
    description="Backfill events missed by the receiver and reconcile payments, refunds, "
    "disputes, subscriptions and invoices against the Stripe API. Nightly by schedule; "
    "launch by hand with a window (window_start/window_end) or full_run in the config.",
    executor_def=in_process_executor,
    tags={"stripe_pipeline/concurrency": "reconciliation"},
)
