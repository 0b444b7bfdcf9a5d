"""``nightly_reconciliation_schedule``: 02:00 every night in a configurable timezone.

``STRIPE_PIPELINE_RECONCILIATION_TZ`` (IANA name, default UTC) and
``STRIPE_PIPELINE_RECONCILIATION_CRON`` (default ``0 2 * * *``) are read when the
code location loads; a wrong timezone fails the load instead of silently running at
another hour.
"""

from __future__ import annotations

import os
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dagster import RunRequest, ScheduleEvaluationContext, schedule

from stripe_pipeline.defs.reconciliation.jobs import nightly_reconciliation_job

DEFAULT_CRON = "0 2 * * *"
TZ_ENV = "STRIPE_PIPELINE_RECONCILIATION_TZ"
CRON_ENV = "STRIPE_PIPELINE_RECONCILIATION_CRON"


def reconciliation_timezone() -> str:
    name = (os.environ.get(TZ_ENV) or "UTC").strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{TZ_ENV}={name!r} is not an IANA timezone") from exc
    return name


def build_schedule():
    """The schedule, with timezone and cron from the environment (called at load)."""

    @schedule(
        name="nightly_reconciliation_schedule",
        job=nightly_reconciliation_job,
        cron_schedule=(os.environ.get(CRON_ENV) or DEFAULT_CRON).strip(),
        execution_timezone=reconciliation_timezone(),
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
