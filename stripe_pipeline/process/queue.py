"""The database as the event queue: batch claims with a lease, guarded status updates.

A processing run works in two transactions per batch:

1. ``claim_batch`` marks up to N due events ``processing`` with ``claimed_by`` and a
   lease, and commits. On PostgreSQL one ``UPDATE ... WHERE id IN (SELECT ... FOR
   UPDATE SKIP LOCKED) RETURNING`` statement, so concurrent runs never take the same
   event; on SQLite the same statement is the first of its transaction, which takes
   the single write lock at once (the equivalent of ``BEGIN IMMEDIATE``).
2. ``lock_owned`` opens the apply transaction: it renews the lease of the events this
   worker still owns and row-locks them until commit. Events whose lease expired and
   were taken by another run are dropped, so a slow run never overwrites a newer one.

Due means: ``pending``; ``retry`` with ``next_retry_at`` passed; ``processing`` with
an expired lease (its run crashed). A re-claim after an expired lease counts as one
failed attempt, so an event that kills its worker every time is escalated eventually.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.types import DateTime, Interval

from stripe_pipeline.db.lists import in_list
from stripe_pipeline.db.models import QUEUED_EVENTS, StripeEvent
from stripe_pipeline.process.events import QueuedEvent

EVENTS = StripeEvent.__table__
E = EVENTS.c

# statuses an operator may replay; processing is idempotent, so replay is safe
FINAL_STATUSES = ("processed", "ignored", "dead_letter")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _is_pg(conn: Connection | Engine) -> bool:
    return conn.dialect.name == "postgresql"


def db_now(conn: Connection | Engine) -> ColumnElement[Any]:
    """The clock due-ness is judged by: the server's on PostgreSQL (shared by all
    workers), the local UTC clock on SQLite (single machine, stored as naive UTC)."""
    if _is_pg(conn):
        return func.now()
    return literal(to_db_time(conn, utcnow()), DateTime(timezone=True))


def db_now_plus(conn: Connection | Engine, seconds: float) -> ColumnElement[Any]:
    if _is_pg(conn):
        return func.now() + literal(timedelta(seconds=seconds), Interval())
    return literal(to_db_time(conn, utcnow() + timedelta(seconds=seconds)), DateTime(True))


def to_db_time(conn: Connection | Engine, value: datetime) -> datetime:
    """SQLite stores datetimes as naive text: bind them as naive UTC so they compare."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value if _is_pg(conn) else value.replace(tzinfo=None)


def from_db_time(value: datetime | str | None) -> datetime | None:
    """Read back a timestamp as aware UTC (SQLite returns naive UTC, raw SQL text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# the predicate of the partial index ``ix_stripe_events_claim_order``, written as in it
QUEUED = text(QUEUED_EVENTS)


def due_condition(now: ColumnElement[Any]) -> ColumnElement[bool]:
    """Rows a run may claim now; each branch is served by ``ix_stripe_events_queue``."""
    return or_(
        E.status == "pending",
        and_(E.status == "retry", E.next_retry_at <= now),
        and_(E.status == "processing", E.lease_expires_at < now),
    )


def _id_in(conn: Connection, ids: Sequence[int]) -> ColumnElement[bool]:
    return in_list(conn, E.id, ids)


# no payload: PostgreSQL extracts most events in place (``extract_sql``); shipping
# every 2-3 KB payload out and parsing it was the larger part of a batch's cost
_RETURNING = (E.id, E.stripe_event_id, E.event_type, E.stripe_created, E.retry_count)


def _pg_claim(worker_id: str, batch_size: int, lease_seconds: float):
    """One statement: lock N due rows in claim order (skipping locked ones), lease them."""
    candidates = (
        select(E.id)
        .where(QUEUED, due_condition(func.now()))
        .order_by(E.stripe_created, E.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    return (
        update(EVENTS)
        .where(E.id.in_(candidates.scalar_subquery()))
        .values(
            status="processing",
            claimed_by=worker_id,
            lease_expires_at=func.now() + literal(timedelta(seconds=lease_seconds), Interval()),
            retry_count=case((E.status == "processing", E.retry_count + 1), else_=E.retry_count),
        )
        .returning(*_RETURNING)
    )


# SQLite: the same claim as text, because it needs ``INDEXED BY`` (SQLAlchemy has no
# SQLite table hints, and SQLite's planner otherwise sorts every queued row per claim).
# As the first statement of its transaction it takes the write lock at once.
_SQLITE_CLAIM = (
    text(
        f"""
