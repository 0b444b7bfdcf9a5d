"""Deduplicated support tickets (``payment_support_tickets``).

One unresolved ticket per ``dedupe_key`` (issue and object), enforced by a partial
unique index, so concurrent runs and repeated checks never open a second one; a
repeat bumps ``occurrences`` instead. Every change is written to the audit log.
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
from stripe_pipeline.db.lists import chunked, in_list
from stripe_pipeline.db.models import TICKET_PRIORITIES, UNRESOLVED_TICKET, PaymentSupportTicket

TICKETS = PaymentSupportTicket.__table__
OPEN_STATES = ("open", "investigating")


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

    def __post_init__(self) -> None:
        if self.priority not in TICKET_PRIORITIES:
            raise ValueError(f"priority must be one of {TICKET_PRIORITIES}")


@dataclass(frozen=True)
class TicketResult:
    ticket_id: int
    created: bool


def _values(request: TicketRequest) -> dict[str, Any]:
    return {
        "issue_type": request.issue_type,
        "dedupe_key": request.dedupe_key[:512],
        "title": request.title[:512],
        "priority": request.priority,
        "payment_intent_id": request.payment_intent_id,
        "subscription_id": request.subscription_id,
        "customer_id": request.customer_id,
        "stripe_event_id": request.stripe_event_id,
        "details": request.details or None,
        "status": "open",
    }


def open_ticket(
    conn: Connection, request: TicketRequest, *, actor: str = "pipeline"
) -> TicketResult:
    """Open a ticket, or count one more occurrence of the open ticket with the same key."""
    return open_tickets(conn, [request], actor=actor)[0]


def open_tickets(
    conn: Connection, requests: Sequence[TicketRequest], *, actor: str = "pipeline"
) -> list[TicketResult]:
    """Open tickets, or count more occurrences of the open ones with the same keys.

    Set-based (a run may raise thousands at once): one multi-row INSERT ... ON CONFLICT
    DO NOTHING and one UPDATE per chunk of keys, one audit insert. Results are in
    request order; a key repeated among the requests opens (or counts) one ticket.
    """
    repeats: Counter[str] = Counter()
    firsts: dict[str, dict[str, Any]] = {}
    for request in requests:
        values = _values(request)
        repeats[values["dedupe_key"]] += 1
        firsts.setdefault(values["dedupe_key"], values)
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
        _bump(conn, [key for key in pending if key not in ids], repeats, ids)
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
        key = request.dedupe_key[:512]
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
