"""``nightly_reconciliation_schedule``: 02:00 every night in a configurable timezone.

Each tick materializes yesterday's partition of ``reconciliation_daily`` (UTC days)
and re-checks the ``STRIPE_PIPELINE_RECONCILIATION_TRAILING_DAYS`` days before it
(default 2: objects changed after their day was reconciled, late events), one run
per day, in parallel under the shared rate limit.

Running by default (it charges nothing; ``STRIPE_PIPELINE_RECONCILIATION_SCHEDULE=off``
stops it). Timezone and cron (``STRIPE_PIPELINE_RECONCILIATION_TZ``, default UTC;
``STRIPE_PIPELINE_RECONCILIATION_CRON``, default ``0 2 * * *``) are read through
``stripe_pipeline.config`` when the code location loads; a wrong timezone fails the
load instead of silently running at another hour.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from stripe_pipeline.config import ScheduleOptions, load_schedule_options
from stripe_pipeline.defs.reconciliation.jobs import nightly_reconciliation_job


def nightly_days(scheduled: datetime, trailing_days: int, first_day: str) -> list[str]:
    """Yesterday (UTC) and the ``trailing_days`` before it, newest first, from ``first_day``."""
    yesterday = scheduled.astimezone(UTC).date() - timedelta(days=1)
    first = date.fromisoformat(first_day)
    days = [yesterday - timedelta(days=n) for n in range(trailing_days + 1)]
    return [d.isoformat() for d in days if d >= first]


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
        description="Nightly: reconcile yesterday (UTC) and re-check the "
        f"{options.reconciliation_trailing_days} day(s) before it, one run per day.",
    )
    def nightly_reconciliation_schedule(context: ScheduleEvaluationContext) -> list[RunRequest]:
        scheduled = context.scheduled_execution_time or datetime.now(UTC)
        tick = scheduled.isoformat()
        return [
            RunRequest(
                run_key=f"nightly-reconciliation-{day}-{tick}",
                partition_key=day,
                tags={"stripe_pipeline/trigger": "schedule"},
            )
            for day in nightly_days(
                scheduled, options.reconciliation_trailing_days, options.reconciliation_start_date
            )
        ]

    return nightly_reconciliation_schedule


nightly_reconciliation_schedule = build_schedule()
