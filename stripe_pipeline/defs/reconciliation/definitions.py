"""The reconciliation area: nightly run assets, discrepancy check, job and schedule."""

from __future__ import annotations

from dagster import Definitions

from stripe_pipeline.defs.common.resources import STRIPE_API_RESOURCE_KEY, stripe_api_resource
from stripe_pipeline.defs.reconciliation.assets import nightly_reconciliation_run
from stripe_pipeline.defs.reconciliation.checks import discrepancies_are_ticketed
from stripe_pipeline.defs.reconciliation.jobs import nightly_reconciliation_job
from stripe_pipeline.defs.reconciliation.schedules import nightly_reconciliation_schedule

defs = Definitions(
    assets=[nightly_reconciliation_run],
    asset_checks=[discrepancies_are_ticketed],
    jobs=[nightly_reconciliation_job],
    schedules=[nightly_reconciliation_schedule],
    resources={STRIPE_API_RESOURCE_KEY: stripe_api_resource},
)
