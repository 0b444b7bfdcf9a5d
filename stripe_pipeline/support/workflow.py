"""The support workflow of the plan's error-recovery diagram, for operators.

* AutoRetry: ``requeue_ticket_events`` puts a ticket's dead-lettered events back in
  the queue (fresh retry budget) and moves the ticket to ``investigating``; the
  processor resolves it (``auto_retry``) once those events go through.
* ManualResolution: ``resolve`` closes a ticket with a note.
* Replay: ``replay_events`` re-queues stored events by id, type, time or status.
  Appliers are idempotent and newest-event-wins, so replaying is always safe.

Every change is written to the audit log with the operator as actor. The Dagster job
and the CLI both call these functions; nothing here knows about either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from stripe_pipeline.audit import AUDIT_LOG, AuditEntry, record
from stripe_pipeline.db.engine import begin_write
from stripe_pipeline.db.lists import in_list
from stripe_pipeline.db.models import StripeEvent
from stripe_pipeline.db.statuses import (
    EVENT_ISSUES,
    FINAL_STATUSES,
    UNFINISHED_STATUSES,
    EventStatus,
    TicketStatus,
)
from stripe_pipeline.support.tickets import OPEN_STATES, TICKETS, resolve_ticket

EVENTS = StripeEvent.__table__
E = EVENTS.c
T = TICKETS.c

# how many of its events ``show_ticket`` lists (newest first; the total is counted)
EVENTS_SHOWN = 50
_CHUNK = 1000


class WorkflowError(ValueError):
    """An operator request that cannot be carried out (unknown id, wrong state)."""


@dataclass(frozen=True)
class RequeueResult:
    ticket_id: int
    events_requeued: int
    ticket_status: str


def _ticket(conn: Connection, ticket_id: int, *, lock: bool = False) -> Mapping[str, Any]:
    stmt = select(TICKETS).where(T.id == ticket_id)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    if row is None:
        raise WorkflowError(f"support ticket {ticket_id} does not exist")
    return row


def linked_event_ids(ticket: Mapping[str, Any]) -> list[str]:
    """Stripe event ids a ticket names: its own link plus ``details.stripe_event_ids``."""
    ids = [ticket["stripe_event_id"]] if ticket.get("stripe_event_id") else []
    details = ticket.get("details") or {}
    extra = details.get("stripe_event_ids") if isinstance(details, Mapping) else None
    if isinstance(extra, list):
        ids += [i for i in extra if isinstance(i, str) and i not in ids]
    return ids


def ticket_events(ticket: Mapping[str, Any]) -> ColumnElement[bool]:
    """The ``stripe_events`` rows of a ticket: every event escalated to it (a ticket
    groups events by cause and names only the latest) and the events it names."""
    named = linked_event_ids(ticket)
    linked = E.support_ticket_id == ticket["id"]
    return or_(linked, E.stripe_event_id.in_(named)) if named else linked


def _requeue(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, actor: str, action: str, why: dict
) -> int:
    """Back to ``pending`` with a fresh retry budget; audited per event."""
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        conn.execute(
            update(EVENTS)
            .where(E.id.in_([r["id"] for r in chunk]))
            .values(
                status=EventStatus.PENDING,
                retry_count=0,
                next_retry_at=None,
                claimed_by=None,
                lease_expires_at=None,
                processed_at=None,
            )
        )
        record(
            conn,
            [
                AuditEntry(
                    actor=actor,
                    action=action,
                    object_type="stripe_event",
                    object_id=r["stripe_event_id"],
                    stripe_event_id=r["stripe_event_id"],
                    before={"status": r["status"], "retry_count": r["retry_count"]},
                    after={"status": EventStatus.PENDING, "retry_count": 0},
                    details=why,
                )
                for r in chunk
            ],
        )
    return len(rows)


def requeue_ticket_events(engine: Engine, ticket_id: int, actor: str) -> RequeueResult:
    """AutoRetry: re-queue the ticket's dead-lettered events once the cause is fixed.

    The ticket goes to ``investigating`` until the processor applies the events (then it
    is resolved as ``auto_retry``); with nothing left to re-queue it is resolved now.
    """
    with begin_write(engine) as conn:  # reads the ticket, then writes
        ticket = _ticket(conn, ticket_id, lock=True)
        if ticket["status"] not in OPEN_STATES:
            raise WorkflowError(f"support ticket {ticket_id} is already resolved")
        stmt = select(E.id, E.stripe_event_id, E.status, E.retry_count).where(
            ticket_events(ticket), E.status == EventStatus.DEAD_LETTER
        )
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        rows = list(conn.execute(stmt).mappings())
        count = _requeue(
            conn, rows, actor=actor, action="event_requeued", why={"ticket_id": ticket_id}
        )
        if count == 0:
            resolve_ticket(
                conn,
                ticket_id,
                resolution="auto_retry",
                note="nothing left to re-queue: no linked event is dead-lettered",
                actor=actor,
            )
            return RequeueResult(ticket_id, 0, TicketStatus.RESOLVED.value)
        _set_ticket_status(
            conn, ticket, TicketStatus.INVESTIGATING, actor, note=f"re-queued {count} event(s)"
        )
        return RequeueResult(ticket_id, count, TicketStatus.INVESTIGATING.value)


def _set_ticket_status(
    conn: Connection, ticket: Mapping[str, Any], status: str, actor: str, *, note: str
) -> None:
    now = datetime.now(UTC)
    conn.execute(update(TICKETS).where(T.id == ticket["id"]).values(status=status, updated_at=now))
    record(
        conn,
        [
            AuditEntry(
                actor=actor,
                action="ticket_status_changed",
                object_type="support_ticket",
                object_id=str(ticket["id"]),
                stripe_event_id=ticket["stripe_event_id"],
                before={"status": ticket["status"]},
                after={"status": status},
                details={"note": note},
            )
        ],
    )


def resolve(engine: Engine, ticket_id: int, note: str, actor: str) -> None:
    """ManualResolution: close a ticket with the operator's explanation."""
    if not note or not note.strip():
        raise WorkflowError("a resolution note is required")
    with begin_write(engine) as conn:  # reads the ticket, then writes
        ticket = _ticket(conn, ticket_id, lock=True)
        if ticket["status"] not in OPEN_STATES:
            raise WorkflowError(f"support ticket {ticket_id} is already resolved")
        resolve_ticket(conn, ticket_id, resolution="manual", note=note.strip(), actor=actor)


