"""Health checks of the pipeline's tables: plain functions returning a verdict with numbers.

Each check reads the domain tables directly (fresher than any mart) and returns a
``CheckOutcome``: passed or not, a severity, the ticket priority to use when it fails,
and the numbers that explain the verdict. ``escalation.py`` turns outcomes into
deduplicated tickets; the Dagster layer only wraps them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, and_, case, func, inspect, literal_column, or_, select, text

from stripe_pipeline.db.models import metadata
from stripe_pipeline.db.statuses import EventSource, EventStatus

EVENTS = metadata.tables["stripe_events"]
PAYMENTS = metadata.tables["stripe_payments"]
DISPUTES = metadata.tables["stripe_disputes"]
REFUNDS = metadata.tables["stripe_refunds"]
PAYOUTS = metadata.tables["stripe_payouts"]
BALANCE_TRANSACTIONS = metadata.tables["stripe_balance_transactions"]
RECONCILIATION_RUNS = metadata.tables["reconciliation_runs"]
TICKETS = metadata.tables["payment_support_tickets"]

NEEDS_RESPONSE = ("needs_response", "warning_needs_response")
CHECK_ISSUE_PREFIX = "check:"
DISCREPANCIES_TABLE = "reconciliation_discrepancies"

Metadata = dict[str, float | int | str | None]


@dataclass(frozen=True)
class Thresholds:
    """Tunable limits; defaults suit a small production account."""

    pending_max_minutes: float = 15.0
    pending_critical_minutes: float = 60.0
    dead_letter_max: int = 0
    dispute_due_hours: float = 72.0
    dispute_critical_hours: float = 24.0
    failure_ratio_max: float = 0.25
    failure_ratio_window_hours: float = 24.0
    failure_ratio_min_payments: int = 20
    ticket_spike_window_hours: float = 1.0
    ticket_spike_baseline_days: float = 7.0
    ticket_spike_factor: float = 3.0
    ticket_spike_min_count: int = 10
    webhook_silence_hours: float = 6.0
    discrepancy_max: int = 0
    payout_failed_days: float = 7.0


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    summary: str
    severity: str = "error"  # "warn" or "error"
    priority: str = "high"  # ticket priority while failing
    metadata: Metadata = field(default_factory=dict)

    @property
    def dedupe_key(self) -> str:
        """Stable per check: one open ticket per failing check, closed when it passes."""
        return f"{CHECK_ISSUE_PREFIX}{self.name}"


CheckFunction = Callable[[Connection, Thresholds, datetime], CheckOutcome]


def utc(value: datetime | str | None) -> datetime | None:
    """Timestamps come back naive (SQLite) or aware (PostgreSQL); make them aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _minutes(delta: timedelta) -> float:
    return round(delta.total_seconds() / 60.0, 2)


def events_pending_too_long(conn: Connection, limits: Thresholds, now: datetime) -> CheckOutcome:
    """Events nobody processed: pending or processing past N minutes, or retries overdue."""
    cutoff = now - timedelta(minutes=limits.pending_max_minutes)
    stuck = or_(
        and_(
            EVENTS.c.status.in_((EventStatus.PENDING, EventStatus.PROCESSING)),
            EVENTS.c.received_at < cutoff,
        ),
        and_(EVENTS.c.status == EventStatus.RETRY, EVENTS.c.next_retry_at < cutoff),
    )
    count, oldest = conn.execute(
        select(func.count(), func.min(EVENTS.c.received_at)).where(stuck)
    ).one()
    age = _minutes(now - utc(oldest)) if oldest is not None else 0.0
    critical = age >= limits.pending_critical_minutes
    return CheckOutcome(
        name="events_pending_too_long",
        passed=count == 0,
        summary=f"{count} Stripe event(s) waiting more than {limits.pending_max_minutes:g} min",
        severity="error",
        priority="critical" if critical else "high",
        metadata={
            "stuck_events": count,
            "oldest_age_minutes": age,
            "threshold_minutes": limits.pending_max_minutes,
        },
    )


def events_dead_lettered(conn: Connection, limits: Thresholds, now: datetime) -> CheckOutcome:
    """Events processing gave up on; each also has its own ticket from processing."""
    rows = conn.execute(
        select(EVENTS.c.event_type, func.count())
        .where(EVENTS.c.status == EventStatus.DEAD_LETTER)
        .group_by(EVENTS.c.event_type)
        .order_by(func.count().desc())
    ).all()
    total = sum(n for _, n in rows)
    meta: Metadata = {"dead_letter_events": total, "threshold": limits.dead_letter_max}
    meta.update({f"type:{event_type}": n for event_type, n in rows[:5]})
    return CheckOutcome(
        name="events_dead_lettered",
        passed=total <= limits.dead_letter_max,
        summary=f"{total} Stripe event(s) dead-lettered",
        severity="error",
        priority="high",
        metadata=meta,
    )


