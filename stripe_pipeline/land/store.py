"""Durable, idempotent inserts into ``stripe_events`` and ``webhook_deliveries``.

Deduplication is the database's job (unique ``stripe_event_id`` with ON CONFLICT DO
NOTHING), so concurrent copies of one event on several workers still give one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Text, bindparam, cast, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB

from stripe_pipeline.db.models import StripeEvent, WebhookDelivery
from stripe_pipeline.db.statuses import EventSource
from stripe_pipeline.land.envelope import EventEnvelope

EVENTS = StripeEvent.__table__
DELIVERIES = WebhookDelivery.__table__


@dataclass(frozen=True, slots=True)
class Delivery:
    """One answered webhook request, for the delivery audit."""

    endpoint: str | None
    remote_addr: str | None
    outcome: str
    status_code: int
    reason: str | None = None
    stripe_event_id: str | None = None
    event_type: str | None = None
    body_bytes: int | None = None
    repeat_count: int = 1

    def row(self) -> dict:
        return {
            "endpoint": self.endpoint,
            "remote_addr": self.remote_addr,
            "outcome": self.outcome,
            "status_code": self.status_code,
            "reason": self.reason[:255] if self.reason else None,
            "stripe_event_id": self.stripe_event_id,
            "event_type": self.event_type,
            "body_bytes": self.body_bytes,
            "repeat_count": self.repeat_count,
        }


def _event_insert(dialect_name: str):
    """INSERT ... ON CONFLICT DO NOTHING, passing the body text straight to JSON(B)."""
    if dialect_name == "postgresql":
        payload = cast(bindparam("payload", type_=Text), JSONB)
        stmt = postgresql.insert(EVENTS)
    else:
        payload = bindparam("payload", type_=Text)
        stmt = sqlite.insert(EVENTS)
    stmt = stmt.values(
        stripe_event_id=bindparam("stripe_event_id"),
        event_type=bindparam("event_type"),
        api_version=bindparam("api_version"),
        livemode=bindparam("livemode"),
        account=bindparam("account"),
        object_id=bindparam("object_id"),
        stripe_created=bindparam("stripe_created"),
        payload=payload,
        source=bindparam("source"),
        endpoint=bindparam("endpoint"),
    )
    return stmt.on_conflict_do_nothing(index_elements=["stripe_event_id"]).returning(EVENTS.c.id)


_INSERTS: dict[str, object] = {}


def _params(envelope: EventEnvelope, source: str, endpoint: str | None) -> dict:
    return {**envelope.columns(), "source": source, "endpoint": endpoint}


def insert_event(
    conn: Connection,
    envelope: EventEnvelope,
    *,
    source: str = EventSource.WEBHOOK.value,
    endpoint: str | None = None,
) -> bool:
    """Insert one event as ``pending``; False when it was already stored."""
    dialect = conn.dialect.name
    stmt = _INSERTS.get(dialect)
    if stmt is None:
        stmt = _INSERTS.setdefault(dialect, _event_insert(dialect))
    result = conn.execute(stmt, _params(envelope, source, endpoint))
    return result.first() is not None


def insert_events(
    conn: Connection,
    envelopes: Sequence[EventEnvelope],
    *,
    source: str,
    endpoint: str | None = None,
) -> int:
    """Insert many events (reconciliation backfill); returns how many were new."""
    return sum(insert_event(conn, e, source=source, endpoint=endpoint) for e in envelopes)


def record_deliveries(conn: Connection, deliveries: Sequence[Delivery]) -> None:
    if deliveries:
        conn.execute(insert(DELIVERIES), [d.row() for d in deliveries])