def resolve_requeued_tickets(conn: Connection, event_row_ids: Iterable[int]) -> list[int]:
    """Close ``investigating`` event tickets once all their re-queued events are applied.

    Called by the processor inside its transaction, with the row ids it just finished,
    so a ticket closes exactly when its last retried event commits. A ticket is locked
    before its remaining events are counted: two batches finishing the last events of
    one ticket at once take turns, and the second sees the first one's commit.
    """
    ids = list(event_row_ids)
    if not ids:
        return []
    # almost always none: one index probe instead of matching a thousand event ids
    waiting = conn.execute(
        select(T.id)
        .where(T.status == TicketStatus.INVESTIGATING, T.issue_type.in_(EVENT_ISSUES))
        .limit(1)
    ).first()
    if waiting is None:
        return []
    applied = in_list(conn, E.id, ids)
    finished = select(E.support_ticket_id).where(applied, E.support_ticket_id.is_not(None))
    named = select(E.stripe_event_id).where(applied)
    candidates = (
        select(TICKETS)
        .where(
            T.status == TicketStatus.INVESTIGATING,
            T.issue_type.in_(EVENT_ISSUES),
            or_(T.id.in_(finished), T.stripe_event_id.in_(named)),
        )
        .order_by(T.id)
    )
    if conn.dialect.name == "postgresql":
        candidates = candidates.with_for_update()
    closed = []
    for ticket in list(conn.execute(candidates).mappings()):
        left = conn.execute(
            select(func.count()).where(ticket_events(ticket), E.status.in_(UNFINISHED_STATUSES))
        ).scalar()
        if left == 0 and resolve_ticket(
            conn,
            ticket["id"],
            resolution="auto_retry",
            note="re-queued events applied",
            actor="processor",
        ):
            closed.append(ticket["id"])
    return closed


