"""Schedules of recovery. Stopped by default: retries charge cards, so an operator
turns them on deliberately (in the UI or with ``dagster schedule start``)."""

from __future__ import annotations

from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job

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

payment_recovery_schedule = ScheduleDefinition(
    name="payment_recovery_schedule",
    job=payment_recovery_job,
    cron_schedule="*/15 * * * *",
    default_status=DefaultScheduleStatus.STOPPED,
)
fraud_screening_schedule = ScheduleDefinition(
    name="fraud_screening_schedule",
    job=fraud_screening_job,
    cron_schedule="*/10 * * * *",
    default_status=DefaultScheduleStatus.STOPPED,
)
