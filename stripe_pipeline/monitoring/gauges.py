"""Pipeline gauges computed from the app database, for Prometheus and dashboards.

A handful of small indexed aggregates per scrape. Ratios without any data are NaN
(Prometheus' "no value"), so an alert such as ``ratio < 0.8`` stays quiet on an idle
system instead of firing on a made-up 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, case, func, or_, select

from stripe_pipeline.db.models import TICKET_PRIORITIES, metadata
from stripe_pipeline.db.statuses import UNFINISHED_STATUSES, EventSource, EventStatus
from stripe_pipeline.monitoring.checks import (
    NEEDS_RESPONSE,
    Thresholds,
    open_discrepancies,
    payment_outcomes,
    utc,
)

EVENTS = metadata.tables["stripe_events"]
PAYMENTS = metadata.tables["stripe_payments"]
RECOVERY = metadata.tables["payment_recovery_attempts"]
TICKETS = metadata.tables["payment_support_tickets"]
DISPUTES = metadata.tables["stripe_disputes"]

OPEN_EVENT_STATUSES = (EventStatus.PENDING, EventStatus.PROCESSING, EventStatus.RETRY)
RECOVERED = ("recovered", "succeeded", "paid")
LOST = ("failed", "exhausted", "abandoned", "canceled", "uncollectible")
PREFIX = "stripe_pipeline_"


@dataclass(frozen=True)
class Gauge:
    name: str
    help: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GaugeWindows:
    """Look-back windows of the rate gauges."""

    error_rate_hours: float = 1.0
    payment_ratio_hours: float = 24.0
    dispute_due_hours: float = 72.0


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else math.nan


def compute_gauges(
    conn: Connection, now: datetime | None = None, windows: GaugeWindows | None = None
) -> list[Gauge]:
    """Every pipeline gauge, as of ``now``."""
    now = now or datetime.now(UTC)
    windows = windows or GaugeWindows()
    return [
        *_event_gauges(conn, now, windows),
        *_payment_gauges(conn, now, windows),
        *_recovery_gauges(conn),
        *_ticket_gauges(conn),
        *_dispute_gauges(conn, now, windows),
        *_discrepancy_gauges(conn, now),
    ]


def _event_gauges(conn: Connection, now: datetime, windows: GaugeWindows) -> list[Gauge]:
    by_status = dict(
        conn.execute(
            select(EVENTS.c.status, func.count())
            .where(EVENTS.c.status.in_(UNFINISHED_STATUSES))
            .group_by(EVENTS.c.status)
        ).all()
    )
    oldest = utc(
        conn.execute(
            select(func.min(EVENTS.c.received_at)).where(EVENTS.c.status.in_(OPEN_EVENT_STATUSES))
        ).scalar()
    )
    since = now - timedelta(hours=windows.error_rate_hours)
    had_error = or_(
        EVENTS.c.retry_count > 0, EVENTS.c.status.in_((EventStatus.RETRY, EventStatus.DEAD_LETTER))
    )
    received, errored = conn.execute(
        select(func.count(), func.coalesce(func.sum(case((had_error, 1), else_=0)), 0)).where(
            EVENTS.c.received_at >= since
        )
    ).one()
    last_webhook = utc(
        conn.execute(
            select(func.max(EVENTS.c.received_at)).where(
                EVENTS.c.source == EventSource.WEBHOOK.value
            )
        ).scalar()
    )
    gauges = [
        Gauge(
            f"{PREFIX}events_open",
            "Stripe events not yet processed, by queue status.",
            float(by_status.get(status, 0)),
            {"status": status},
        )
        for status in OPEN_EVENT_STATUSES
    ]
    gauges += [
        Gauge(
            f"{PREFIX}events_pending",
            "Stripe events waiting for processing (pending, processing or retry).",
            float(sum(by_status.get(s, 0) for s in OPEN_EVENT_STATUSES)),
        ),
        Gauge(
            f"{PREFIX}oldest_pending_event_age_seconds",
            "Age of the oldest unprocessed Stripe event (0 when none).",
            max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        ),
        Gauge(
            f"{PREFIX}events_dead_letter",
            "Stripe events processing gave up on (escalated as tickets).",
            float(by_status.get(EventStatus.DEAD_LETTER, 0)),
        ),
        Gauge(
            f"{PREFIX}event_error_ratio",
            f"Share of events received in the last {windows.error_rate_hours:g} h that "
            "failed processing at least once (NaN without events).",
            _ratio(int(errored), int(received)),
        ),
        Gauge(
            f"{PREFIX}last_webhook_received_timestamp_seconds",
            "Unix time of the newest webhook event stored (0 when none ever).",
            last_webhook.timestamp() if last_webhook else 0.0,
        ),
    ]
    return gauges


def _payment_gauges(conn: Connection, now: datetime, windows: GaugeWindows) -> list[Gauge]:
    ok, bad = payment_outcomes(conn, now - timedelta(hours=windows.payment_ratio_hours))
    help_window = f"created in the last {windows.payment_ratio_hours:g} h"
    return [
        Gauge(
            f"{PREFIX}payment_success_ratio",
            f"Succeeded / (succeeded + failed) payments {help_window} (NaN without any).",
            _ratio(ok, ok + bad),
        ),
        Gauge(
            f"{PREFIX}payments_window",
            f"Payments {help_window}.",
            float(ok),
            {"outcome": "succeeded"},
        ),
        Gauge(
            f"{PREFIX}payments_window",
            f"Payments {help_window}.",
            float(bad),
            {"outcome": "failed"},
        ),
    ]


def _recovery_gauges(conn: Connection) -> list[Gauge]:
    recovered, lost, open_ = conn.execute(
        select(
            func.coalesce(func.sum(case((RECOVERY.c.status.in_(RECOVERED), 1), else_=0)), 0),
            func.coalesce(func.sum(case((RECOVERY.c.status.in_(LOST), 1), else_=0)), 0),
            func.coalesce(
                func.sum(case((RECOVERY.c.status.in_((*RECOVERED, *LOST)), 0), else_=1)), 0
            ),
        )
    ).one()
    return [
        Gauge(
            f"{PREFIX}recovery_success_ratio",
            "Recovered / finished payment recovery cases, all time (NaN without any).",
            _ratio(int(recovered), int(recovered) + int(lost)),
        ),
        Gauge(
            f"{PREFIX}recovery_cases_open",
            "Payment recovery cases still being retried.",
            float(open_),
        ),
    ]


def _ticket_gauges(conn: Connection) -> list[Gauge]:
    counts = dict(
        conn.execute(
            select(TICKETS.c.priority, func.count())
            .where(TICKETS.c.status != "resolved")
            .group_by(TICKETS.c.priority)
        ).all()
    )
    return [
        Gauge(
            f"{PREFIX}support_tickets_open",
            "Unresolved support tickets, by priority.",
            float(counts.get(priority, 0)),
            {"priority": priority},
        )
        for priority in TICKET_PRIORITIES
    ]


def _dispute_gauges(conn: Connection, now: datetime, windows: GaugeWindows) -> list[Gauge]:
    due = conn.execute(
        select(func.count()).where(
            DISPUTES.c.status.in_(NEEDS_RESPONSE),
            DISPUTES.c.due_by.is_not(None),
            DISPUTES.c.due_by <= now + timedelta(hours=windows.dispute_due_hours),
        )
    ).scalar_one()
    return [
        Gauge(
            f"{PREFIX}disputes_evidence_due",
            f"Disputes needing evidence due within {windows.dispute_due_hours:g} h (or overdue).",
            float(due),
        )
    ]


def _discrepancy_gauges(conn: Connection, now: datetime) -> list[Gauge]:
    outcome = open_discrepancies(conn, Thresholds(), now)
    if not outcome.metadata.get("table_present"):
        return []  # before the reconciliation migration there is nothing to report
    return [
        Gauge(
            f"{PREFIX}reconciliation_discrepancies_open",
            "Reconciliation discrepancies not yet repaired or resolved.",
            float(outcome.metadata["open_discrepancies"] or 0),
        )
    ]
