"""PostgreSQL: the runtime role cannot touch the audit trail, yet everything runs under it.

The owner of the tables could ``ALTER TABLE audit_log DISABLE TRIGGER`` and rewrite
history; the receiver and the Dagster runs connect as a role made by
``stripe-pipeline db grant-runtime``, which owns nothing and may only read and append
to ``audit_log``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from stripe_pipeline import cli
from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.model import load_project, run_project
from stripe_pipeline.process.backoff import RetryPolicy
from stripe_pipeline.process.runner import process_pending
from stripe_pipeline.support import workflow
from tests.support.model_seed import seed_all
from tests.support.queue_events import event_doc
from tests.support.receiver_process import start_receiver

pytestmark = pytest.mark.postgres


@pytest.fixture
def runtime_url(pg_admin: Engine, fresh_pg_url: str, monkeypatch, capsys) -> Iterator[str]:
    """A fresh database, a new login role, and ``db grant-runtime`` run by the owner."""
    role = f"sp_runtime_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    try:
        monkeypatch.setenv("STRIPE_PIPELINE_DATABASE_URL", fresh_pg_url)
        assert cli.main(["db", "grant-runtime", role]) == 0
        assert f"granted the runtime privileges to {role}" in capsys.readouterr().out
        yield make_url(fresh_pg_url).set(username=role).render_as_string(hide_password=False)
    finally:
        name = make_url(fresh_pg_url).database
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


def _refused(engine: Engine, statement: str) -> str:
    with pytest.raises(Exception) as failure, engine.begin() as conn:
        conn.execute(text(statement))
    return str(failure.value)


def test_the_runtime_role_cannot_alter_disable_update_or_delete_the_audit_log(
    runtime_url: str,
) -> None:
    engine = make_engine(runtime_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO audit_log (actor, action, object_type) VALUES ('t', 'x', 'y')")
            )
        for statement in (
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
            "ALTER TABLE audit_log DISABLE TRIGGER ALL",
            "ALTER TABLE audit_log ADD COLUMN note text",
            "DROP TRIGGER audit_log_append_only ON audit_log",
            "CREATE TRIGGER sneaky BEFORE INSERT ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only()",
        ):
            assert "must be owner" in _refused(engine, statement) or "permission denied" in (
                _refused(engine, statement)
            ), statement
        # refused by privilege, before the append-only trigger is even asked
        for statement in (
            "UPDATE audit_log SET actor = 'someone else'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            assert "permission denied for table audit_log" in _refused(engine, statement)
        assert "must be owner" in _refused(engine, "ALTER TABLE stripe_events DROP COLUMN source")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT actor FROM audit_log")).scalars().all() == ["t"]
    finally:
        engine.dispose()


def test_receiver_processing_support_and_models_work_under_the_runtime_role(
    runtime_url: str,
) -> None:
    secret = "whsec_runtime_role"
    receiver = start_receiver(runtime_url, secret, workers=1, threads=2)
    try:
        good = [event_doc(n) for n in range(1, 6)]
        broken = event_doc(9, obj={"object": "payment_intent"})  # no id: dead-lettered
        for event in [*good, broken]:
            assert receiver.post_event(event).status_code == 200
    finally:
        receiver.stop()
    engine = make_engine(runtime_url)
    try:
        report = process_pending(engine, policy=RetryPolicy(max_retries=1), workers=2)
        assert (report.processed, report.dead_lettered, report.tickets_opened) == (5, 1, 1)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM stripe_payments")).scalar() == 5
            assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar() > 0
            deliveries = conn.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar()
            assert deliveries == 6
        ticket_id = report.ticket_ids[0]
        result = workflow.requeue_ticket_events(engine, ticket_id, "operator:runtime")
        assert result.events_requeued == 1
        workflow.resolve(engine, ticket_id, "checked under the runtime role", "operator:runtime")
        # the SQL models create (and own) their tables and views
        seed_all(engine)
        built = run_project(engine, load_project())
        assert built and all(r.row_count >= 0 for r in built.values())
        assert json.dumps(workflow.show_ticket(engine, ticket_id), default=str)
    finally:
        engine.dispose()


def test_grant_runtime_refuses_superusers_and_missing_roles(
    fresh_pg_url: str, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("STRIPE_PIPELINE_DATABASE_URL", fresh_pg_url)
    assert cli.main(["db", "grant-runtime", "postgres"]) == 1
    assert "is a superuser" in capsys.readouterr().err
    assert cli.main(["db", "grant-runtime", f"nobody_{uuid.uuid4().hex[:8]}"]) == 1
    assert "does not exist" in capsys.readouterr().err
