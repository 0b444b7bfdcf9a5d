"""Dagster wiring of processing: sensor, processing job, support jobs, production instance.

Uses Dagster's own test helpers (``build_sensor_context``, ``instance_for_test``,
``execute_in_process``) over real SQLite and PostgreSQL app databases.
"""

from __future__ import annotations

import copy
import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    RunRequest,
    RunsFilter,
    SkipReason,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import create_run_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.db.models import StripeEvent
from stripe_pipeline.defs.common.resources import DatabaseResource, StripeApiResource
from stripe_pipeline.defs.processing.assets import DOMAIN_TABLE_KEYS
from stripe_pipeline.defs.processing.jobs import (
    PROCESSING_JOB_NAME,
    parse_time,
    replay_stripe_events_job,
    support_ticket_action_job,
)
from stripe_pipeline.defs.processing.sensors import stripe_events_sensor
from stripe_pipeline.land.envelope import envelope_from_event
from stripe_pipeline.land.store import insert_event
from tests.conftest import PG_ADMIN_URL
from tests.support.dagster_processing import materialization_metadata, run_processing
from tests.support.events import make_event

ROOT = Path(__file__).resolve().parents[1]


def land(engine: Engine, events: list[dict[str, Any]]) -> None:
    """Insert events as the receiver would (pending rows in stripe_events)."""
    with engine.begin() as conn:
        for event in events:
            insert_event(conn, envelope_from_event(event))


def customer_event(n: int, created: int = 1_700_000_000) -> dict[str, Any]:
    return {
        "id": f"evt_sensor_{n}_{uuid.uuid4().hex[:6]}",
        "object": "event",
        "type": "customer.created",
        "created": created + n,
        "livemode": False,
        "api_version": "2024-06-20",
        "data": {"object": {"id": f"cus_sensor_{n}", "object": "customer", "email": None}},
    }


# ---------------------------------------------------------------- sensor


def add_run(
    instance: DagsterInstance,
    status: DagsterRunStatus,
    job_name: str = PROCESSING_JOB_NAME,
    tags: dict[str, str] | None = None,
) -> Any:
    """A run record in a given state (queued runs need a code origin, as from the UI)."""
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=InProcessCodeLocationOrigin(
                loadable_target_origin=LoadableTargetOrigin(
                    module_name="stripe_pipeline.definitions", attribute="defs"
                )
            ),
            repository_name="__repository__",
        ),
        job_name=job_name,
    )
    return create_run_for_test(
        instance, job_name=job_name, status=status, tags=tags, remote_job_origin=origin
    )


@pytest.fixture
def dagster_instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as instance:
        yield instance


def tick(instance: DagsterInstance, url: str, cursor: str | None = None) -> Any:
    with build_sensor_context(
        instance=instance, cursor=cursor, resources={"database": DatabaseResource(url=url)}
    ) as context:
        result = stripe_events_sensor(context)
        return result, context.cursor


def test_sensor_skips_when_queue_is_empty(dagster_instance, database_url: str) -> None:
    result, _ = tick(dagster_instance, database_url)
    assert isinstance(result, SkipReason)
    assert "no pending" in (result.skip_message or "")


def test_sensor_requests_a_run_with_a_unique_key(dagster_instance, engine, database_url) -> None:
    land(engine, [customer_event(1)])
    first, cursor = tick(dagster_instance, database_url)
    second, _ = tick(dagster_instance, database_url, cursor)
    assert isinstance(first, RunRequest) and isinstance(second, RunRequest)
    assert first.run_key and second.run_key and first.run_key != second.run_key
    # the cursor only carries diagnostics
    assert json.loads(cursor)["last_run_key"] == first.run_key


@pytest.mark.parametrize(
    "status",
    [
        DagsterRunStatus.QUEUED,
        DagsterRunStatus.NOT_STARTED,
        DagsterRunStatus.STARTING,
        DagsterRunStatus.STARTED,
    ],
)
def test_sensor_skips_while_a_processing_run_is_in_flight(
    dagster_instance, fresh_sqlite_url: str, status: DagsterRunStatus
) -> None:
    engine = make_engine(fresh_sqlite_url)
    land(engine, [customer_event(1)])
    engine.dispose()
    add_run(dagster_instance, status)
    result, _ = tick(dagster_instance, fresh_sqlite_url)
    assert isinstance(result, SkipReason)
    assert "queued or running" in (result.skip_message or "")


