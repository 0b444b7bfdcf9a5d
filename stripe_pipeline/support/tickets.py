"""Deduplicated support tickets (``payment_support_tickets``).

One unresolved ticket per ``dedupe_key`` (issue and object), enforced by a partial
unique index, so concurrent runs and repeated checks never open a second one; a
repeat bumps ``occurrences`` instead. Every change is written to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from stripe_pipeline.audit import AuditEntry, record
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


def open_ticket(
    conn: Connection, request: TicketRequest, *, actor: str = "pipeline"
) -> TicketResult:
    """Open a ticket, or count one more occurrence of the open ticket with the same key."""
    values = {
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
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(TICKETS)
        .values(values)
        .on_conflict_do_nothing(index_elements=["dedupe_key"], index_where=text(UNRESOLVED_TICKET))
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
    existing = conn.execute(
        update(TICKETS)
        .where(TICKETS.c.dedupe_key == values["dedupe_key"], TICKETS.c.status != "resolved")
        .values(occurrences=TICKETS.c.occurrences + 1, updated_at=func.now())
        .returning(TICKETS.c.id)
    ).scalar_one()
    return TicketResult(existing, False)


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
