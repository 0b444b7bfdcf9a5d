"""The closed vocabularies the schema stores as text: event queue states, ticket states,
and the issue types of tickets that code (not a check's name) opens.

Each value is written and matched by several stages (the runner, the support workflow,
the CLI, monitoring); naming it once here keeps them from drifting apart.
"""

from __future__ import annotations

from enum import StrEnum


class EventStatus(StrEnum):
    """``stripe_events.status``: ``processing`` rows carry a lease, ``retry`` rows wait
    for ``next_retry_at``, ``dead_letter`` rows were escalated to a support ticket."""

    PENDING = "pending"
    PROCESSING = "processing"
    RETRY = "retry"
    PROCESSED = "processed"
    IGNORED = "ignored"
    DEAD_LETTER = "dead_letter"


class EventSource(StrEnum):
    """``stripe_events.source``: who landed the event. Stripe's own delivery is what
    monitoring watches for silence and what reconciliation treats as in flight."""

    WEBHOOK = "webhook"
    RECONCILIATION = "reconciliation"  # backfilled from /v1/events


# still in the queue (a claim may take them)
QUEUED_STATUSES = (EventStatus.PENDING, EventStatus.RETRY, EventStatus.PROCESSING)
# done with, for good or ill: what a replay may put back to pending
FINAL_STATUSES = (EventStatus.PROCESSED, EventStatus.IGNORED, EventStatus.DEAD_LETTER)
# an event of a ticket in one of these is not through yet
UNFINISHED_STATUSES = (*QUEUED_STATUSES, EventStatus.DEAD_LETTER)


class TicketStatus(StrEnum):
    """``payment_support_tickets.status``."""

    OPEN = "open"
    INVESTIGATING = "investigating"
    RESOLVED = "resolved"


class IssueType(StrEnum):
    """``payment_support_tickets.issue_type`` of the tickets processing and dunning open
    (checks and reconciliation key theirs by their own names)."""

    EVENT_PERMANENT_ERROR = "event_permanent_error"
    EVENT_MAX_RETRIES_EXCEEDED = "event_max_retries_exceeded"
    PAYMENT_RECOVERY_BLOCKED = "payment_recovery_blocked"
    PAYMENT_RECOVERY_EXHAUSTED = "payment_recovery_exhausted"


# tickets about specific stripe_events rows (dead letters): re-queueing retries them
EVENT_ISSUES = (IssueType.EVENT_PERMANENT_ERROR, IssueType.EVENT_MAX_RETRIES_EXCEEDED)