def test_sensor_requests_again_once_the_run_finished(
    dagster_instance, fresh_sqlite_url: str
) -> None:
    engine = make_engine(fresh_sqlite_url)
    land(engine, [customer_event(1)])
    engine.dispose()
    add_run(dagster_instance, DagsterRunStatus.FAILURE)
    create_run_for_test(
        dagster_instance, job_name="some_other_job", status=DagsterRunStatus.STARTED
    )
    result, _ = tick(dagster_instance, fresh_sqlite_url)
    assert isinstance(result, RunRequest)


def test_sensor_allows_configured_concurrent_runs(
    dagster_instance, fresh_sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_PIPELINE_MAX_PROCESSING_RUNS", "2")
    engine = make_engine(fresh_sqlite_url)
    land(engine, [customer_event(1)])
    engine.dispose()
    add_run(dagster_instance, DagsterRunStatus.STARTED)
    assert isinstance(tick(dagster_instance, fresh_sqlite_url)[0], RunRequest)
    add_run(dagster_instance, DagsterRunStatus.QUEUED)
    assert isinstance(tick(dagster_instance, fresh_sqlite_url)[0], SkipReason)


def test_cursor_reset_strands_nothing(dagster_instance, fresh_sqlite_url: str) -> None:
    """The queue, not the cursor, decides: a reset or garbage cursor still sees the work."""
    engine = make_engine(fresh_sqlite_url)
    land(engine, [customer_event(1)])
    _, cursor = tick(dagster_instance, fresh_sqlite_url)
    assert cursor
    for reset in (None, "", "not json at all"):
        result, _ = tick(dagster_instance, fresh_sqlite_url, reset)
        assert isinstance(result, RunRequest)
    # an event that arrives "in the past" (older created) after a request is still seen
    land(engine, [customer_event(2, created=1_000)])
    with engine.begin() as conn:
        conn.execute(
            StripeEvent.__table__.update()
            .where(StripeEvent.__table__.c.stripe_created > 1_000_000)
            .values(status="processed")
        )
    engine.dispose()
    assert isinstance(tick(dagster_instance, fresh_sqlite_url, cursor)[0], RunRequest)


def test_sensor_sees_retries_only_when_due(dagster_instance, fresh_sqlite_url: str) -> None:
    engine = make_engine(fresh_sqlite_url)
    land(engine, [customer_event(1)])
    events = StripeEvent.__table__
    with engine.begin() as conn:
        conn.execute(
            events.update().values(status="retry", next_retry_at=text("'2999-01-01 00:00:00'"))
        )
    assert isinstance(tick(dagster_instance, fresh_sqlite_url)[0], SkipReason)
    with engine.begin() as conn:
        conn.execute(
            events.update().values(status="retry", next_retry_at=text("'2000-01-01 00:00:00'"))
        )
    engine.dispose()
    assert isinstance(tick(dagster_instance, fresh_sqlite_url)[0], RunRequest)


def test_sensor_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from stripe_pipeline.defs.processing import sensors

    assert stripe_events_sensor.minimum_interval_seconds == sensors.sensor_interval_seconds()
    monkeypatch.setenv("STRIPE_PIPELINE_SENSOR_INTERVAL", "2")
    assert sensors.sensor_interval_seconds() == 2
    monkeypatch.delenv("STRIPE_PIPELINE_SENSOR_INTERVAL")
    assert sensors.sensor_interval_seconds() == 5
    assert stripe_events_sensor.default_status.value == "RUNNING"


# ---------------------------------------------------------------- production dagster.yaml


@pytest.fixture
def dagster_pg_home(pg_admin: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """DAGSTER_HOME holding deploy/dagster.yaml, its env pointing at a fresh database."""
    name = f"sp_dagster_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin = make_url(PG_ADMIN_URL)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_HOST", admin.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(admin.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", admin.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", admin.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", name)
    yield home
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.postgres
def test_production_dagster_yaml_runs_on_postgres(dagster_pg_home: Path, fresh_sqlite_url) -> None:
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    instance = DagsterInstance.from_config(str(dagster_pg_home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        assert coordinator.dequeue_interval_seconds == 1
        limits = coordinator.get_run_queue_config().tag_concurrency_limits
        assert {"key": "stripe_pipeline/concurrency", "value": "processing", "limit": 1} in limits
        assert instance.run_monitoring_enabled

        run = add_run(
            instance, DagsterRunStatus.QUEUED, tags={"stripe_pipeline/concurrency": "processing"}
        )
        stored = instance.get_run_by_id(run.run_id)
        assert stored is not None and stored.job_name == PROCESSING_JOB_NAME
        assert stored.tags["stripe_pipeline/concurrency"] == "processing"
        in_flight = RunsFilter(job_name=PROCESSING_JOB_NAME, statuses=[DagsterRunStatus.QUEUED])
        assert instance.get_runs_count(in_flight) == 1

        # the sensor's no-storm query works against this storage too
        engine = make_engine(fresh_sqlite_url)
        land(engine, [customer_event(1)])
        engine.dispose()
        assert isinstance(tick(instance, fresh_sqlite_url)[0], SkipReason)
    finally:
        instance.dispose()


def test_dev_dagster_yaml_is_a_valid_sqlite_instance(tmp_path: Path, monkeypatch) -> None:
    shutil.copyfile(ROOT / "deploy" / "dagster.dev.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        from dagster._core.storage.runs import SqliteRunStorage

        assert isinstance(instance.run_storage, SqliteRunStorage)
        queue_config = instance.run_coordinator.get_run_queue_config()
        # one lane each: a model rebuild or a reconciliation never holds processing's slot
        lanes = {
            limit["value"]: limit["limit"]
            for limit in queue_config.tag_concurrency_limits
            if limit["key"] == "stripe_pipeline/concurrency"
        }
        expected = {"processing": 1, "models": 1, "reconciliation": 1, "reconciliation_day": 1}
        assert lanes == expected
        assert queue_config.max_concurrent_runs == len(lanes)
        run = create_run_for_test(instance, job_name=PROCESSING_JOB_NAME)
        assert instance.get_run_by_id(run.run_id) is not None
    finally:
        instance.dispose()


# ---------------------------------------------------------------- processing job

T0 = 1_750_000_000
# an API that refuses connections: a charge.refunded without its refund list fails
# temporarily there, which must schedule a retry, not fail the run
UNREACHABLE_API = StripeApiResource(
    api_key="sk_test_unreachable", api_base="http://127.0.0.1:9", max_network_retries=0
)


def fixture_stream(fx: dict[str, Any]) -> list[dict[str, Any]]:
    """One event of each kind, from Stripe's own fixtures, plus an unknown type, a
    poison event and a charge.refunded whose refunds must come from the (dead) API."""
    customer = fx["customer"]["id"]
    succeeded = dict(
        copy.deepcopy(fx["payment_intent"]),
        status="succeeded",
        customer=customer,
        latest_charge=fx["charge"]["id"],
        amount_received=fx["payment_intent"]["amount"],
    )
    failed = dict(
        copy.deepcopy(fx["payment_intent"]),
        id="pi_failed_job_test",
        status="requires_payment_method",
        customer=customer,
        # a one-off payment as API versions before basil send it; a basil one (no
        # ``invoice``) would wait for its invoice payment lookup (the API is unreachable)
        invoice=None,
        last_payment_error={
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        },
    )
    charge = copy.deepcopy(fx["charge"])
    charge.pop("refunds", None)  # API >= 2022-11-15: not included unless expanded
    charge.update(id="ch_refunded_job_test", refunded=True, amount_refunded=charge["amount"])
    return [
        make_event("customer.created", fx["customer"], T0),
        make_event(
            "payment_method.attached", dict(fx["payment_method"], customer=customer), T0 + 1
        ),
        make_event("payment_intent.succeeded", succeeded, T0 + 2),
        make_event("payment_intent.payment_failed", failed, T0 + 3),
        # the product its price names comes first (else it is fetched: the API here is down)
        make_event("product.created", fx["product"], T0 + 3),
        make_event("customer.subscription.created", fx["subscription"], T0 + 4),
        make_event("invoice.paid", dict(fx["invoice"], status="paid"), T0 + 5),
        make_event("charge.dispute.created", dict(fx["dispute"], status="needs_response"), T0 + 6),
        make_event("refund.created", fx["refund"], T0 + 7),
        make_event("balance.available", {"object": "balance", "id": "bal_job_test"}, T0 + 8),
        make_event(
            "payment_intent.succeeded",
            {"object": "payment_intent", "id": "pi_poison_job_test", "amount": "lots"},
            T0 + 9,
        ),
        make_event("charge.refunded", charge, T0 + 10),
    ]


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def test_processing_job_materializes_domain_tables(
    engine: Engine, database_url: str, stripe_fixtures: dict, dagster_instance
) -> None:
    fx = stripe_fixtures
    stream = fixture_stream(fx)
    land(engine, stream)

    result = run_processing(database_url, instance=dagster_instance, stripe_api=UNREACHABLE_API)
    assert result.success

    # the domain rows
    with engine.connect() as conn:
        payments = {
            r.payment_intent_id: r
            for r in conn.execute(
                text(
                    "SELECT payment_intent_id, status, amount_minor, customer_id, "
                    "failure_code, decline_code FROM stripe_payments"
                )
            )
        }
    ok = payments[fx["payment_intent"]["id"]]
    assert (ok.status, ok.amount_minor, ok.customer_id) == (
        "succeeded",
        fx["payment_intent"]["amount"],
        fx["customer"]["id"],
    )
    declined = payments["pi_failed_job_test"]
    assert (declined.failure_code, declined.decline_code) == ("card_declined", "insufficient_funds")
    assert "pi_poison_job_test" not in payments
    assert scalar(engine, "SELECT status FROM stripe_disputes") == "needs_response"
    assert scalar(engine, "SELECT stripe_refund_id FROM stripe_refunds") == fx["refund"]["id"]
    assert scalar(engine, "SELECT status FROM stripe_subscriptions") == fx["subscription"]["status"]
    assert scalar(engine, "SELECT status FROM stripe_invoices") == "paid"
    assert scalar(engine, "SELECT stripe_customer_id FROM stripe_customers") == fx["customer"]["id"]
    assert scalar(engine, "SELECT customer_id FROM stripe_payment_methods") == fx["customer"]["id"]

    # queue states: poison dead-lettered with a ticket, the refund fetch scheduled for retry
    statuses = dict(
        (r[0], r[1]) for r in _rows(engine, "SELECT stripe_event_id, status FROM stripe_events")
    )
    events = {e["data"]["object"]["id"]: e["id"] for e in stream}
    assert statuses[events["pi_poison_job_test"]] == "dead_letter"
    assert statuses[events["ch_refunded_job_test"]] == "retry"
    assert statuses[events["bal_job_test"]] == "ignored"
    assert scalar(engine, "SELECT count(*) FROM payment_support_tickets") == 1

    # the run's metadata
    meta = materialization_metadata(result)
    assert set(meta) == {k.path[-1] for k in DOMAIN_TABLE_KEYS}
    run = meta["stripe_payments"]
    assert run["events_claimed"] == 12
    assert run["processed"] == 9 and run["ignored"] == 1
    assert run["retries_scheduled"] == 1
    assert run["dead_lettered"] == 1 and run["tickets_opened"] == 1
    assert run["oldest_pending_age_seconds"] == 0.0 and run["remaining_due"] == 0
    table = run["events_by_type_and_outcome"]
    assert "| payment_intent.succeeded | 1 | 0 | 1 | 0 | 2 |" in table
    assert "| charge.refunded | 0 | 0 | 0 | 1 | 1 |" in table
    assert meta["stripe_payments"]["rows_written"] >= 2
    assert meta["payment_support_tickets"]["rows_written"] == 1
    for name in (
        "stripe_refunds",
        "stripe_disputes",
        "stripe_customers",
        "stripe_invoices",
        "stripe_products",
        "stripe_prices",
    ):
        assert meta[name]["rows_written"] >= 1, name
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"queue_keeps_up": True, "every_dead_letter_has_a_ticket": True}

    # a second run finds nothing due (the retry waits for its backoff): nothing changes
    again = materialization_metadata(run_processing(database_url, instance=dagster_instance))
    assert again["stripe_payments"]["events_claimed"] == 0


def _rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)))


def test_run_config_overrides_batching(engine: Engine, database_url: str, dagster_instance) -> None:
    land(engine, [customer_event(n) for n in range(5)])
    result = run_processing(
        database_url,
        instance=dagster_instance,
        config={"batch_size": 2, "max_batches": 2, "retry_max_retries": 3},
    )
    meta = materialization_metadata(result)["stripe_customers"]
    assert meta["batches"] == 2 and meta["events_claimed"] == 4
    assert meta["remaining_due"] == 1
    # the leftover is what the sensor sees next
    assert isinstance(tick(dagster_instance, database_url)[0], RunRequest)


# ---------------------------------------------------------------- support jobs


def support_defs(database_url: str) -> Definitions:
    return Definitions(
        jobs=[support_ticket_action_job, replay_stripe_events_job],
        resources={"database": DatabaseResource(url=database_url)},
    )


def test_support_jobs_retry_resolve_and_replay(
    engine: Engine, database_url: str, stripe_fixtures: dict, dagster_instance
) -> None:
    land(engine, fixture_stream(stripe_fixtures))
    run_processing(database_url, instance=dagster_instance, stripe_api=UNREACHABLE_API)
    ticket_id = scalar(engine, "SELECT id FROM payment_support_tickets")
    defs = support_defs(database_url)

    retry = defs.resolve_job_def("support_ticket_action").execute_in_process(
        run_config={
            "ops": {
                "apply_ticket_action": {
                    "config": {"ticket_id": ticket_id, "action": "retry", "actor": "alice"}
                }
            }
        },
        instance=dagster_instance,
    )
    assert retry.success
    assert scalar(engine, "SELECT status FROM payment_support_tickets") == "investigating"
    assert scalar(engine, "SELECT count(*) FROM stripe_events WHERE status = 'pending'") == 1

    resolved = defs.resolve_job_def("support_ticket_action").execute_in_process(
        run_config={
            "ops": {
                "apply_ticket_action": {
                    "config": {
                        "ticket_id": ticket_id,
                        "action": "resolve",
                        "note": "poison payload, confirmed with Stripe support",
                        "actor": "alice",
                    }
                }
            }
        },
        instance=dagster_instance,
    )
    assert resolved.success
    row = _rows(engine, "SELECT status, resolution, resolved_by FROM payment_support_tickets")[0]
    assert row.status == "resolved" and row.resolution == "manual"
    assert row.resolved_by.startswith("alice")

    replay = defs.resolve_job_def("replay_stripe_events").execute_in_process(
        run_config={
            "ops": {
                "replay_selected_events": {
                    "config": {"event_type": "customer.*", "status": ["processed"]}
                }
            }
        },
        instance=dagster_instance,
    )
    assert replay.success
    pending = _rows(engine, "SELECT event_type FROM stripe_events WHERE status = 'pending'")
    assert sorted(r.event_type for r in pending) == [
        "customer.created",
        "customer.subscription.created",
        "payment_intent.succeeded",  # the re-queued poison event of the ticket
    ]


def test_replay_job_refuses_an_unfiltered_replay(database_url: str, dagster_instance) -> None:
    job = support_defs(database_url).resolve_job_def("replay_stripe_events")
    result = job.execute_in_process(
        run_config={"ops": {"replay_selected_events": {"config": {}}}},
        instance=dagster_instance,
        raise_on_error=False,
    )
    assert not result.success


def test_parse_time_accepts_unix_seconds_and_iso() -> None:
    assert parse_time("1700000000") == 1_700_000_000
    assert parse_time("2024-01-02T03:04:05Z") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_time("2024-01-02") == datetime(2024, 1, 2, tzinfo=UTC)
    assert parse_time(None) is None and parse_time(" ") is None


def test_same_second_deletion_wins(engine: Engine, database_url: str, dagster_instance) -> None:
    """Seen end to end with localstripe: create + cancel within one second."""
    sub = {
        "id": "sub_same_second",
        "object": "subscription",
        "customer": "cus_same_second",
        "status": "active",
        "created": T0,
    }
    land(
        engine,
        [
            make_event("customer.subscription.created", sub, T0, event_id="evt_zzz_created"),
            make_event(
                "customer.subscription.deleted",
                dict(sub, status="canceled", canceled_at=T0, ended_at=T0),
                T0,
                event_id="evt_aaa_deleted",
            ),
        ],
    )
    assert run_processing(database_url, instance=dagster_instance).success
    row = _rows(engine, "SELECT status, deleted_at FROM stripe_subscriptions")[0]
    assert row.deleted_at is not None
    assert row.status == "canceled"


def test_linger_takes_events_landed_during_the_run(fresh_sqlite_url: str, dagster_instance) -> None:
    """With linger, a run that is already up applies a new event at once."""
    engine = make_engine(fresh_sqlite_url)
    land(engine, [customer_event(1)])
    late = threading.Timer(1.0, land, args=(engine, [customer_event(2)]))
    late.start()
    try:
        result = run_processing(
            fresh_sqlite_url, instance=dagster_instance, config={"linger_seconds": 3.0}
        )
    finally:
        late.join()
    meta = materialization_metadata(result)["stripe_customers"]
    assert meta["events_claimed"] == 2 and meta["processed"] == 2
    assert meta["remaining_due"] == 0
    assert scalar(engine, "SELECT count(*) FROM stripe_customers") == 2
    engine.dispose()
