"""The database as the event queue: batches held for one transaction, guarded updates.

``open_batch`` claims up to N due events (oldest first) and holds them while the
caller applies them and records their outcomes in the same transaction:

* PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` inside the apply transaction. The
  row locks keep concurrent runs off the batch until it commits; nothing is written to
  the event rows until their final status, so each event row is rewritten once, not
  three times. A batch whose process dies releases its locks with its session and its
  events are due again at once. ``processing_claims`` journals each batch (one small
  row, committed beside the batch and deleted inside it), so a batch whose session
  died is charged as one failed attempt of each of its events (``sweep_dead_claims``).
  The session's ``idle_in_transaction_session_timeout`` is the lease: a hung worker
  loses its batch after ``lease_seconds``.
* SQLite (one writer at a time, no row locks): ``claim_batch`` commits a
  ``processing`` status with ``claimed_by`` and a lease first; the apply transaction
  then renews the lease (``lock_owned``), which takes the write lock at once, and
  drops events another run took after the lease expired.

Due means: ``pending``; ``retry`` with ``next_retry_at`` passed; ``processing`` with
an expired lease (its run crashed). Either way a batch that died counts as one failed
attempt of each of its events, so an event that kills its worker every time is
escalated eventually.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.types import BigInteger, DateTime

from stripe_pipeline.db.clock import (
    db_now,
    db_now_plus,
    from_db_time,
    is_postgres,
    to_db_time,
    utcnow,
)
from stripe_pipeline.db.lists import in_list
from stripe_pipeline.db.models import QUEUED_EVENTS, ProcessingClaim, StripeEvent
from stripe_pipeline.db.statuses import UNFINISHED_STATUSES
from stripe_pipeline.db.statuses import EventStatus as S
from stripe_pipeline.process.events import QueuedEvent

log = logging.getLogger(__name__)

EVENTS = StripeEvent.__table__
E = EVENTS.c
CLAIMS = ProcessingClaim.__table__

# the predicate of the partial index ``ix_stripe_events_claim_order``, written as in it
QUEUED = text(QUEUED_EVENTS)


def due_condition(now: ColumnElement[Any]) -> ColumnElement[bool]:
    """Rows a run may claim now; each branch is served by ``ix_stripe_events_queue``."""
    return or_(
        E.status == S.PENDING,
        and_(E.status == S.RETRY, E.next_retry_at <= now),
        and_(E.status == S.PROCESSING, E.lease_expires_at < now),
    )


def _id_in(conn: Connection, ids: Sequence[int]) -> ColumnElement[bool]:
    return in_list(conn, E.id, ids)


# in ``QueuedEvent``'s field order (``_queued`` builds events positionally); no payload:
# PostgreSQL extracts most events in place (``extract_sql``), and shipping every 2-3 KB
# payload out and parsing it was the larger part of a batch's cost
_RETURNING = (E.id, E.stripe_event_id, E.event_type, E.stripe_created, E.retry_count)


def _pg_claim(batch_size: int, after: tuple[int, int] | None):
    """Lock N due rows in claim order, skipping rows another batch holds."""
    stmt = select(*_RETURNING).where(QUEUED, due_condition(func.now()))
    if after is not None:
        stmt = stmt.where(tuple_(E.stripe_created, E.id) > tuple_(*after))
    return stmt.order_by(E.stripe_created, E.id).limit(batch_size).with_for_update(skip_locked=True)


class ClaimCursor:
    """Where the claims of a run's loops resume: past the newest event already claimed.

    Without it every claim starts at the oldest queued event and steps over the rows
    the run's other loops hold, a lock test per row (measured: ~20 ms per claim of
    2,000 with two loops). A run still ends with a claim from the oldest event, so
    events that became due behind the cursor (retries, late deliveries) are taken.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._position: tuple[int, int] | None = None

    @property
    def position(self) -> tuple[int, int] | None:
        return self._position

    def advance(self, events: Sequence[QueuedEvent]) -> None:
        if not events:
            return
        last = max((e.stripe_created, e.id) for e in events)
        with self._lock:
            if self._position is None or last > self._position:
                self._position = last


