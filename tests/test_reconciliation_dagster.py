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
from sqlalchemy import Engine, func, insert, select, text, update

from stripe_pipeline.config import load_schedule_options
from stripe_pipeline.db.models import (
    PaymentSupportTicket,
    ReconciliationDiscrepancy,
    ReconciliationRun,
    StripeSubscription,
)
from stripe_pipeline.defs.common.resources import DatabaseResource, StripeApiResource
from stripe_pipeline.defs.reconciliation import schedules
from stripe_pipeline.defs.reconciliation.assets import (
    nightly_reconciliation_run,
    parse_time,
    preview_markdown,
)
from stripe_pipeline.defs.reconciliation.checks import discrepancies_are_ticketed
from stripe_pipeline.defs.reconciliation.jobs import reconciliation_window_job
from stripe_pipeline.process.runner import process_pending
from stripe_pipeline.reconcile.heal import dedupe_key
from stripe_pipeline.support.tickets import TicketRequest, open_tickets
from tests.support.localstripe_peer import LocalStripe, start_localstripe
from tests.support.reconciliation_traffic import LOCALSTRIPE_OBJECT_TYPES, Traffic


def test_schedule_runs_at_two_in_the_configured_timezone() -> None:
    options = load_schedule_options({"STRIPE_PIPELINE_RECONCILIATION_TZ": "Europe/Berlin"})
    schedule = schedules.build_schedule(options)
    assert schedule.name == "nightly_reconciliation_schedule"
    assert schedule.job_name == "nightly_reconciliation"
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Europe/Berlin"
    at_two = datetime(2026, 11, 28, 2, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    from stripe_pipeline.definitions import defs  # the job's partitions are found there

    repository = defs.get_repository_def()
    with build_schedule_context(
        scheduled_execution_time=at_two, repository_def=repository
    ) as context:
        requests = schedule.evaluate_tick(context).run_requests
    # yesterday in UTC (01:00 UTC on the 28th) and the two days before it, a run each
    assert [r.partition_key for r in requests] == ["2026-11-27", "2026-11-26", "2026-11-25"]
    request = requests[0]
    assert isinstance(request, RunRequest)
    assert request.run_key == "nightly-reconciliation-2026-11-27-2026-11-28T02:00:00+01:00"
    assert request.tags["stripe_pipeline/trigger"] == "schedule"


def test_schedule_defaults_to_utc_and_refuses_unknown_zones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STRIPE_PIPELINE_RECONCILIATION_TZ", raising=False)
    assert schedules.build_schedule().execution_timezone == "UTC"  # read at load
    monkeypatch.setenv("STRIPE_PIPELINE_RECONCILIATION_TZ", "Mars/Olympus_Mons")
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
        jobs=[reconciliation_window_job],
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
    return defs.resolve_job_def("reconciliation_window").execute_in_process(
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


MANY = 5000


def _seed_open_discrepancies(engine: Engine, n: int) -> int:
    """``n`` open discrepancies of one run, values of every JSON kind; returns the run id."""
    runs, d = ReconciliationRun.__table__, ReconciliationDiscrepancy.__table__
    with engine.begin() as conn:
        run_id = conn.execute(insert(runs).returning(runs.c.id)).scalar_one()
        conn.execute(
            insert(d),
            [
                {
                    "run_id": run_id,
                    "first_seen_run_id": run_id,
                    "object_type": ("subscription", "refund", "payment")[i % 3],
                    "object_id": f"obj_{i}",
                    "kind": "field_mismatch",
                    "field": ("current_period_end", "currency", "status")[i % 3],
                    "local_value": (1795750000 + i, "eur", None)[i % 3],
                    "remote_value": (1795760000 + i, "usd", {"status": "succeeded"})[i % 3],
                }
                for i in range(n)
            ],
        )
    return run_id


def test_check_tickets_and_closes_thousands_of_discrepancies_on_one_connection(
    database_url: str, engine: Engine
) -> None:
    """5,000 open discrepancies in one check (one transaction, one connection): on
    PostgreSQL the per-row ticket inserts used to fail after about eleven."""
    run_id = _seed_open_discrepancies(engine, MANY)
    # a difference found again while its earlier ticket is still open counts on that ticket
    with engine.begin() as conn:
        [earlier] = open_tickets(
            conn,
            [
                TicketRequest(
                    "reconciliation_discrepancy",
                    dedupe_key("subscription", "obj_0", "field_mismatch", "current_period_end"),
                    "seen before",
                )
            ],
        )
    database = DatabaseResource(url=database_url)

    first = discrepancies_are_ticketed(database=database)
    assert not first.passed
    assert first.metadata["unresolved"].value == MANY
    assert first.metadata["tickets_opened_or_seen_again"].value == MANY
    d, t = ReconciliationDiscrepancy.__table__.c, PaymentSupportTicket.__table__.c
    with engine.connect() as conn:
        assert conn.execute(
            select(d.status, func.count(func.distinct(d.ticket_id))).group_by(d.status)
        ).all() == [("ticketed", MANY)]
        assert conn.execute(
            select(t.status, func.count(), func.sum(t.occurrences)).group_by(t.status)
        ).all() == [("open", MANY, MANY + 1)]
        [(ticket_id, occurrences)] = conn.execute(
            select(d.ticket_id, t.occurrences)
            .join_from(ReconciliationDiscrepancy, PaymentSupportTicket, t.id == d.ticket_id)
            .where(d.object_id == "obj_0")
        ).all()
        assert (ticket_id, occurrences) == (earlier.ticket_id, 2)
        opened = conn.execute(
            text("SELECT count(*) FROM audit_log WHERE action = 'ticket_opened'")
        ).scalar_one()
        assert opened == MANY  # the earlier one included, no audit row for a repeat
        details = conn.execute(
            select(t.details).where(
                t.dedupe_key == dedupe_key("payment", "obj_2", "field_mismatch", "status")
            )
        ).scalar_one()
        assert details["local_value"] is None and details["remote_value"] == {"status": "succeeded"}

    again = discrepancies_are_ticketed(database=database)  # nothing new to ticket
    assert again.metadata["tickets_opened_or_seen_again"].value == 0
    assert again.metadata["tickets_closed"].value == 0

    with engine.begin() as conn:  # a later run no longer finds them
        conn.execute(
            update(ReconciliationDiscrepancy.__table__).values(
                status="resolved", resolved_run_id=run_id + 1
            )
        )
    closed = discrepancies_are_ticketed(database=database)
    assert closed.passed and closed.metadata["tickets_closed"].value == MANY
    with engine.connect() as conn:
        assert conn.execute(
            select(t.status, t.resolution, func.count()).group_by(t.status, t.resolution)
        ).all() == [("resolved", "auto_closed", MANY)]
        note = conn.execute(select(t.resolution_note).where(t.id == earlier.ticket_id)).scalar_one()
        assert note == f"discrepancy resolved by reconciliation run {run_id + 1}"
        resolved = conn.execute(
            text("SELECT count(*) FROM audit_log WHERE action = 'ticket_resolved'")
        ).scalar_one()
        assert resolved == MANY
