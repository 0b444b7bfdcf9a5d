"""Turn check outcomes into support tickets: open (deduplicated) on failure, close on pass.

One open ticket per failing check (``dedupe_key = check:<name>``); a repeat failure
counts an occurrence instead of opening another. A newly opened critical ticket is
announced through the notifier, after the transaction committed, so a slow or failing
notification target never holds locks or loses the ticket.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine

from stripe_pipeline.db.engine import begin_write
from stripe_pipeline.monitoring.checks import CheckFunction, CheckOutcome, Thresholds
from stripe_pipeline.support.notify import Notification, Notifier, send_notifications
from stripe_pipeline.support.tickets import TicketRequest, open_ticket, resolve_by_key

ACTOR = "monitoring"


@dataclass(frozen=True)
class TicketAction:
    """What a check did to its ticket: ``opened``, ``repeated``, ``closed`` or ``none``."""

    action: str
    ticket_id: int | None = None
    notify: bool = False


def apply_outcome(conn: Connection, outcome: CheckOutcome) -> TicketAction:
    """Open or bump the check's ticket when it failed, close it when it passed."""
    if outcome.passed:
        closed = resolve_by_key(
            conn,
            outcome.dedupe_key,
            resolution="auto_closed",
            note=f"check passed again: {outcome.summary}",
            actor=ACTOR,
        )
        return TicketAction("closed", closed) if closed is not None else TicketAction("none")
    result = open_ticket(
        conn,
        TicketRequest(
            issue_type=outcome.dedupe_key,
            dedupe_key=outcome.dedupe_key,
            title=outcome.summary,
            priority=outcome.priority,
            details={"check": outcome.name, "severity": outcome.severity, **outcome.metadata},
        ),
        actor=ACTOR,
    )
    if result.created:
        return TicketAction("opened", result.ticket_id, notify=outcome.priority == "critical")
    return TicketAction("repeated", result.ticket_id)


def run_check(
    engine: Engine,
    check: CheckFunction,
    limits: Thresholds | None = None,
    *,
    notifier: Notifier | None = None,
    now: datetime | None = None,
) -> tuple[CheckOutcome, TicketAction]:
    """Evaluate a check, record its ticket in one transaction, then notify if critical."""
    limits = limits or Thresholds()
    now = now or datetime.now(UTC)
    with begin_write(engine) as conn:  # the check reads, its ticket writes
        outcome = check(conn, limits, now)
        action = apply_outcome(conn, outcome)
    if action.notify and notifier is not None:
        note = Notification(
            f"[stripe-pipeline] {outcome.summary}",
            f"Check {outcome.name} failed ({outcome.severity}); support ticket "
            f"#{action.ticket_id} opened.",
            outcome.priority,
            {"check": outcome.name, "ticket_id": action.ticket_id, **outcome.metadata},
        )
        send_notifications(notifier, [note])
    return outcome, action
