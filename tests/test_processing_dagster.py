"""Dagster wiring of processing: sensor, processing job, support jobs, production instance.

Uses Dagster's own test helpers (``build_sensor_context``, ``instance_for_test``,
``execute_in_process``) over real SQLite and PostgreSQL app databases.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
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
from stripe_pipeline.defs.common.resources import DatabaseResource
from stripe_pipeline.defs.processing.jobs import PROCESSING_JOB_NAME
from stripe_pipeline.defs.processing.sensors import stripe_events_sensor
from stripe_pipeline.land.envelope import envelope_from_event
from stripe_pipeline.land.store import insert_event
from tests.conftest import PG_ADMIN_URL

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
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 1
        run = create_run_for_test(instance, job_name=PROCESSING_JOB_NAME)
        assert instance.get_run_by_id(run.run_id) is not None
    finally:
        instance.dispose()