def _epoch(value: datetime | int | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


MAX_ROW_ID = 2**63 - 1  # BIGINT


def _is_row_id(value: int | str) -> bool:
    """A ``stripe_events.id``: digits within BIGINT (longer digit strings match nothing)."""
    text = str(value)
    return text.isascii() and text.isdigit() and int(text) <= MAX_ROW_ID


def _event_filters(
    *,
    ids: Sequence[int | str] | None,
    event_type: str | None,
    since: datetime | int | None,
    until: datetime | int | None,
    status: str | Sequence[str] | None,
) -> list[Any]:
    filters: list[Any] = []
    if ids:
        row_ids = [int(i) for i in ids if _is_row_id(i)]
        stripe_ids = [str(i) for i in ids if not _is_row_id(i)]
        filters.append(or_(E.id.in_(row_ids), E.stripe_event_id.in_(stripe_ids)))
    if event_type:
        # "charge.dispute.*" selects a family of types
        if event_type.endswith("*"):
            filters.append(E.event_type.startswith(event_type[:-1], autoescape=True))
        else:
            filters.append(E.event_type == event_type)
    if since is not None:
        filters.append(E.stripe_created >= _epoch(since))
    if until is not None:
        filters.append(E.stripe_created < _epoch(until))
    if status:
        statuses = [status] if isinstance(status, str) else list(status)
        filters.append(E.status.in_(statuses))
    return filters


def replay_events(
    engine: Engine,
    *,
    ids: Sequence[int | str] | None = None,
    event_type: str | None = None,
    since: datetime | int | None = None,
    until: datetime | int | None = None,
    status: str | Sequence[str] | None = None,
    actor: str,
    dry_run: bool = False,
) -> int:
    """Re-queue finished events (processed, ignored, dead_letter) matching every filter.

    ``ids`` are row ids or Stripe event ids; ``since``/``until`` bound the event's
    Stripe ``created`` (until exclusive); ``event_type`` may end in ``*``. At least one
    filter is required so a typo never replays the whole history. Returns the count.
    """
    statuses = [status] if isinstance(status, str) else list(status or FINAL_STATUSES)
    bad = [s for s in statuses if s not in FINAL_STATUSES]
    if bad:
        raise WorkflowError(
            f"cannot replay events in status {bad}: only {', '.join(FINAL_STATUSES)}"
        )
    if not (ids or event_type or since is not None or until is not None or status):
        raise WorkflowError("give at least one filter (ids, event type, time range or status)")
    filters = _event_filters(
        ids=ids, event_type=event_type, since=since, until=until, status=statuses
    )
    with begin_write(engine) as conn:  # selects the events, then re-queues them
        stmt = (
            select(E.id, E.stripe_event_id, E.status, E.retry_count).where(*filters).order_by(E.id)
        )
        if conn.dialect.name == "postgresql" and not dry_run:
            stmt = stmt.with_for_update(skip_locked=True)
        rows = list(conn.execute(stmt).mappings())
        if dry_run:
            return len(rows)
        why = {
            "filters": {
                "ids": [str(i) for i in ids] if ids else None,
                "event_type": event_type,
                "since": _epoch(since),
                "until": _epoch(until),
                "status": statuses,
            }
        }
        return _requeue(conn, rows, actor=actor, action="event_replayed", why=why)


# ---- read-only helpers for the CLI and the Dagster UI ----


def list_tickets(
    engine: Engine,
    *,
    status: str | Sequence[str] | None = (TicketStatus.OPEN, TicketStatus.INVESTIGATING),
    issue_type: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest tickets first; by default the unresolved ones."""
    stmt = select(
        T.id,
        T.status,
        T.priority,
        T.issue_type,
        T.title,
        T.stripe_event_id,
        T.payment_intent_id,
        T.subscription_id,
        T.occurrences,
        T.created_at,
        T.updated_at,
    ).order_by(T.id.desc())
    if status:
        stmt = stmt.where(T.status.in_([status] if isinstance(status, str) else list(status)))
    if issue_type:
        stmt = stmt.where(T.issue_type == issue_type)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt.limit(limit)).mappings()]


def show_ticket(engine: Engine, ticket_id: int) -> dict[str, Any]:
    """A ticket with its events (the newest ``EVENTS_SHOWN``, with queue state and last
    error; ``events_by_status`` counts all of them) and its audit trail."""
    with engine.connect() as conn:
        ticket = dict(_ticket(conn, ticket_id))
        linked = ticket_events(ticket)
        events = [
            dict(r)
            for r in conn.execute(
                select(
                    E.id,
                    E.stripe_event_id,
                    E.event_type,
                    E.status,
                    E.retry_count,
                    E.next_retry_at,
                    E.error_context,
                )
                .where(linked)
                .order_by(E.id.desc())
                .limit(EVENTS_SHOWN)
            ).mappings()
        ]
        by_status = dict(
            conn.execute(select(E.status, func.count()).where(linked).group_by(E.status)).all()
        )
        A = AUDIT_LOG.c
        history = [
            dict(r)
            for r in conn.execute(
                select(A.occurred_at, A.actor, A.action, A.before, A.after)
                .where(A.object_type == "support_ticket", A.object_id == str(ticket_id))
                .order_by(A.id)
            ).mappings()
        ]
    ticket["events"] = events
    ticket["events_by_status"] = by_status
    ticket["history"] = history
    return ticket


def list_events(
    engine: Engine,
    *,
    ids: Sequence[int | str] | None = None,
    event_type: str | None = None,
    since: datetime | int | None = None,
    until: datetime | int | None = None,
    status: str | Sequence[str] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Stored events matching the filters, newest first (no payloads)."""
    filters = _event_filters(
        ids=ids, event_type=event_type, since=since, until=until, status=status
    )
    stmt = (
        select(
            E.id,
            E.stripe_event_id,
            E.event_type,
            E.stripe_created,
            E.status,
            E.retry_count,
            E.next_retry_at,
            E.source,
            E.received_at,
            E.processed_at,
        )
        .where(*filters)
        .order_by(E.stripe_created.desc(), E.id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]