UPDATE stripe_events
SET status = 'processing', claimed_by = :worker, lease_expires_at = :lease,
    retry_count = CASE WHEN status = 'processing' THEN retry_count + 1 ELSE retry_count END
WHERE id IN (
    SELECT id FROM stripe_events INDEXED BY ix_stripe_events_claim_order
    WHERE {QUEUED_EVENTS}
      AND (status = 'pending'
           OR (status = 'retry' AND next_retry_at <= :now)
           OR (status = 'processing' AND lease_expires_at < :now))
    ORDER BY stripe_created, id
    LIMIT :n)
RETURNING id, stripe_event_id, event_type, stripe_created, retry_count, payload
"""
    )
    .bindparams(
        bindparam("now", type_=DateTime(timezone=True)),
        bindparam("lease", type_=DateTime(timezone=True)),
    )
    .columns(E.id, E.stripe_event_id, E.event_type, E.stripe_created, E.retry_count, E.payload)
)


def claim_batch(
    engine: Engine, *, worker_id: str, batch_size: int, lease_seconds: float
) -> list[QueuedEvent]:
    """Claim up to ``batch_size`` due events for ``worker_id`` and commit the claim.

    Returned oldest first (Stripe ``created``, then row id), the order events are
    applied in. An expired-lease re-claim bumps ``retry_count`` (see module doc).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    with engine.begin() as conn:
        if _is_pg(conn):
            stmt = _pg_claim(worker_id, batch_size, lease_seconds)
            rows = conn.execute(stmt).all()
        else:
            now = utcnow().replace(tzinfo=None)
            rows = conn.execute(
                _SQLITE_CLAIM,
                {
                    "worker": worker_id,
                    "n": batch_size,
                    "now": now,
                    "lease": now + timedelta(seconds=lease_seconds),
                },
            ).all()
    events = [
        QueuedEvent(
            id=r.id,
            stripe_event_id=r.stripe_event_id,
            event_type=r.event_type,
            stripe_created=r.stripe_created,
            retry_count=r.retry_count,
            payload=getattr(r, "payload", None),
        )
        for r in rows
    ]
    events.sort(key=lambda e: (e.stripe_created, e.id))
    return events


def with_payloads(conn: Connection, events: Sequence[QueuedEvent]) -> list[QueuedEvent]:
    """The events with their payloads loaded (one SELECT for those still without)."""
    ids = [e.id for e in events if e.payload is None]
    if not ids:
        return list(events)
    payloads = dict(conn.execute(select(E.id, E.payload).where(_id_in(conn, ids))).all())
    return [e if e.payload is not None else replace(e, payload=payloads.get(e.id)) for e in events]


def lock_owned(
    conn: Connection, ids: Iterable[int], *, worker_id: str, lease_seconds: float
) -> set[int]:
    """First statement of the apply transaction: lock the events we still own.

    PostgreSQL: ``SELECT ... FOR UPDATE`` holds them until commit. SQLite: a lease
    renewal, a write, so the transaction takes the write lock up front and never fails
    later with a stale snapshot.
    """
    id_list = list(ids)
    if not id_list:
        return set()
    owned = and_(_id_in(conn, id_list), E.claimed_by == worker_id, E.status == "processing")
    if _is_pg(conn):
        # a row lock, not an update: no new row version of a 3 KB event per batch; the
        # lock keeps SKIP LOCKED claimers off these rows even if the lease runs out
        stmt = select(E.id).where(owned).with_for_update()
    else:
        stmt = (
            update(EVENTS)
            .where(owned)
            .values(lease_expires_at=db_now_plus(conn, lease_seconds))
            .returning(E.id)
        )
    return set(conn.execute(stmt).scalars())


def _owned(worker_id: str) -> ColumnElement[bool]:
    return and_(E.claimed_by == worker_id, E.status == "processing")


def mark_finished(conn: Connection, outcomes: dict[int, str], *, worker_id: str) -> int:
    """Set ``processed`` / ``ignored`` with ``processed_at``; releases the claim."""
    written = 0
    for status in ("processed", "ignored"):
        ids = [i for i, outcome in outcomes.items() if outcome == status]
        if not ids:
            continue
        result = conn.execute(
            update(EVENTS)
            .where(_id_in(conn, ids), _owned(worker_id))
            .values(
                status=status,
                processed_at=db_now(conn),
                claimed_by=None,
                lease_expires_at=None,
                next_retry_at=None,
            )
        )
        written += result.rowcount
    return written


