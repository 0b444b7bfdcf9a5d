"""Schedules of recovery and fraud screening.

Fraud screening only reads events and opens tickets: it runs by default
(``STRIPE_PIPELINE_FRAUD_SCHEDULE=off`` stops it). Payment recovery retries charge
cards, so its schedule is stopped unless ``STRIPE_PIPELINE_RECOVERY_SCHEDULE=on`` (or
an operator starts it in the UI or with ``dagster schedule start``).
"""

from __future__ import annotations

from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job

from stripe_pipeline.config import ScheduleOptions, load_schedule_options

payment_recovery_job = define_asset_job(
    "payment_recovery",
    selection=AssetSelection.assets("payment_recovery_retries"),
    description="Execute due payment recovery retries once.",
)
fraud_screening_job = define_asset_job(
    "fraud_screening",
    selection=AssetSelection.assets("fraud_rule_hits"),
    description="Run the fraud rules over recent events.",
)


def build_schedules(
    options: ScheduleOptions | None = None,
) -> tuple[ScheduleDefinition, ScheduleDefinition]:
    """(payment recovery, fraud screening) from ``options`` (default: the environment)."""
    options = options or load_schedule_options()
    running, stopped = DefaultScheduleStatus.RUNNING, DefaultScheduleStatus.STOPPED
    return (
        ScheduleDefinition(
            name="payment_recovery_schedule",
            job=payment_recovery_job,
            cron_schedule="*/15 * * * *",
            default_status=running if options.payment_recovery else stopped,
            description="Due dunning retries (charges cards: opt-in).",
        ),
        ScheduleDefinition(
            name="fraud_screening_schedule",
            job=fraud_screening_job,
            cron_schedule="*/10 * * * *",
            default_status=running if options.fraud_screening else stopped,
            description="Fraud rules over recent events (charges nothing).",
        ),
    )


payment_recovery_schedule, fraud_screening_schedule = build_schedules()
