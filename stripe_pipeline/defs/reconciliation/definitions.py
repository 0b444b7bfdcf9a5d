"""The reconciliation area: by-day and window assets, discrepancy checks, jobs, schedule."""

from __future__ import annotations

from dagster import Definitions

from stripe_pipeline.defs.common.resources import STRIPE_API_RESOURCE_KEY, stripe_api_resource
from stripe_pipeline.defs.reconciliation.assets import (
    nightly_reconciliation_run,
    reconciliation_daily,
)
from stripe_pipeline.defs.reconciliation.checks import (
    daily_discrepancies_are_ticketed,
    discrepancies_are_ticketed,
)
from stripe_pipeline.defs.reconciliation.jobs import (
    nightly_reconciliation_job,
    reconciliation_window_job,
)
from stripe_pipeline.defs.reconciliation.schedules import nightly_reconciliation_schedule

defs = Definitions(
    assets=[reconciliation_daily, nightly_reconciliation_run],
    asset_checks=[daily_discrepancies_are_ticketed, discrepancies_are_ticketed],
    jobs=[nightly_reconciliation_job, reconciliation_window_job],
    schedules=[nightly_reconciliation_schedule],
    resources={STRIPE_API_RESOURCE_KEY: stripe_api_resource},
)
