"""``nightly_reconciliation_schedule``: 02:00 every night in a configurable timezone.

Running by default (it charges nothing; ``STRIPE_PIPELINE_RECONCILIATION_SCHEDULE=off``
stops it). Timezone and cron (``STRIPE_PIPELINE_RECONCILIATION_TZ``, default UTC;
``STRIPE_PIPELINE_RECONCILIATION_CRON``, default ``0 2 * * *``) are read through
``stripe_pipeline.config`` when the code location loads; a wrong timezone fails the
load instead of silently running at another hour.
"""

from __future__ import annotations

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from stripe_pipeline.config import ScheduleOptions, load_schedule_options
from stripe_pipeline.defs.reconciliation.jobs import nightly_reconciliation_job


def build_schedule(options: ScheduleOptions | None = None) -> ScheduleDefinition:
    """The schedule from ``options`` (default: the environment, at load)."""
    options = options or load_schedule_options()

    @schedule(
        name="nightly_reconciliation_schedule",
        job=nightly_reconciliation_job,
        cron_schedule=options.reconciliation_cron,
        execution_timezone=options.reconciliation_timezone,
        default_status=(
            DefaultScheduleStatus.RUNNING
            if options.reconciliation
            else DefaultScheduleStatus.STOPPED
        ),
        description="Nightly reconciliation over the window since the last successful run.",
    )
    def nightly_reconciliation_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        scheduled = context.scheduled_execution_time
        key = scheduled.isoformat() if scheduled else None
        return RunRequest(
            run_key=f"nightly-reconciliation-{key}" if key else None,
            tags={"stripe_pipeline/trigger": "schedule"},
        )

    return nightly_reconciliation_schedule


nightly_reconciliation_schedule = build_schedule()