def disputes_evidence_due(conn: Connection, limits: Thresholds, now: datetime) -> CheckOutcome:
    """Disputes still needing a response whose evidence is due soon (or overdue)."""
    rows = conn.execute(
        select(DISPUTES.c.stripe_dispute_id, DISPUTES.c.due_by, DISPUTES.c.amount_minor)
        .where(
            DISPUTES.c.status.in_(NEEDS_RESPONSE),
            DISPUTES.c.due_by.is_not(None),
            DISPUTES.c.due_by <= now + timedelta(hours=limits.dispute_due_hours),
        )
        .order_by(DISPUTES.c.due_by)
    ).all()
    hours_left = [(utc(due) - now).total_seconds() / 3600.0 for _, due, _ in rows]
    soonest = round(min(hours_left), 2) if hours_left else None
    urgent = soonest is not None and soonest <= limits.dispute_critical_hours
    return CheckOutcome(
        name="disputes_evidence_due",
        passed=not rows,
        summary=f"{len(rows)} dispute(s) need evidence within {limits.dispute_due_hours:g} h",
        severity="error" if urgent else "warn",
        priority="critical" if urgent else "high",
        metadata={
            "disputes_due": len(rows),
            "overdue": sum(1 for h in hours_left if h < 0),
            "soonest_due_hours": soonest,
            "first_dispute_id": rows[0][0] if rows else None,
            "window_hours": limits.dispute_due_hours,
        },
    )


def payment_outcomes(conn: Connection, since: datetime) -> tuple[int, int]:
    """(succeeded, failed) payments created since ``since``: the success/failure ratio's terms.

    A payment counts as failed once it failed or carries a failure code, unless it
    succeeded later (the retry worked).
    """
    succeeded = PAYMENTS.c.status == "succeeded"
    failed = and_(
        ~succeeded, or_(PAYMENTS.c.status == "failed", PAYMENTS.c.failure_code.is_not(None))
    )
    ok, bad = conn.execute(
        select(
            func.coalesce(func.sum(case((succeeded, 1), else_=0)), 0),
            func.coalesce(func.sum(case((failed, 1), else_=0)), 0),
        ).where(PAYMENTS.c.stripe_created >= int(since.timestamp()))
    ).one()
    return int(ok), int(bad)


def payment_failure_ratio(conn: Connection, limits: Thresholds, now: datetime) -> CheckOutcome:
    """Share of failed payments created in the window, once there are enough to judge."""
    since = now - timedelta(hours=limits.failure_ratio_window_hours)
    ok, bad = payment_outcomes(conn, since)
    judged = ok + bad
    ratio = bad / judged if judged else 0.0
    enough = judged >= limits.failure_ratio_min_payments
    return CheckOutcome(
        name="payment_failure_ratio",
        passed=not (enough and ratio > limits.failure_ratio_max),
        summary=f"payment failure ratio {ratio:.1%} over {judged} payment(s)",
        severity="warn",
        priority="high",
        metadata={
            "failure_ratio": round(ratio, 4),
            "failed": bad,
            "succeeded": ok,
            "threshold": limits.failure_ratio_max,
            "min_payments": limits.failure_ratio_min_payments,
            "window_hours": limits.failure_ratio_window_hours,
        },
    )


def ticket_volume_spike(conn: Connection, limits: Thresholds, now: datetime) -> CheckOutcome:
    """Tickets opened in the last window vs the hourly average of the baseline days.

    Tickets opened by these checks are left out, so a failing check cannot feed it.
    """
    window = timedelta(hours=limits.ticket_spike_window_hours)
    baseline_start = now - window - timedelta(days=limits.ticket_spike_baseline_days)
    not_ours = ~TICKETS.c.issue_type.startswith(CHECK_ISSUE_PREFIX)
    recent = conn.execute(
        select(func.count()).where(not_ours, TICKETS.c.created_at >= now - window)
    ).scalar_one()
    baseline = conn.execute(
        select(func.count()).where(
            not_ours,
            TICKETS.c.created_at >= baseline_start,
            TICKETS.c.created_at < now - window,
        )
    ).scalar_one()
    windows = limits.ticket_spike_baseline_days * 24.0 / limits.ticket_spike_window_hours
    expected = baseline / windows
    spike = recent >= limits.ticket_spike_min_count and recent > limits.ticket_spike_factor * max(
        expected, 1.0
    )
    return CheckOutcome(
        name="ticket_volume_spike",
        passed=not spike,
        summary=f"{recent} ticket(s) in {limits.ticket_spike_window_hours:g} h "
        f"(usual {expected:.1f})",
        severity="warn",
        priority="medium",
        metadata={
            "recent_tickets": recent,
            "baseline_per_window": round(expected, 3),
            "factor": limits.ticket_spike_factor,
            "min_count": limits.ticket_spike_min_count,
        },
    )


