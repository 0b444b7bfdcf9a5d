"""The recovery area: dunning retries, fraud screening, their checks, jobs and schedules."""

from __future__ import annotations

from dagster import Definitions

from stripe_pipeline.defs.common.resources import STRIPE_API_RESOURCE_KEY, stripe_api_resource
from stripe_pipeline.defs.recovery.assets import fraud_rule_hits, payment_recovery_retries
from stripe_pipeline.defs.recovery.checks import fraud_hits_reviewed, recoveries_not_overdue
from stripe_pipeline.defs.recovery.schedules import (
    fraud_screening_job,
    fraud_screening_schedule,
    payment_recovery_job,
    payment_recovery_schedule,
)

defs = Definitions(
    assets=[payment_recovery_retries, fraud_rule_hits],
    asset_checks=[fraud_hits_reviewed, recoveries_not_overdue],
    jobs=[payment_recovery_job, fraud_screening_job],
    schedules=[payment_recovery_schedule, fraud_screening_schedule],
    resources={STRIPE_API_RESOURCE_KEY: stripe_api_resource},
)
