"""Schema only through Alembic: round trips on both backends and no model drift."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from stripe_pipeline.db import migrate
from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.db.models import metadata
from stripe_pipeline.money import to_decimal

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

PLAN_TABLES = {
    "stripe_events",
    "payment_recovery_attempts",
    "stripe_payments",
    "stripe_refunds",
    "stripe_disputes",
    "payment_support_tickets",
}


def _drift(engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, metadata)


@pytest.mark.parametrize("empty_database_url", BACKENDS, indirect=True)
def test_upgrade_downgrade_upgrade_matches_models(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    try:
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
        assert set(inspect(engine).get_table_names()) >= PLAN_TABLES
        assert _drift(engine) == []

        migrate.downgrade(engine, "base")
        assert migrate.current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}

        migrate.upgrade(engine)
        assert _drift(engine) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("empty_database_url", BACKENDS, indirect=True)
def test_plan_enhancements_are_their_own_migration(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    try:
        migrate.upgrade(engine, "0001_base")
        inspector = inspect(engine)
        assert {"stripe_events", "payment_recovery_attempts", "stripe_payments"} <= set(
            inspector.get_table_names()
        )
        assert "retry_count" not in {c["name"] for c in inspector.get_columns("stripe_events")}

        migrate.upgrade(engine, "0002_plan_enhancements")
        inspector = inspect(engine)
        events = {c["name"] for c in inspector.get_columns("stripe_events")}
        assert {"retry_count", "next_retry_at", "error_context"} <= events
        attempts = {c["name"] for c in inspector.get_columns("payment_recovery_attempts")}
        assert {"recovery_strategy", "last_error_type", "support_ticket_id"} <= attempts
        fks = inspector.get_foreign_keys("payment_recovery_attempts")
        assert [fk["referred_table"] for fk in fks] == ["payment_support_tickets"]
    finally:
        engine.dispose()


def test_derived_amount_uses_currency_exponent(engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO stripe_payments (payment_intent_id, status, amount_minor, currency) "
                "VALUES ('pi_jpy', 'succeeded', 1234, 'jpy'), ('pi_usd', 'succeeded', 1234, 'usd'),"
                " ('pi_kwd', 'succeeded', 1234, 'KWD')"
            )
        )
        rows = dict(
            conn.execute(text("SELECT payment_intent_id, amount FROM stripe_payments")).all()
        )
    assert float(rows["pi_jpy"]) == 1234
    assert float(rows["pi_usd"]) == 12.34
    assert float(rows["pi_kwd"]) == 1.234
    if engine.dialect.name == "postgresql":  # exact NUMERIC: the same as the Python rule
        for key, currency in (("pi_jpy", "jpy"), ("pi_usd", "usd"), ("pi_kwd", "kwd")):
            assert rows[key] == to_decimal(1234, currency)


def test_audit_log_refuses_update_and_delete(engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO audit_log (actor, action, object_type) VALUES ('t', 'create', 'x')")
        )
    for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT actor FROM audit_log")).scalar_one() == "t"


def test_one_open_ticket_per_dedupe_key(engine) -> None:
    insert = text(
        "INSERT INTO payment_support_tickets (issue_type, status, priority, dedupe_key, title) "
        "VALUES ('dead_letter', :status, 'high', 'k1', 't')"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"status": "open"})
    with pytest.raises(Exception), engine.begin() as conn:  # noqa: B017 - driver-specific class
        conn.execute(insert, {"status": "investigating"})
    with engine.begin() as conn:
        conn.execute(text("UPDATE payment_support_tickets SET status = 'resolved'"))
        conn.execute(insert, {"status": "open"})
        assert conn.execute(text("SELECT count(*) FROM payment_support_tickets")).scalar_one() == 2