@dataclass(frozen=True, slots=True)
class FailureUpdate:
    """New queue state of one failed event: ``retry`` (with ``next_retry_at``) or
    ``dead_letter``."""

    id: int
    status: str
    retry_count: int
    error_context: dict[str, Any]
    next_retry_at: datetime | None = None


def mark_failed(conn: Connection, updates: Sequence[FailureUpdate], *, worker_id: str) -> int:
    """Write retry / dead-letter states in one executemany; releases the claim."""
    if not updates:
        return 0
    stmt = (
        update(EVENTS)
        .where(E.id == bindparam("b_id"), _owned(worker_id))
        .values(
            status=bindparam("b_status"),
            retry_count=bindparam("b_retry_count"),
            error_context=bindparam("b_error_context", type_=EVENTS.c.error_context.type),
            next_retry_at=bindparam("b_next_retry_at", type_=DateTime(timezone=True)),
            claimed_by=None,
            lease_expires_at=None,
        )
    )
    params = [
        {
            "b_id": u.id,
            "b_status": u.status,
            "b_retry_count": u.retry_count,
            "b_error_context": u.error_context,
            "b_next_retry_at": to_db_time(conn, u.next_retry_at) if u.next_retry_at else None,
        }
        for u in updates
    ]
    result = conn.execute(stmt, params)
    return result.rowcount if result.rowcount is not None and result.rowcount >= 0 else len(params)


def release(engine: Engine, ids: Iterable[int], *, worker_id: str) -> int:
    """Give claimed events back as due now (a run stopping early, e.g. on shutdown)."""
    id_list = list(ids)
    if not id_list:
        return 0
    with engine.begin() as conn:
        return conn.execute(
            update(EVENTS)
            .where(E.id.in_(id_list), _owned(worker_id))
            .values(status="pending", claimed_by=None, lease_expires_at=None)
        ).rowcount


@dataclass(frozen=True)
class QueueStats:
    """Queue depth for the sensor, asset metadata and health checks."""

    pending: int
    retry_due: int
    retry_waiting: int
    processing: int
    lease_expired: int
    dead_letter: int
    oldest_due_age_seconds: float | None

    @property
    def due(self) -> int:
        return self.pending + self.retry_due + self.lease_expired


def queue_stats(engine: Engine | Connection) -> QueueStats:
    """Counts per queue state and the age of the oldest due event (since it arrived)."""
    with _connection(engine) as conn:
        now = db_now(conn)
        due = due_condition(now)
        row = conn.execute(
            select(
                func.count().filter(E.status == "pending").label("pending"),
                func.count().filter(and_(E.status == "retry", E.next_retry_at <= now)),
                func.count().filter(and_(E.status == "retry", E.next_retry_at > now)),
                func.count().filter(E.status == "processing"),
                func.count().filter(and_(E.status == "processing", E.lease_expires_at < now)),
                func.count().filter(E.status == "dead_letter"),
            ).where(E.status.in_(("pending", "retry", "processing", "dead_letter")))
        ).one()
        oldest = conn.execute(select(func.min(E.received_at)).where(due)).scalar()
    age = None
    oldest_utc = from_db_time(oldest)
    if oldest_utc is not None:
        age = max(0.0, (utcnow() - oldest_utc).total_seconds())
    return QueueStats(
        pending=row[0],
        retry_due=row[1],
        retry_waiting=row[2],
        processing=row[3],
        lease_expired=row[4],
        dead_letter=row[5],
        oldest_due_age_seconds=age,
    )


def has_due_events(engine: Engine | Connection) -> bool:
    """Cheap check for the sensor: is any event pending, due for retry or orphaned?

    One EXISTS per branch, each an index probe on ``(status, next_retry_at)``.
    """
    with _connection(engine) as conn:
        now = db_now(conn)
        stmt = select(
            or_(
                exists().where(E.status == "pending"),
                exists().where(E.status == "retry", E.next_retry_at <= now),
                exists().where(E.status == "processing", E.lease_expires_at < now),
            )
        )
        return bool(conn.execute(stmt).scalar())


class _connection:
    """Use a given connection as is, or open (and close) one from an engine."""

    def __init__(self, bind: Engine | Connection) -> None:
        self.bind = bind
        self.conn: Connection | None = None

    def __enter__(self) -> Connection:
        if isinstance(self.bind, Connection):
            return self.bind
        self.conn = self.bind.connect()
        return self.conn

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()