# SQLite's claim as text, because it needs ``INDEXED BY`` (SQLAlchemy has no SQLite
# table hints, and SQLite's planner otherwise sorts every queued row per claim). As the
# first statement of its transaction it takes the write lock at once.
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


def _queued(rows: Iterable[Any]) -> list[QueuedEvent]:
    """Claimed rows as events; the payload only where the claim returned it (SQLite)."""
    return [QueuedEvent(*row) if len(row) == 6 else QueuedEvent(*row, payload=None) for row in rows]


@dataclass(frozen=True)
class Batch:
    """Events one worker holds, and the open transaction that holds them."""

    conn: Connection
    events: list[QueuedEvent]
    claimed: int  # taken by the claim; SQLite may have lost some since (expired lease)

    @property
    def lost(self) -> int:
        return self.claimed - len(self.events)


@contextmanager
def open_batch(
    engine: Engine,
    *,
    worker_id: str,
    batch_size: int,
    lease_seconds: float,
    after: tuple[int, int] | None = None,
) -> Iterator[Batch]:
    """Claim up to ``batch_size`` due events and hold them for one transaction.

    The body applies the events and records their outcomes on ``batch.conn``; a clean
    exit commits, an exception rolls back (the events are due again). Events come
    oldest first (Stripe ``created``, then row id), the order they are applied in;
    ``after`` (PostgreSQL, a ``ClaimCursor`` position) starts past that event.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if is_postgres(engine):
        with _pg_batch(engine, worker_id, batch_size, lease_seconds, after) as batch:
            yield batch
        return
    if after is not None:
        raise ValueError("SQLite claims always start at the oldest event (one loop per run)")
    claimed = claim_batch(
        engine, worker_id=worker_id, batch_size=batch_size, lease_seconds=lease_seconds
    )
    with engine.begin() as conn:
        owned = lock_owned(
            conn, [e.id for e in claimed], worker_id=worker_id, lease_seconds=lease_seconds
        )
        yield Batch(conn, [e for e in claimed if e.id in owned], len(claimed))


# the session's own pid and start (a pid alone may be reused), and the lease: a session
# idle inside the batch for longer is ended by the server, which frees the batch
_PG_SESSION = text(
    "SELECT set_config('idle_in_transaction_session_timeout', :timeout, true), "
    "pg_backend_pid(), "
    "(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"
)


@contextmanager
def _pg_batch(
    engine: Engine,
    worker_id: str,
    batch_size: int,
    lease_seconds: float,
    after: tuple[int, int] | None,
) -> Iterator[Batch]:
    claim_id: int | None = None
    try:
        with engine.connect() as conn, conn.begin():
            timeout = f"{max(1, round(lease_seconds * 1000))}ms"
            _, pid, started = conn.execute(_PG_SESSION, {"timeout": timeout}).one()
            events = _queued(conn.execute(_pg_claim(batch_size, after)).all())
            if events:
                claim_id = _journal(engine, worker_id, pid, started, [e.id for e in events])
            yield Batch(conn, events, len(events))
            if claim_id is not None:
                _drop_claim(conn, claim_id)
    except BaseException:
        # rolled back (or the session is gone): the events are due again; charge each
        # one attempt now if we still can, else the next sweep does
        if claim_id is not None:
            _charge_now(engine, claim_id)
        raise


def _journal(
    engine: Engine, worker_id: str, pid: int, started: datetime | None, ids: list[int]
) -> int:
    """Record the batch on another connection, committed before any work is done."""
    with engine.begin() as conn:
        return conn.execute(
            CLAIMS.insert()
            .values(worker_id=worker_id, backend_pid=pid, backend_start=started, event_ids=ids)
            .returning(CLAIMS.c.id)
        ).scalar_one()


def _charge_now(engine: Engine, claim_id: int) -> None:
    """Charge our own abandoned batch at once (best effort).

    Its events may still be locked for a moment: a session that died releases its
    locks while it exits, after its client has already seen the error. So this waits
    for the locks, briefly; a batch that cannot be charged now is only forgotten (its
    events are due either way), because its session may live on in the pool and the
    sweep would then never take it.
    """
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            _charge(conn, CLAIMS.c.id == claim_id, wait=True)
    except Exception as exc:
        log.warning("could not charge abandoned batch %s: %s", claim_id, exc)
        # if the database is away too, the sweep takes it once the session is gone
        with suppress(Exception), engine.begin() as conn:
            _drop_claim(conn, claim_id)


def _drop_claim(conn: Connection, claim_id: int) -> None:
    conn.execute(delete(CLAIMS).where(CLAIMS.c.id == claim_id))


# a claim whose session still exists (``backend_start`` is hidden from other roles); a
# session leaves pg_stat_activity only after it has released its locks
_SESSION_ALIVE = (
    "EXISTS (SELECT 1 FROM pg_stat_activity a "
    "WHERE a.pid = processing_claims.backend_pid "
    "AND (a.backend_start IS NULL OR a.backend_start = processing_claims.backend_start))"
)
_DEAD_CLAIM = text(f"NOT {_SESSION_ALIVE}")


def _charge(conn: Connection, which: ColumnElement[bool], *, wait: bool = False) -> int:
    """Delete the chosen claims and charge their still-queued events one attempt.

    Without ``wait``, events another batch already holds again are skipped; with it,
    their locks are waited for (and an event that batch finished is not charged).
    """
    taken = select(CLAIMS.c.id).where(which).with_for_update(skip_locked=True)
    lists = conn.execute(
        delete(CLAIMS).where(CLAIMS.c.id.in_(taken.scalar_subquery())).returning(CLAIMS.c.event_ids)
    ).scalars()
    ids = sorted({int(i) for event_ids in lists for i in event_ids})
    if not ids:
        return 0
    free = (
        select(E.id)
        .where(_id_in(conn, ids), E.status.in_((S.PENDING, S.RETRY)))
        .with_for_update(skip_locked=not wait)
    )
    return conn.execute(
        update(EVENTS).where(E.id.in_(free.scalar_subquery())).values(retry_count=E.retry_count + 1)
    ).rowcount


def sweep_dead_claims(engine: Engine) -> int:
    """Charge the events of PostgreSQL batches whose session died; returns how many.

    Runs at the start of every processing run. SQLite has nothing to sweep: its
    expired leases are charged when they are claimed again.
    """
    if not is_postgres(engine):
        return 0
    with engine.begin() as conn:
        charged = _charge(conn, _DEAD_CLAIM)
    if charged:
        log.warning("charged %d events of processing batches whose session died", charged)
    return charged


def claim_batch(
    engine: Engine, *, worker_id: str, batch_size: int, lease_seconds: float
) -> list[QueuedEvent]:
    """SQLite: claim up to ``batch_size`` due events with a lease and commit the claim.

    An expired-lease re-claim bumps ``retry_count`` (see module doc). PostgreSQL holds
    its batches with row locks instead (``open_batch``).
    """
    if is_postgres(engine):
        raise ValueError("PostgreSQL claims through open_batch (row locks, no lease)")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    with engine.begin() as conn:
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
    events = _queued(rows)
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
    """SQLite: first statement of the apply transaction: renew the lease of the events
    this worker still owns. A write, so the transaction takes the write lock up front
    and never fails later with a stale snapshot."""
    id_list = list(ids)
    if not id_list:
        return set()
    stmt = (
        update(EVENTS)
        .where(_id_in(conn, id_list), _owned(conn, worker_id))
        .values(lease_expires_at=db_now_plus(conn, lease_seconds))
        .returning(E.id)
    )
    return set(conn.execute(stmt).scalars())


def _owned(conn: Connection, worker_id: str) -> ColumnElement[bool]:
    """Rows this worker may finish: on PostgreSQL its batch holds their row locks, so
    any still queued; on SQLite those still leased to it."""
    if is_postgres(conn):
        return QUEUED
    return and_(E.claimed_by == worker_id, E.status == S.PROCESSING)


def mark_finished(conn: Connection, outcomes: dict[int, str], *, worker_id: str) -> int:
    """Set ``processed`` / ``ignored`` with ``processed_at``; releases the claim."""
    written = 0
    for status in (S.PROCESSED, S.IGNORED):
        ids = [i for i, outcome in outcomes.items() if outcome == status]
        if not ids:
            continue
        result = conn.execute(
            update(EVENTS)
            .where(_id_in(conn, ids), _owned(conn, worker_id))
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
    # the ticket a dead letter was escalated to (a retry keeps the event's link)
    support_ticket_id: int | None = None


def mark_failed(conn: Connection, updates: Sequence[FailureUpdate], *, worker_id: str) -> int:
    """Write retry / dead-letter states in one executemany; releases the claim."""
    if not updates:
        return 0
    stmt = (
        update(EVENTS)
        .where(E.id == bindparam("b_id"), _owned(conn, worker_id))
        .values(
            status=bindparam("b_status"),
            retry_count=bindparam("b_retry_count"),
            error_context=bindparam("b_error_context", type_=EVENTS.c.error_context.type),
            next_retry_at=bindparam("b_next_retry_at", type_=DateTime(timezone=True)),
            support_ticket_id=func.coalesce(
                bindparam("b_ticket", type_=BigInteger()), E.support_ticket_id
            ),
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
            "b_ticket": u.support_ticket_id,
        }
        for u in updates
    ]
    result = conn.execute(stmt, params)
    return result.rowcount if result.rowcount is not None and result.rowcount >= 0 else len(params)


@dataclass(frozen=True)
class QueueStats:
    """Queue depth for the sensor, asset metadata and health checks.

    On PostgreSQL a batch leaves its events' status as it was until it commits, so
    ``pending`` and ``retry_due`` include events being processed; ``processing`` says
    how many of them live batches hold.
    """

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


_HELD_BY_LIVE_BATCHES = select(
    func.coalesce(func.sum(func.jsonb_array_length(CLAIMS.c.event_ids)), 0)
).where(text(_SESSION_ALIVE))


def queue_stats(engine: Engine | Connection) -> QueueStats:
    """Counts per queue state and the age of the oldest due event (since it arrived)."""
    with _connection(engine) as conn:
        now = db_now(conn)
        due = due_condition(now)
        row = conn.execute(
            select(
                func.count().filter(E.status == S.PENDING).label("pending"),
                func.count().filter(and_(E.status == S.RETRY, E.next_retry_at <= now)),
                func.count().filter(and_(E.status == S.RETRY, E.next_retry_at > now)),
                func.count().filter(E.status == S.PROCESSING),
                func.count().filter(and_(E.status == S.PROCESSING, E.lease_expires_at < now)),
                func.count().filter(E.status == S.DEAD_LETTER),
            ).where(E.status.in_(UNFINISHED_STATUSES))
        ).one()
        oldest = conn.execute(select(func.min(E.received_at)).where(due)).scalar()
        held = conn.execute(_HELD_BY_LIVE_BATCHES).scalar() if is_postgres(conn) else 0
    age = None
    oldest_utc = from_db_time(oldest)
    if oldest_utc is not None:
        age = max(0.0, (utcnow() - oldest_utc).total_seconds())
    return QueueStats(
        pending=row[0],
        retry_due=row[1],
        retry_waiting=row[2],
        processing=row[3] + (held or 0),
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
                exists().where(E.status == S.PENDING),
                exists().where(E.status == S.RETRY, E.next_retry_at <= now),
                exists().where(E.status == S.PROCESSING, E.lease_expires_at < now),
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
