"""Opening, escalating and closing recoveries from changed payment rows.

A failed payment (a payment or invoice row the post-apply hook sees fail) opens
one ``payment_recovery_attempts`` row per invoice (else per PaymentIntent): the live
key is unique in the database, so repeated or concurrent deliveries of the events for
one failure update the same row. A new failure only ever moves a recovery to a more
severe strategy (``retry_later`` < ``customer_action`` < ``do_not_retry``); our own
retry's failure event, arriving after the retry run already recorded the API answer,
changes nothing. Success events close the recovery; a new card resumes recoveries that
were waiting for the customer. Every decision is audited; notifications are returned
to the caller so they are sent only after the transaction commits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from stripe_pipeline.audit import AuditEntry, record
from stripe_pipeline.db.models import (
    LIVE_RECOVERY,
    PaymentRecoveryAttempt,
    StripeInvoice,
    StripePayment,
    StripePaymentMethod,
)
from stripe_pipeline.db.statuses import IssueType
from stripe_pipeline.recover.strategies import (
    CUSTOMER_ACTION,
    DEFAULT_POLICY,
    DO_NOT_RETRY,
    RecoveryPolicy,
    Strategy,
)
from stripe_pipeline.support.notify import Notification
from stripe_pipeline.support.tickets import TicketRequest, open_ticket, resolve_ticket

log = logging.getLogger(__name__)

RECOVERIES = PaymentRecoveryAttempt.__table__
PAYMENTS = StripePayment.__table__
INVOICES = StripeInvoice.__table__
PAYMENT_METHODS = StripePaymentMethod.__table__
LIVE_STATUSES = ("open", "awaiting_customer", "blocked", "exhausted")


@dataclass(frozen=True)
class FailedPayment:
    """What a failure event tells us, tolerant of old and 2025+ payload shapes."""

    payment_intent_id: str | None = None
    invoice_id: str | None = None
    customer_id: str | None = None
    payment_method_id: str | None = None
    card_fingerprint: str | None = None
    failure_code: str | None = None
    decline_code: str | None = None
    payment_status: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    stripe_event_id: str | None = None

    @property
    def recovery_key(self) -> str:
        if self.invoice_id:
            return f"invoice:{self.invoice_id}"
        if self.payment_intent_id:
            return f"payment_intent:{self.payment_intent_id}"
        raise ValueError("a failed payment needs an invoice or a PaymentIntent id")


@dataclass
class RecoveryDecision:
    recovery_id: int | None
    action: str  # opened, updated, escalated, unchanged, recovered, canceled, resumed
    status: str | None = None
    strategy: str | None = None
    ticket_id: int | None = None
    notifications: list[Notification] = field(default_factory=list)


def _utc(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC)


def enrich(conn: Connection, failure: FailedPayment) -> FailedPayment:
    """Fill what the event lacks from the domain tables (invoices carry no decline code)."""
    values = failure.__dict__.copy()
    if failure.payment_intent_id:
        payment = (
            conn.execute(
                select(PAYMENTS).where(PAYMENTS.c.payment_intent_id == failure.payment_intent_id)
            )
            .mappings()
            .first()
        )
        if payment is not None:
            for name in ("payment_method_id", "card_fingerprint", "failure_code", "decline_code"):
                values[name] = values[name] or payment[name]
            values["customer_id"] = values["customer_id"] or payment["customer_id"]
            values["invoice_id"] = values["invoice_id"] or payment["invoice_id"]
        if not values["invoice_id"]:
            values["invoice_id"] = conn.execute(
                select(INVOICES.c.stripe_invoice_id).where(
                    INVOICES.c.payment_intent_id == failure.payment_intent_id
                )
            ).scalar()
    elif failure.invoice_id:  # a basil invoice names its PaymentIntent only once linked
        invoice = conn.execute(
            select(INVOICES.c.payment_intent_id, INVOICES.c.customer_id).where(
                INVOICES.c.stripe_invoice_id == failure.invoice_id
            )
        ).first()
        if invoice is not None:
            values["payment_intent_id"] = invoice.payment_intent_id
            values["customer_id"] = values["customer_id"] or invoice.customer_id
    if values["payment_method_id"] and not values["card_fingerprint"]:
        values["card_fingerprint"] = conn.execute(
            select(PAYMENT_METHODS.c.card_fingerprint).where(
                PAYMENT_METHODS.c.stripe_payment_method_id == values["payment_method_id"]
            )
        ).scalar()
    return FailedPayment(**values)


def _live(conn: Connection, failure: FailedPayment) -> Mapping[str, Any] | None:
    """The live recovery for this failure, by key or (re-keyed) by its PaymentIntent."""
    conditions = [RECOVERIES.c.recovery_key == failure.recovery_key]
    if failure.payment_intent_id:
        conditions.append(RECOVERIES.c.payment_intent_id == failure.payment_intent_id)
    return (
        conn.execute(
            select(RECOVERIES)
            .where(or_(*conditions), RECOVERIES.c.status.in_(LIVE_STATUSES))
            .order_by(RECOVERIES.c.id)
            .with_for_update()
        )
        .mappings()
        .first()
    )


def audit_recovery(
    conn: Connection,
    action: str,
    recovery_id: int,
    *,
    actor: str,
    stripe_event_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    record(
        conn,
        [
            AuditEntry(
                actor=actor,
                action=action,
                object_type="payment_recovery",
                object_id=str(recovery_id),
                stripe_event_id=stripe_event_id,
                before=before,
                after=_jsonable(after),
                details=_jsonable(details),
            )
        ],
    )


def _jsonable(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()}


def apply_strategy(
    conn: Connection,
    recovery: Mapping[str, Any],
    strategy: Strategy,
    error_type: str,
    *,
    now: datetime,
    actor: str,
    reason: str,
    stripe_event_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> RecoveryDecision:
    """Move a recovery to what ``strategy`` prescribes after one more failure.

    ``retry_later`` schedules the next retry from the delays (``attempt_count`` failures
    so far) or, once they are used up, exhausts the recovery with a ticket;
    ``customer_action`` waits for the customer and notifies; ``do_not_retry`` blocks
    with a high-priority ticket.
    """
    rid = recovery["id"]
    attempts = recovery["attempt_count"]
    values: dict[str, Any] = {
        "recovery_strategy": strategy.name,
        "last_error_type": error_type[:64],
        "updated_at": now,
        **(extra or {}),
    }
    decision = RecoveryDecision(rid, "updated", strategy=strategy.name)
    ticket: TicketRequest | None = None
    if strategy.name == DO_NOT_RETRY:
        values.update(status="blocked", next_attempt_at=None)
        ticket = _ticket(
            recovery, IssueType.PAYMENT_RECOVERY_BLOCKED, strategy.ticket_priority, error_type
        )
    elif strategy.name == CUSTOMER_ACTION or strategy.notify_customer:
        values.update(status="awaiting_customer", next_attempt_at=None)
        decision.notifications.append(_customer_notification(recovery, error_type))
    elif attempts < len(strategy.retry_delays):
        values.update(status="open", next_attempt_at=now + strategy.retry_delays[attempts])
    else:
        values.update(status="exhausted", next_attempt_at=None)
        ticket = _ticket(recovery, IssueType.PAYMENT_RECOVERY_EXHAUSTED, "medium", error_type)
    if ticket is not None:
        result = open_ticket(conn, ticket, actor=actor)
        values["support_ticket_id"] = result.ticket_id
        decision.ticket_id = result.ticket_id
        decision.notifications.append(
            Notification(ticket.title, ticket.title, ticket.priority, dict(ticket.details))
        )
    conn.execute(update(RECOVERIES).where(RECOVERIES.c.id == rid).values(values))
    decision.status = values["status"]
    before = {
        k: recovery.get(k)
        for k in ("status", "recovery_strategy", "last_error_type", "next_attempt_at")
    }
    audit_recovery(
        conn,
        f"recovery_{reason}",
        rid,
        actor=actor,
        stripe_event_id=stripe_event_id,
        before=_jsonable(before),
        after={k: v for k, v in values.items() if k != "updated_at"},
        details={"attempt_count": attempts, "error_type": error_type},
    )
    return decision


def _ticket(
    recovery: Mapping[str, Any], issue_type: str, priority: str, error_type: str
) -> TicketRequest:
    what = recovery["recovery_key"] or f"recovery {recovery['id']}"
    title = {
        IssueType.PAYMENT_RECOVERY_BLOCKED: f"Hard decline ({error_type}) on {what}: never retried",
        IssueType.PAYMENT_RECOVERY_EXHAUSTED: (
            f"Payment recovery exhausted for {what} ({error_type})"
        ),
    }[issue_type]
    return TicketRequest(
        issue_type=issue_type,
        dedupe_key=f"{issue_type}:{what}",
        title=title,
        priority=priority,
        payment_intent_id=recovery["payment_intent_id"],
        customer_id=recovery["customer_id"],
        stripe_event_id=recovery["stripe_event_id"],
        details={
            "recovery_id": recovery["id"],
            "invoice_id": recovery["invoice_id"],
            "attempt_count": recovery["attempt_count"],
            "error_type": error_type,
        },
    )


def _customer_notification(recovery: Mapping[str, Any], error_type: str) -> Notification:
    return Notification(
        title=f"Customer action needed to recover a payment ({error_type})",
        body=(
            "The card was declined for a reason only the customer can fix (new card, "
            "corrected details or authentication). It will not be retried until then."
        ),
        priority="medium",
        details={
            "recovery_id": recovery["id"],
            "customer_id": recovery["customer_id"],
            "invoice_id": recovery["invoice_id"],
            "payment_intent_id": recovery["payment_intent_id"],
            "error_type": error_type,
            "audience": "customer",
        },
    )


def open_recovery(
    conn: Connection,
    failure: FailedPayment,
    *,
    policy: RecoveryPolicy = DEFAULT_POLICY,
    now: datetime | None = None,
    actor: str = "recovery",
) -> RecoveryDecision:
    """Open or update the recovery of one failed payment (idempotent per event)."""
    now = _utc(now)
    failure = enrich(conn, failure)
    strategy, error_type = policy.choose(
        decline_code=failure.decline_code,
        failure_code=failure.failure_code,
        payment_status=failure.payment_status,
    )
    facts = {
        "payment_intent_id": failure.payment_intent_id,
        "invoice_id": failure.invoice_id,
        "customer_id": failure.customer_id,
        "payment_method_id": failure.payment_method_id,
        "failure_code": failure.failure_code,
        "decline_code": failure.decline_code,
        "amount_minor": failure.amount_minor,
        "currency": failure.currency,
    }
    existing = _live(conn, failure)
    if existing is None:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        new_id = conn.execute(
            dialect.insert(RECOVERIES)
            .values(
                recovery_key=failure.recovery_key,
                status="open",
                stripe_event_id=failure.stripe_event_id,
                created_at=now,
                updated_at=now,
                **{k: v for k, v in facts.items() if v is not None},
            )
            .on_conflict_do_nothing(
                index_elements=["recovery_key"],
                index_where=text(LIVE_RECOVERY),
            )
            .returning(RECOVERIES.c.id)
        ).scalar()
        if new_id is not None:
            row = conn.execute(select(RECOVERIES).where(RECOVERIES.c.id == new_id)).mappings().one()
            decision = apply_strategy(
                conn,
                row,
                strategy,
                error_type,
                now=now,
                actor=actor,
                reason="opened",
                stripe_event_id=failure.stripe_event_id,
            )
            decision.action = "opened"
            return decision
        existing = _live(conn, failure)  # a concurrent delivery opened it first
        assert existing is not None

    if existing["stripe_event_id"] == failure.stripe_event_id:
        return RecoveryDecision(existing["id"], "unchanged", existing["status"])
    # the invoice's key wins over a PaymentIntent-only key opened earlier
    fill = {k: v for k, v in facts.items() if v is not None and existing[k] is None}
    if failure.invoice_id and existing["recovery_key"] != failure.recovery_key:
        fill["recovery_key"] = failure.recovery_key
    fill["stripe_event_id"] = failure.stripe_event_id
    current = policy.strategy(existing["recovery_strategy"])
    if existing["status"] in ("open", "awaiting_customer") and strategy.severity > current.severity:
        decision = apply_strategy(
            conn,
            existing,
            strategy,
            error_type,
            now=now,
            actor=actor,
            reason="escalated",
            stripe_event_id=failure.stripe_event_id,
            extra=fill,
        )
        decision.action = "escalated"
        return decision
    conn.execute(
        update(RECOVERIES).where(RECOVERIES.c.id == existing["id"]).values(**fill, updated_at=now)
    )
    audit_recovery(
        conn,
        "recovery_failure_seen",
        existing["id"],
        actor=actor,
        stripe_event_id=failure.stripe_event_id,
        details={"error_type": error_type, "kept_status": existing["status"]},
    )
    return RecoveryDecision(existing["id"], "updated", existing["status"], current.name)


def close_recovery(
    conn: Connection,
    *,
    invoice_id: str | None = None,
    payment_intent_id: str | None = None,
    status: str = "recovered",
    stripe_event_id: str | None = None,
    now: datetime | None = None,
    actor: str = "recovery",
    via: str = "event",
) -> RecoveryDecision | None:
    """Close the live recovery of a paid (or voided) invoice or PaymentIntent, if any."""
    now = _utc(now)
    conditions = []
    if invoice_id:
        conditions.append(RECOVERIES.c.invoice_id == invoice_id)
    if payment_intent_id:
        conditions.append(RECOVERIES.c.payment_intent_id == payment_intent_id)
    if not conditions:
        return None
    row = (
        conn.execute(
            select(RECOVERIES)
            .where(or_(*conditions), RECOVERIES.c.status.in_(LIVE_STATUSES))
            .with_for_update()
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    conn.execute(
        update(RECOVERIES)
        .where(RECOVERIES.c.id == row["id"])
        .values(status=status, next_attempt_at=None, closed_at=now, updated_at=now)
    )
    if row["support_ticket_id"] is not None:
        resolve_ticket(
            conn,
            row["support_ticket_id"],
            resolution="auto_closed",
            note=f"payment {status} ({via})",
            actor=actor,
        )
    audit_recovery(
        conn,
        f"recovery_{status}",
        row["id"],
        actor=actor,
        stripe_event_id=stripe_event_id,
        before={"status": row["status"]},
        after={"status": status},
        details={"via": via, "attempt_count": row["attempt_count"]},
    )
    return RecoveryDecision(row["id"], status, status, row["recovery_strategy"])


def resume_for_customer(
    conn: Connection,
    customer_id: str,
    *,
    stripe_event_id: str | None = None,
    payment_method_id: str | None = None,
    now: datetime | None = None,
    actor: str = "recovery",
) -> list[int]:
    """The customer has a new card: recoveries waiting on them are due again now."""
    now = _utc(now)
    ids = list(
        conn.execute(
            update(RECOVERIES)
            .where(
                RECOVERIES.c.customer_id == customer_id,
                RECOVERIES.c.status == "awaiting_customer",
            )
            .values(
                status="open",
                next_attempt_at=now,
                updated_at=now,
                **({"payment_method_id": payment_method_id} if payment_method_id else {}),
            )
            .returning(RECOVERIES.c.id)
        ).scalars()
    )
    for rid in ids:
        audit_recovery(
            conn,
            "recovery_resumed",
            rid,
            actor=actor,
            stripe_event_id=stripe_event_id,
            before={"status": "awaiting_customer"},
            after={"status": "open", "next_attempt_at": now},
            details={"payment_method_id": payment_method_id},
        )
    return ids


def notifications_of(decisions: Iterable[RecoveryDecision | None]) -> list[Notification]:
    """What the decisions want sent (after their transaction commits)."""
    return [note for decision in decisions if decision for note in decision.notifications]
