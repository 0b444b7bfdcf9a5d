"""``daily_privacy_schedule``: on by default; ``STRIPE_PIPELINE_PRIVACY_SCHEDULE=off``
starts it stopped, ``STRIPE_PIPELINE_PRIVACY_CRON`` (UTC) moves it. Read when the code
location loads; a bad value fails the load instead of silently never running."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, ScheduleDefinition

from stripe_pipeline.config import PrivacyOptions, load_privacy_options
from stripe_pipeline.defs.privacy.jobs import daily_privacy_job


def build_schedule(options: PrivacyOptions | None = None) -> ScheduleDefinition:
    options = options or load_privacy_options()
    return ScheduleDefinition(
        name="daily_privacy_schedule",
        job=daily_privacy_job,
        cron_schedule=options.cron,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING
        if options.schedule_enabled
        else DefaultScheduleStatus.STOPPED,
        description="Daily retention and erasure of deleted customers (docs/privacy.md).",
        tags={"stripe_pipeline/trigger": "schedule"},
    )


daily_privacy_schedule = build_schedule()
