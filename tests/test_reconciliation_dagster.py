"""The reconciliation area in Dagster: schedule, job config, asset metadata, ticket check."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    RunRequest,
    build_schedule_context,
)
from sqlalchemy import Engine, select, text, update

from stripe_pipeline.db.models import ReconciliationDiscrepancy, StripeSubscription
from stripe_pipeline.defs.common.resources import DatabaseResource, StripeApiResource
from stripe_pipeline.defs.reconciliation import schedules
from stripe_pipeline.defs.reconciliation.assets import (
    nightly_reconciliation_run,
    parse_time,
    preview_markdown,
)
from stripe_pipeline.defs.reconciliation.checks import discrepancies_are_ticketed
from stripe_pipeline.defs.reconciliation.jobs import nightly_reconciliation_job
from stripe_pipeline.process.runner import process_pending
from tests.support.localstripe_peer import LocalStripe, start_localstripe
from tests.support.reconciliation_traffic import LOCALSTRIPE_OBJECT_TYPES, Traffic


def test_schedule_runs_at_two_in_the_configured_timezone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(schedules.TZ_ENV, "Europe/Berlin")
    schedule = schedules.build_schedule()
    assert schedule.name == "nightly_reconciliation_schedule"
    assert schedule.job_name == "nightly_reconciliation"
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Europe/Berlin"
    at_two = datetime(2026, 11, 28, 2, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    with build_schedule_context(scheduled_execution_time=at_two) as context:
        request = schedule.evaluate_tick(context).run_requests[0]
    assert isinstance(request, RunRequest)
    assert request.run_key == "nightly-reconciliation-2026-11-28T02:00:00+01:00"
    assert request.tags["stripe_pipeline/trigger"] == "schedule"


def test_schedule_defaults_to_utc_and_refuses_unknown_zones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(schedules.TZ_ENV, raising=False)
    assert schedules.build_schedule().execution_timezone == "UTC"
    monkeypatch.setenv(schedules.TZ_ENV, "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="not an IANA timezone"):
        schedules.build_schedule()


def test_config_times_and_preview() -> None:
    assert parse_time("") is None
    assert parse_time("1795750000") == 1795750000
    assert parse_time("2026-11-27T00:00:00Z") == parse_time("2026-11-27T00:00:00")
    assert preview_markdown([]) == "_no discrepancies in this run_"
    table = preview_markdown(
        [
            {
                "object_type": "payment",
                "object_id": "pi_1",
                "kind": "field_mismatch",
                "field": "status",
                "local_value": "processing",
                "remote_value": "succeeded",
                "status": "repaired",
            }
        ]
    )
    assert (
        "| payment | pi_1 | field_mismatch | status | processing | succeeded | repaired |" in table
    )


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    ls = start_localstripe()
    try:
        yield ls
    finally:
        ls.stop()


def _run(ls: LocalStripe, database_url: str, **config: Any):
    defs = Definitions(
        assets=[nightly_reconciliation_run],
        asset_checks=[discrepancies_are_ticketed],
        jobs=[nightly_reconciliation_job],
        resources={
            "database": DatabaseResource(url=database_url),
            "stripe_api": StripeApiResource(
                api_key=ls.api_key, api_base=ls.base_url, max_network_retries=1
            ),
        },
    )
    op_config = {
        "object_types": list(LOCALSTRIPE_OBJECT_TYPES),
        "api_created_filter": False,  # localstripe refuses created[...] on most lists
        **config,
    }
    return defs.resolve_job_def("nightly_reconciliation").execute_in_process(
        run_config={"ops": {"nightly_reconciliation_run": {"config": op_config}}},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _metadata(result, key: str) -> dict[str, Any]:
    [materialization] = [
        m for m in result.get_asset_materialization_events() if m.asset_key.path[-1] == key
    ]
    return {k: v.value for k, v in materialization.materialization.metadata.items()}


def _check(result):
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def _tickets(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT dedupe_key, status FROM payment_support_tickets ORDER BY id")
        ).all()


@pytest.mark.slow
def test_job_backfills_shows_a_preview_and_the_check_opens_then_closes_tickets(
    localstripe: LocalStripe, database_url: str, engine: Engine
) -> None:
    localstripe.flush()
    traffic = Traffic(localstripe)
    customer, pm = traffic.customer_with_card()
    pi = traffic.payment(customer, pm, 1800)
    refund = traffic.refund(pi, 300)
    traffic.subscription(customer)

    first = _run(localstripe, database_url, full_run=True)
    assert first.success
    backfill = _metadata(first, "reconciliation_backfill")
    assert backfill["events_backfilled"] == len(traffic.list("events"))
    assert _check(first).passed  # everything missing was repaired from the API
    process_pending(engine)

    with engine.begin() as conn:
        conn.execute(text("UPDATE stripe_refunds SET currency = 'eur'"))  # ticket, not repair
        conn.execute(text("UPDATE stripe_payments SET status = 'processing'"))  # repair
    second = _run(localstripe, database_url)
    assert second.success
    meta = _metadata(second, "reconciliation_discrepancies")
    assert meta["field_mismatch"] == 3  # the two payments' status, the refund's currency
    assert meta["repaired_objects"] == 2 and meta["left_open"] == 1
    assert (
        f"| refund | {refund} | field_mismatch | currency | eur | usd | open |" in meta["preview"]
    )
    check = _check(second)
    assert not check.passed
    assert _tickets(engine) == [(f"reconciliation:refund:{refund}:field_mismatch:currency", "open")]

    third = _run(localstripe, database_url)  # still wrong: same ticket, no second one
    assert not _check(third).passed and len(_tickets(engine)) == 1

    with engine.begin() as conn:
        conn.execute(text("UPDATE stripe_refunds SET currency = 'usd'"))
    fourth = _run(localstripe, database_url)
    assert _check(fourth).passed
    assert _tickets(engine) == [
        (f"reconciliation:refund:{refund}:field_mismatch:currency", "resolved")
    ]


@pytest.mark.slow
def test_failed_run_fails_the_step_with_the_reason(database_url: str) -> None:
    ls = start_localstripe()
    ls.stop()  # nothing listens any more
    result = _run(ls, database_url)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "failed while backfilling events" in message and "APIConnectionError" in message


@pytest.mark.slow
def test_job_publishes_numeric_string_null_and_object_values(
    localstripe: LocalStripe, database_url: str, engine: Engine
) -> None:
    """A discrepancy's JSON value may be any JSON value; the run publishes them all.

    On SQLite a bare number (a period end) used to fail the step after its work was
    done, when the preview read it back.
    """
    localstripe.flush()
    traffic = Traffic(localstripe)
    customer, pm = traffic.customer_with_card()
    pi = traffic.payment(customer, pm, 1800)
    refund = traffic.refund(pi, 300)
    subscription = traffic.subscription(customer)
    assert _run(localstripe, database_url, full_run=True).success
    process_pending(engine)

    with engine.begin() as conn:
        subs = StripeSubscription.__table__
        period_end = conn.execute(select(subs.c.current_period_end)).scalar_one()
        conn.execute(  # compared as Unix seconds, a number: repaired
            update(subs).values(current_period_end=period_end + timedelta(seconds=60))
        )
        conn.execute(text("UPDATE stripe_refunds SET currency = 'eur'"))  # a string: open
        conn.execute(text("DELETE FROM stripe_invoices"))  # null locally, an object remotely
    result = _run(localstripe, database_url, full_run=True)
    assert result.success, [
        e.step_failure_data.error.message
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ]
    d = ReconciliationDiscrepancy.__table__.c
    with engine.connect() as conn:
        values = {
            (r.object_type, r.kind, r.field): (r.local_value, r.remote_value)
            for r in conn.execute(
                select(d.object_type, d.kind, d.field, d.local_value, d.remote_value)
            )
        }
    local_end, remote_end = values[("subscription", "field_mismatch", "current_period_end")]
    assert isinstance(local_end, int) and local_end == remote_end + 60
    assert values[("refund", "field_mismatch", "currency")] == ("eur", "usd")
    local_invoice, remote_invoice = values[("invoice", "missing_locally", "")]
    assert local_invoice is None and remote_invoice["status"] == "paid"
    preview = _metadata(result, "reconciliation_discrepancies")["preview"]
    assert f"| subscription | {subscription} | field_mismatch | current_period_end |" in preview
    assert f"| refund | {refund} | field_mismatch | currency | eur | usd | open |" in preview
    assert "| invoice |" in preview and "missing_locally" in preview
    assert not _check(result).passed  # the refund's currency is ticketed
