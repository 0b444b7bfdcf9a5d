"""Inserts guarded by a partial unique index keep working on one long-lived
PostgreSQL connection.

psycopg prepares a statement after ``prepare_threshold`` executions (5); a few
executions later PostgreSQL may switch the prepared statement to a generic plan,
and ``ON CONFLICT (...) WHERE <predicate>`` can then infer the partial index only if
the predicate is SQL text, not a bound parameter.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, func, select

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.db.models import PaymentRecoveryAttempt, PaymentSupportTicket
from stripe_pipeline.recover.open import FailedPayment, open_recovery
from stripe_pipeline.support.tickets import TicketRequest, open_ticket

pytestmark = pytest.mark.postgres

# well past psycopg's prepare threshold (5) and PostgreSQL's five custom plans
REPEATS = 40


@pytest.fixture
def pg_conn(fresh_pg_url: str) -> Iterator[Connection]:
    engine = make_engine(fresh_pg_url)
    with engine.connect() as conn:
        prepare_threshold = conn.connection.dbapi_connection.prepare_threshold
        assert prepare_threshold is not None and prepare_threshold < REPEATS / 4
        yield conn
    engine.dispose()


def _backend_pid(conn: Connection) -> int:
    with conn.begin():
        return conn.execute(select(func.pg_backend_pid())).scalar_one()


def test_ticket_inserts_past_the_prepare_threshold_on_one_connection(
    pg_conn: Connection,
) -> None:
    pid = _backend_pid(pg_conn)
    for n in range(REPEATS):
        with pg_conn.begin():
            first = open_ticket(pg_conn, TicketRequest("test_issue", f"key:{n}", f"ticket {n}"))
            again = open_ticket(pg_conn, TicketRequest("test_issue", f"key:{n}", f"ticket {n}"))
        assert first.created and not again.created and again.ticket_id == first.ticket_id
    assert _backend_pid(pg_conn) == pid  # one session throughout
    t = PaymentSupportTicket.__table__.c
    with pg_conn.begin():
        rows = pg_conn.execute(select(func.count(), func.sum(t.occurrences))).one()
    assert tuple(rows) == (REPEATS, 2 * REPEATS)


def test_recovery_inserts_past_the_prepare_threshold_on_one_connection(
    pg_conn: Connection,
) -> None:
    pid = _backend_pid(pg_conn)
    for n in range(REPEATS):
        failure = FailedPayment(
            payment_intent_id=f"pi_{n}",
            customer_id=f"cus_{n}",
            failure_code="card_declined",
            decline_code="insufficient_funds",
            amount_minor=1000 + n,
            currency="usd",
            stripe_event_id=f"evt_{n}",
        )
        with pg_conn.begin():
            decision = open_recovery(pg_conn, failure)
        assert decision.action == "opened" and decision.recovery_id is not None
    assert _backend_pid(pg_conn) == pid
    with pg_conn.begin():
        count = pg_conn.execute(
            select(func.count()).select_from(PaymentRecoveryAttempt.__table__)
        ).scalar_one()
    assert count == REPEATS
