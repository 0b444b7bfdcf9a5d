"""The privacy area in Dagster: the erase job and the daily job, run in process against
real databases, and the schedule's defaults."""

from __future__ import annotations

from typing import Any

import pytest
from dagster import DefaultScheduleStatus, Definitions, ExecuteInProcessResult
from sqlalchemy import Engine, select

from stripe_pipeline.audit import AUDIT_LOG
from stripe_pipeline.config import load_privacy_options
from stripe_pipeline.defs.common.resources import DatabaseResource
from stripe_pipeline.defs.privacy import schedules
from stripe_pipeline.defs.privacy.jobs import daily_privacy_job, erase_customer_job
from tests.support import privacy_data as pd
from tests.support import retention_data as rd


def run(
    database_url: str, job_name: str, op: str, config: dict[str, Any]
) -> ExecuteInProcessResult:
    defs = Definitions(
        jobs=[erase_customer_job, daily_privacy_job],
        resources={"database": DatabaseResource(url=database_url)},
    )
    job = defs.resolve_job_def(job_name)
    return job.execute_in_process(
        run_config={"ops": {op: {"config": config}}}, raise_on_error=False
    )


def step_metadata(result: ExecuteInProcessResult, op: str) -> dict[str, Any]:
    for event in result.all_events:
        if event.step_key == op and event.event_type_value == "STEP_OUTPUT":
            data = event.event_specific_data.metadata  # type: ignore[union-attr]
            return {k: v.value for k, v in data.items()}
    raise AssertionError(f"no output metadata for {op}")


def test_erase_customer_job_erases_and_is_audited(
    database_url: str, engine: Engine, stripe_fixtures: dict
) -> None:
    pd.seed(engine, stripe_fixtures, [pd.ADA])
    dry = run(
        database_url,
        "erase_customer",
        "erase_customer_data",
        {"customer_id": pd.ADA.customer_id, "dry_run": True},
    )
    assert dry.success and step_metadata(dry, "erase_customer_data")["dry_run"] is True
    assert pd.leaks(engine, pd.ADA.secrets())

    result = run(
        database_url,
        "erase_customer",
        "erase_customer_data",
        {"customer_id": pd.ADA.customer_id, "actor": "dpo@example.test#123"},
    )
    assert result.success
    meta = step_metadata(result, "erase_customer_data")
    assert meta["customer_id"] == pd.ADA.customer_id and meta["rows_changed"] > 10
    assert meta["counts"]["stripe_events"] == 10
    assert pd.leaks(engine, pd.ADA.secrets()) == []
    a = AUDIT_LOG.c
    with engine.connect() as conn:
        actor = conn.execute(select(a.actor).where(a.action == "customer_erased")).scalar_one()
    assert actor.startswith("dpo@example.test#123 (dagster run ")

    bad = run(database_url, "erase_customer", "erase_customer_data", {"customer_id": "nobody"})
    assert not bad.success
    failure = bad.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "not a Stripe customer id" in failure.message


def test_daily_privacy_job_dry_run_then_run(database_url: str, engine: Engine) -> None:
    rd.seed_events(engine)  # four processed events 120 days old, others held
    before = pd.dump(engine)
    dry = run(database_url, "daily_privacy", "daily_privacy_run", {"dry_run": True})
    assert dry.success and pd.dump(engine) == before
    assert step_metadata(dry, "daily_privacy_run")["payloads_dropped"] == 4

    real = run(database_url, "daily_privacy", "daily_privacy_run", {})
    assert real.success
    meta = step_metadata(real, "daily_privacy_run")
    assert (meta["dry_run"], meta["payloads_dropped"]) == (False, 4)
    assert meta["settings"]["payload_days"] == 90


def test_schedule_is_on_by_default_and_an_env_var_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STRIPE_PIPELINE_PRIVACY_SCHEDULE", raising=False)
    monkeypatch.delenv("STRIPE_PIPELINE_PRIVACY_CRON", raising=False)
    schedule = schedules.build_schedule()
    assert schedule.name == "daily_privacy_schedule" and schedule.job_name == "daily_privacy"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 3 * * *", "UTC")

    monkeypatch.setenv("STRIPE_PIPELINE_PRIVACY_SCHEDULE", "off")
    monkeypatch.setenv("STRIPE_PIPELINE_PRIVACY_CRON", "0 4 * * *")
    schedule = schedules.build_schedule()
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == "0 4 * * *"


def test_privacy_settings_from_the_environment() -> None:
    options = load_privacy_options({})
    assert (options.payload_days, options.delivery_days, options.ticket_days) == (90, 30, 365)
    assert (options.erase_after_delete_days, options.batch_size) == (30, 5000)
    custom = load_privacy_options(
        {
            "STRIPE_PIPELINE_RETENTION_PAYLOAD_DAYS": "30",
            "STRIPE_PIPELINE_RETENTION_DELIVERY_DAYS": "off",
            "STRIPE_PIPELINE_RETENTION_TICKET_DAYS": "0",
            "STRIPE_PIPELINE_ERASE_AFTER_DELETE_DAYS": "off",
            "STRIPE_PIPELINE_RETENTION_BATCH_SIZE": "1000",
        }
    )
    assert (custom.payload_days, custom.delivery_days, custom.ticket_days) == (30, None, None)
    assert (custom.erase_after_delete_days, custom.batch_size) == (None, 1000)
    from stripe_pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="STRIPE_PIPELINE_RETENTION_PAYLOAD_DAYS"):
        load_privacy_options({"STRIPE_PIPELINE_RETENTION_PAYLOAD_DAYS": "ninety"})
    with pytest.raises(ConfigError, match="on or off"):
        load_privacy_options({"STRIPE_PIPELINE_PRIVACY_SCHEDULE": "sometimes"})
