"""Deduplicated support tickets (``payment_support_tickets``).

One unresolved ticket per ``dedupe_key`` (issue and object), enforced by a partial
unique index, so concurrent runs and repeated checks never open a second one; a
repeat bumps ``occurrences`` instead. A ticket that stands for events keeps the
latest of their ids in ``details.stripe_event_ids``; a repeat of a ticket under
investigation (its events were re-queued and failed again) re-opens it. Every change
is written to the audit log.

Values are made to fit their columns (``db.fit``): a ticket about a hostile payload
is opened, not refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from stripe_pipeline.audit import AuditEntry, record
from stripe_pipeline.db.fit import fit_row
from stripe_pipeline.db.lists import chunked, in_list
from stripe_pipeline.db.models import TICKET_PRIORITIES, UNRESOLVED_TICKET, PaymentSupportTicket
from stripe_pipeline.db.statuses import TicketStatus

TICKETS = PaymentSupportTicket.__table__
OPEN_STATES = (TicketStatus.OPEN, TicketStatus.INVESTIGATING)
# how many of its latest event ids a ticket lists (the rest are linked by
# stripe_events.support_ticket_id)
EVENT_IDS_KEPT = 20


@dataclass(frozen=True)
class TicketRequest:
    issue_type: str
    dedupe_key: str
    title: str
    priority: str = "medium"
    payment_intent_id: str | None = None
    subscription_id: str | None = None
    customer_id: str | None = None
    stripe_event_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # the events this request is about, oldest first (kept in details.stripe_event_ids)
    event_ids: tuple[str, ...] = ()
    # how many occurrences it stands for (several events of one cause in one batch)
    occurrences: int = 1

    def __post_init__(self) -> None:
        if self.priority not in TICKET_PRIORITIES:
            raise ValueError(f"priority must be one of {TICKET_PRIORITIES}")
        if self.occurrences < 1:
            raise ValueError("occurrences must be >= 1")


@dataclass(frozen=True)
class TicketResult:
    ticket_id: int
    created: bool


def _values(request: TicketRequest) -> dict[str, Any]:
    """The row of a request, fitted to its columns (a hostile payload's ticket opens)."""
    details = dict(request.details)
    if request.event_ids:
        details["stripe_event_ids"] = list(request.event_ids[-EVENT_IDS_KEPT:])
    return fit_row(
        TICKETS,
        {
            "issue_type": request.issue_type,
            "dedupe_key": request.dedupe_key,
            "title": request.title,
            "priority": request.priority,
            "payment_intent_id": request.payment_intent_id,
            "subscription_id": request.subscription_id,
            "customer_id": request.customer_id,
            "stripe_event_id": request.stripe_event_id,
            "details": details or None,
            "status": "open",
        },
    )


def open_ticket(
    conn: Connection, request: TicketRequest, *, actor: str = "pipeline"
) -> TicketResult:
    """Open a ticket, or count the request's occurrences on the open ticket with its key."""
    return open_tickets(conn, [request], actor=actor)[0]


def open_tickets(
    conn: Connection, requests: Sequence[TicketRequest], *, actor: str = "pipeline"
) -> list[TicketResult]:
    """Open tickets, or count more occurrences of the open ones with the same keys.

    Set-based (a run may raise thousands at once): one multi-row INSERT ... ON CONFLICT
    DO NOTHING and one UPDATE per chunk of keys, one audit insert. A repeat of a ticket
    that stands for events also takes their latest ids and re-opens it when it was under
    investigation (``_repeat``, one per such key). Results are in request order; a key
    repeated among the requests opens (or counts) one ticket.
    """
    repeats: Counter[str] = Counter()
    firsts: dict[str, dict[str, Any]] = {}
    by_key: dict[str, TicketRequest] = {}
    for request in requests:
        values = _values(request)
        key = values["dedupe_key"]
        repeats[key] += request.occurrences
        firsts.setdefault(key, values)
        by_key.setdefault(key, request)
    ids: dict[str, int] = {}
    created: set[str] = set()
    pending = list(firsts)
    # a ticket resolved between our INSERT and UPDATE (an operator, a concurrent check)
    # frees its key: the next round opens it
    for _round in range(3):
        if not pending:
            break
        rows = [{**firsts[key], "occurrences": repeats[key]} for key in pending]
        inserted = conn.execute(_insert(conn), rows).all()
        ids.update((key, ticket_id) for ticket_id, key in inserted)
        created.update(key for _, key in inserted)
        existing = [key for key in pending if key not in ids]
        plain = [key for key in existing if not by_key[key].event_ids]
        _bump(conn, plain, repeats, ids)
        for key in existing:
            if by_key[key].event_ids:
                found = _repeat(conn, by_key[key], repeats[key], firsts[key], actor)
                if found is not None:
                    ids[key] = found
        pending = [key for key in pending if key not in ids]
    if pending:
        raise RuntimeError(f"could not open or find the open ticket of {pending[0]!r}")
    record(
        conn,
        [
            AuditEntry(
                actor=actor,
                action="ticket_opened",
                object_type="support_ticket",
                object_id=str(ids[key]),
                stripe_event_id=firsts[key]["stripe_event_id"],
                after={k: v for k, v in firsts[key].items() if k != "details"},
            )
            for key in firsts
            if key in created
        ],
    )
    results, seen = [], set()
    for request in requests:
        key = _values(request)["dedupe_key"]
        results.append(TicketResult(ids[key], key in created and key not in seen))
        seen.add(key)
    return results


def _insert(conn: Connection):
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return (
        dialect.insert(TICKETS)
        # the predicate as SQL text: a bound parameter cannot infer the partial index
        # once PostgreSQL plans the prepared statement generically
        .on_conflict_do_nothing(index_elements=["dedupe_key"], index_where=text(UNRESOLVED_TICKET))
        .returning(TICKETS.c.id, TICKETS.c.dedupe_key)
    )


def _bump(
    conn: Connection, keys: Sequence[str], repeats: Mapping[str, int], ids: dict[str, int]
) -> None:
    """Count more occurrences on the open tickets of ``keys`` (one UPDATE per chunk)."""
    by_count: dict[int, list[str]] = {}
    for key in keys:
        by_count.setdefault(repeats[key], []).append(key)
    for count, same in by_count.items():
        for part in chunked(same):
            bumped = conn.execute(
                update(TICKETS)
                .where(in_list(conn, TICKETS.c.dedupe_key, part), text(UNRESOLVED_TICKET))
                .values(occurrences=TICKETS.c.occurrences + count, updated_at=func.now())
                .returning(TICKETS.c.id, TICKETS.c.dedupe_key)
            )
            ids.update((key, ticket_id) for ticket_id, key in bumped)


def _repeat(
    conn: Connection,
    request: TicketRequest,
    occurrences: int,
    values: dict[str, Any],
    actor: str,
) -> int | None:
    """Count the occurrences on the open ticket; an event ticket also takes the latest
    event ids and error, and leaves ``investigating`` (its re-queued events failed again)."""
    stmt = select(TICKETS.c.id, TICKETS.c.status, TICKETS.c.details).where(
        TICKETS.c.dedupe_key == values["dedupe_key"], text(UNRESOLVED_TICKET)
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    current = conn.execute(stmt).mappings().first()
    if current is None:  # resolved meanwhile: the caller's next round opens it
        return None
    changes: dict[str, Any] = {
        "occurrences": TICKETS.c.occurrences + occurrences,
        "updated_at": func.now(),
    }
    if request.event_ids:
        before = current["details"] if isinstance(current["details"], dict) else {}
        kept = [i for i in before.get("stripe_event_ids") or [] if i not in request.event_ids]
        changes["details"] = {
            **before,
            **(values["details"] or {}),
            "stripe_event_ids": [*kept, *request.event_ids][-EVENT_IDS_KEPT:],
        }
    reopen = current["status"] == "investigating"
    if reopen:
        changes["status"] = "open"
    conn.execute(update(TICKETS).where(TICKETS.c.id == current["id"]).values(changes))
    if reopen:
        record(
            conn,
            [
                AuditEntry(
                    actor=actor,
                    action="ticket_status_changed",
                    object_type="support_ticket",
                    object_id=str(current["id"]),
                    stripe_event_id=request.stripe_event_id,
                    before={"status": "investigating"},
                    after={"status": "open"},
                    details={"note": "the issue occurred again", "events": list(request.event_ids)},
                )
            ],
        )
    return current["id"]


def resolve_ticket(
    conn: Connection,
    ticket_id: int,
    *,
    resolution: str,
    note: str | None = None,
    actor: str = "operator",
) -> bool:
    """Close a ticket (``manual`` resolution, ``auto_retry`` or ``auto_closed``)."""
    return bool(resolve_tickets(conn, {ticket_id: note}, resolution=resolution, actor=actor))


def resolve_tickets(
    conn: Connection,
    notes: Mapping[int, str | None],
    *,
    resolution: str,
    actor: str = "operator",
) -> list[int]:
    """Close tickets (id -> note) set-based; returns the ids it closed (not closed before)."""
    before: dict[int, Any] = {}
    for part in chunked(sorted(notes)):
        rows = conn.execute(
            select(TICKETS.c.id, TICKETS.c.status, TICKETS.c.stripe_event_id)
            .where(in_list(conn, TICKETS.c.id, part), TICKETS.c.status != "resolved")
            .order_by(TICKETS.c.id)
            .with_for_update()
        )
        before.update((row.id, row) for row in rows)
    if not before:
        return []
    now = datetime.now(UTC)
    conn.execute(
        update(TICKETS)
        .where(TICKETS.c.id == bindparam("_id"))
        .values(
            status="resolved",
            resolution=resolution,
            resolution_note=bindparam("_note"),
            resolved_by=actor,
            resolved_at=now,
            updated_at=now,
        ),
        [{"_id": ticket_id, "_note": notes[ticket_id]} for ticket_id in before],
    )
    record(
        conn,
        [
            AuditEntry(
                actor=actor,
                action="ticket_resolved",
                object_type="support_ticket",
                object_id=str(ticket_id),
                stripe_event_id=row.stripe_event_id,
                before={"status": row.status},
                after={"status": "resolved", "resolution": resolution, "note": notes[ticket_id]},
            )
            for ticket_id, row in before.items()
        ],
    )
    return list(before)


def resolve_by_key(
    conn: Connection,
    dedupe_key: str,
    *,
    resolution: str,
    note: str | None = None,
    actor: str = "pipeline",
) -> int | None:
    """Close the open ticket with this key, if any (a check that passes again)."""
    ticket_id = conn.execute(
        select(TICKETS.c.id).where(
            TICKETS.c.dedupe_key == dedupe_key, TICKETS.c.status != "resolved"
        )
    ).scalar()
    if ticket_id is None:
        return None
    resolve_ticket(conn, ticket_id, resolution=resolution, note=note, actor=actor)
    return ticket_id