def webhook_silence(conn: Connection, limits: Thresholds, now: datetime) -> CheckOutcome:
    """No webhook stored for N hours: the endpoint, its secret or the receiver is broken.

    A database that never received a webhook passes (nothing is configured yet).
    """
    last = utc(
        conn.execute(
            select(func.max(EVENTS.c.received_at)).where(
                EVENTS.c.source == EventSource.WEBHOOK.value
            )
        ).scalar()
    )
    hours = round((now - last).total_seconds() / 3600.0, 2) if last else None
    silent = hours is not None and hours > limits.webhook_silence_hours
    return CheckOutcome(
        name="webhook_silence",
        passed=not silent,
        summary=f"no webhook received for {hours} h" if silent else "webhooks arriving",
        severity="error",
        priority="high",
        metadata={
            "hours_since_last_webhook": hours,
            "last_webhook_at": last.isoformat() if last else None,
            "threshold_hours": limits.webhook_silence_hours,
        },
    )


def open_discrepancies(conn: Connection, limits: Thresholds, now: datetime) -> CheckOutcome:
    """Open reconciliation discrepancies; passes while that table does not exist yet."""
    inspector = inspect(conn)
    if not inspector.has_table(DISCREPANCIES_TABLE):
        return CheckOutcome(
            name="reconciliation_discrepancies",
            passed=True,
            summary="no reconciliation_discrepancies table yet",
            severity="warn",
            priority="medium",
            metadata={"table_present": 0},
        )
    columns = {c["name"] for c in inspector.get_columns(DISCREPANCIES_TABLE)}
    # open and ticketed are unresolved; repaired and resolved are done
    where = "WHERE status IN ('open', 'ticketed')" if "status" in columns else ""
    count = conn.execute(text(f"SELECT count(*) FROM {DISCREPANCIES_TABLE} {where}")).scalar_one()
    return CheckOutcome(
        name="reconciliation_discrepancies",
        passed=count <= limits.discrepancy_max,
        summary=f"{count} open reconciliation discrepancy(ies)",
        severity="warn",
        priority="medium",
        metadata={"open_discrepancies": count, "table_present": 1},
    )


def rows_violating(
    conn: Connection, relation: str, condition: str, *, name: str, summary: str
) -> CheckOutcome:
    """Data-quality check on a model: rows matching ``condition`` would make marts wrong."""
    count = conn.execute(text(f'SELECT count(*) FROM "{relation}" WHERE {condition}')).scalar_one()
    return CheckOutcome(
        name=name,
        passed=count == 0,
        summary=f"{count} row(s) in {relation}: {summary}",
        severity="error",
        priority="medium",
        metadata={"violating_rows": count, "relation": relation},
    )


def payments_missing_currency(conn: Connection, limits: Thresholds, now: datetime) -> CheckOutcome:
    """payments_daily groups by currency: an amount without one would vanish from it."""
    return rows_violating(
        conn,
        "stg_stripe__payments",
        "currency IS NULL AND amount_minor IS NOT NULL",
        name="payments_missing_currency",
        summary="amount without currency",
    )


def subscription_items_unpriced(
    conn: Connection, limits: Thresholds, now: datetime
) -> CheckOutcome:
    """MRR needs a known interval and amount on every revenue-bearing item."""
    return rows_violating(
        conn,
        "stg_stripe__subscription_items",
        "counts_toward_mrr = 1 AND mrr_minor IS NULL",
        name="subscription_items_unpriced",
        summary="active item without amount or known interval",
    )


