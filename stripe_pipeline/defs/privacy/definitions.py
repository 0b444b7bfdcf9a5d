"""The privacy area: the erase job, the daily privacy job and its schedule."""

from __future__ import annotations

from dagster import Definitions

from stripe_pipeline.defs.privacy.jobs import daily_privacy_job, erase_customer_job
from stripe_pipeline.defs.privacy.schedules import daily_privacy_schedule

defs = Definitions(
    jobs=[erase_customer_job, daily_privacy_job],
    schedules=[daily_privacy_schedule],
)
