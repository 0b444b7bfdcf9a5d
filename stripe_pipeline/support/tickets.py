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

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from stripe_pipeline.audit import AuditEntry, record
from stripe_pipeline.db.fit import fit_row
from stripe_pipeline.db.models import TICKET_PRIORITIES, PaymentSupportTicket

TICKETS = PaymentSupportTicket.__table__
OPEN_STATES = ("open", "investigating")
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


def open_ticket(
    conn: Connection, request: TicketRequest, *, actor: str = "pipeline"
) -> TicketResult:
    """Open a ticket, or count the request's occurrences on the open ticket with its key."""
    details = dict(request.details)
    if request.event_ids:
        details["stripe_event_ids"] = list(request.event_ids[-EVENT_IDS_KEPT:])
    values = fit_row(
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
            "occurrences": request.occurrences,
            "status": "open",
        },
    )
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(TICKETS)
        .values(values)
        .on_conflict_do_nothing(
            index_elements=["dedupe_key"], index_where=TICKETS.c.status != "resolved"
        )
        .returning(TICKETS.c.id)
    )
    new_id = conn.execute(stmt).scalar()
    if new_id is not None:
        record(
            conn,
            [
                AuditEntry(
                    actor=actor,
                    action="ticket_opened",
                    object_type="support_ticket",
                    object_id=str(new_id),
                    stripe_event_id=request.stripe_event_id,
                    after={k: v for k, v in values.items() if k != "details"},
                )
            ],
        )
        return TicketResult(new_id, True)
    return TicketResult(_repeat(conn, request, values, actor), False)


def _repeat(conn: Connection, request: TicketRequest, values: dict[str, Any], actor: str) -> int:
    """Count the occurrences on the open ticket; an event ticket also takes the latest
    event ids and error, and leaves ``investigating`` (its re-queued events failed again)."""
    stmt = select(TICKETS.c.id, TICKETS.c.status, TICKETS.c.details).where(
        TICKETS.c.dedupe_key == values["dedupe_key"], TICKETS.c.status != "resolved"
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    current = conn.execute(stmt).mappings().one()
    changes: dict[str, Any] = {
        "occurrences": TICKETS.c.occurrences + request.occurrences,
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
    before = conn.execute(select(TICKETS).where(TICKETS.c.id == ticket_id)).mappings().first()
    if before is None or before["status"] == "resolved":
        return False
    now = datetime.now(UTC)
    conn.execute(
        update(TICKETS)
        .where(TICKETS.c.id == ticket_id)
        .values(
            status="resolved",
            resolution=resolution,
            resolution_note=note,
            resolved_by=actor,
            resolved_at=now,
            updated_at=now,
        )
    )
    record(
        conn,
        [
            AuditEntry(
                actor=actor,
                action="ticket_resolved",
                object_type="support_ticket",
                object_id=str(ticket_id),
                stripe_event_id=before["stripe_event_id"],
                before={"status": before["status"]},
                after={"status": "resolved", "resolution": resolution, "note": note},
            )
        ],
    )
    return True


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