def _listed(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def payouts_unbalanced(conn: Connection, limits: Thresholds, now: datetime) -> CheckOutcome:
    """A paid automatic payout Stripe has reconciled whose balance transactions do not
    sum to its amount: a transaction it carried is missing here (or wrong)."""
    t = BALANCE_TRANSACTIONS.c
    carried = (
        select(t.payout_id, func.sum(t.net_minor).label("net"), func.count().label("n"))
        .where(t.payout_id.is_not(None), t.type != "payout")
        .group_by(t.payout_id)
        .subquery()
    )
    p = PAYOUTS.c
    net = func.coalesce(carried.c.net, 0)
    rows = conn.execute(
        select(p.stripe_payout_id, p.currency, p.amount_minor, net, func.coalesce(carried.c.n, 0))
        .select_from(PAYOUTS.outerjoin(carried, carried.c.payout_id == p.stripe_payout_id))
        .where(
            p.status == "paid",
            p.automatic.is_(True),
            p.reconciliation_status == "completed",
            p.amount_minor != net,
        )
        .order_by(p.stripe_payout_id)
    ).all()
    meta: Metadata = {"unbalanced_payouts": len(rows)}
    for payout_id, currency, amount, total, count in rows[:10]:
        meta[f"payout:{payout_id}"] = (
            f"{amount} {currency} paid, {int(total)} in {count} transaction(s): "
            f"difference {amount - int(total)}"
        )
    return CheckOutcome(
        name="payouts_unbalanced",
        passed=not rows,
        summary=(
            f"{len(rows)} paid payout(s) not equal to their balance transactions"
            + (f": {_listed([r[0] for r in rows])}" if rows else "")
        ),
        severity="error",
        priority="high",
        metadata=meta,
    )


def payouts_failed(conn: Connection, limits: Thresholds, now: datetime) -> CheckOutcome:
    """A payout that failed in the last days: the money is back in the Stripe balance
    and the bank details need attention (critical, with Stripe's reason)."""
    p = PAYOUTS.c
    since = now - timedelta(days=limits.payout_failed_days)
    rows = conn.execute(
        select(p.stripe_payout_id, p.amount_minor, p.currency, p.failure_code, p.failure_message)
        .where(
            p.status == "failed",
            or_(p.arrival_date >= since, p.arrival_date.is_(None)),
        )
        .order_by(p.stripe_payout_id)
    ).all()
    meta: Metadata = {"failed_payouts": len(rows), "window_days": limits.payout_failed_days}
    for payout_id, amount, currency, code, message in rows[:10]:
        meta[f"payout:{payout_id}"] = f"{amount} {currency}: {code or 'no code'}: {message or ''}"
    reasons = sorted({str(r[3] or "unknown") for r in rows})
    return CheckOutcome(
        name="payouts_failed",
        passed=not rows,
        summary=(
            f"{len(rows)} payout(s) failed"
            + (f" ({', '.join(reasons)}): {_listed([r[0] for r in rows])}" if rows else "")
        ),
        severity="error",
        priority="critical",
        metadata=meta,
    )


def payment_fees_missing(conn: Connection, limits: Thresholds, now: datetime) -> CheckOutcome:
    """After the nightly run, every captured charge and effective refund it covered has
    its balance transaction (its fee and net) here; one missing means fees, net and
    payouts are incomplete."""
    r = RECONCILIATION_RUNS.c
    window_end = conn.execute(
        select(func.max(r.window_end)).where(r.status == "succeeded")
    ).scalar_one_or_none()
    if window_end is None:
        return CheckOutcome(
            name="payment_fees_missing",
            passed=True,
            summary="no nightly run yet: nothing to hold balance transactions to",
            severity="error",
            priority="high",
            metadata={"missing": 0},
        )
    until = int(utc(window_end).timestamp())
    t = BALANCE_TRANSACTIONS.c
    pay = PAYMENTS.c
    charges = select(pay.charge_id.label("source_id")).where(
        pay.status == "succeeded", pay.charge_id.is_not(None), pay.stripe_created <= until
    )
    ref = REFUNDS.c
    refunds = select(ref.stripe_refund_id.label("source_id")).where(
        ref.status.in_(("succeeded", "pending")), ref.stripe_created <= until
    )
    sources = charges.union_all(refunds).subquery()
    known = select(literal_column("1")).where(t.source_id == sources.c.source_id).exists()
    missing = list(
        conn.execute(
            select(sources.c.source_id).where(~known).order_by(sources.c.source_id)
        ).scalars()
    )
    return CheckOutcome(
        name="payment_fees_missing",
        passed=not missing,
        summary=(
            f"{len(missing)} charge(s) or refund(s) without their balance transaction "
            "after the nightly run" + (f": {_listed(missing)}" if missing else "")
        ),
        severity="error",
        priority="high",
        metadata={"missing": len(missing), "run_window_end": until},
    )


def run_all(
    conn: Connection, limits: Thresholds | None = None, now: datetime | None = None
) -> list[CheckOutcome]:
    """Every table-level check (not the model-level ones), for scripts and tests."""
    limits = limits or Thresholds()
    now = now or datetime.now(UTC)
    return [check(conn, limits, now) for check in TABLE_CHECKS]


TABLE_CHECKS: tuple[CheckFunction, ...] = (
    events_pending_too_long,
    events_dead_lettered,
    disputes_evidence_due,
    payment_failure_ratio,
    ticket_volume_spike,
    webhook_silence,
    open_discrepancies,
    payouts_unbalanced,
    payouts_failed,
    payment_fees_missing,
)
