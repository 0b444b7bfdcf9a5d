"""Events of every status and age, with the tickets that hold some of them, for
retention tests (the rows a retention run must drop or keep)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, update

from stripe_pipeline.config import PrivacyOptions
from stripe_pipeline.db.models import metadata
from stripe_pipeline.land.envelope import envelope_from_event
from stripe_pipeline.land.store import insert_event
from stripe_pipeline.support.tickets import TicketRequest, open_ticket, resolve_ticket
from tests.support.queue_events import event_doc

T = metadata.tables
EVENTS = T["stripe_events"]
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=120)
RECENT = NOW - timedelta(days=10)
# small batches: several transactions per table even with a handful of rows
OPTIONS = PrivacyOptions(payload_days=90, delivery_days=30, ticket_days=365, batch_size=3)

# (name, status, received_at); every one is a payment_intent event with a full payload
EVENT_CASES = [
    ("old_processed", "processed", OLD),
    ("old_ignored", "ignored", OLD),
    ("old_processed_2", "processed", OLD),
    ("old_pending", "pending", OLD),
    ("old_retry", "retry", OLD),
    ("old_processing", "processing", OLD),
    ("old_dead_letter", "dead_letter", OLD),
    ("old_open_ticket", "processed", OLD),  # the ticket's own stripe_event_id
    ("old_ticket_details", "processed", OLD),  # listed in an open ticket's details
    ("old_resolved_ticket", "processed", OLD),  # its ticket is resolved: no hold
    ("recent_processed", "processed", RECENT),
]
DROPPED = {"old_processed", "old_ignored", "old_processed_2", "old_resolved_ticket"}


def event_id(name: str) -> str:
    return f"evt_{name}"


def seed_events(engine: Engine) -> None:
    with engine.begin() as conn:
        for n, (name, status, received) in enumerate(EVENT_CASES):
            doc = event_doc(n, created=int(received.timestamp()))
            doc["id"] = event_id(name)
            doc["data"]["object"]["receipt_email"] = f"{name}@example.test"
            insert_event(conn, envelope_from_event(doc))
            conn.execute(
                update(EVENTS)
                .where(EVENTS.c.stripe_event_id == doc["id"])
                .values(status=status, received_at=received)
            )
        tickets = {}
        for key, event in (
            ("dead", "old_dead_letter"),
            ("open", "old_open_ticket"),
            ("resolved", "old_resolved_ticket"),
        ):
            tickets[key] = open_ticket(
                conn,
                TicketRequest(
                    issue_type="event_permanent_error",
                    dedupe_key=f"retention:{key}",
                    title=f"ticket {key}",
                    stripe_event_id=event_id(event),
                ),
            ).ticket_id
        open_ticket(
            conn,
            TicketRequest(
                issue_type="check:events_dead_lettered",
                dedupe_key="retention:details",
                title="several events",
                details={"stripe_event_ids": [event_id("old_ticket_details")]},
            ),
        )
        resolve_ticket(conn, tickets["resolved"], resolution="manual", note="ok", actor="t")
