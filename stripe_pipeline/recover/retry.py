"""Executing due recovery retries through the Stripe API.

A run claims due recoveries (``status='open'`` and ``next_attempt_at`` passed) by
pushing their ``next_attempt_at`` a lease ahead in one statement (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL), so concurrent runs never retry the same payment; a crashed
run's claims simply come due again. Each retry first asks the database-wide attempt
limiter (``limits``), then pays the invoice or confirms the PaymentIntent with the
idempotency key ``recovery-<id>-attempt-<n>``: a retry of the same attempt after a
timeout is replayed by Stripe, never charged twice. The API answer decides the next
step through the same strategy table as the failure events.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import Engine, select, update

from stripe_pipeline.db.models import PaymentRecoveryAttempt, StripeCustomer
from stripe_pipeline.process.errors import classify
from stripe_pipeline.recover import limits as attempt_limits
from stripe_pipeline.recover.merge import merge_all_linked
from stripe_pipeline.recover.open import (
    RecoveryDecision,
    apply_strategy,
    audit_recovery,
    close_recovery,
    notifications_of,
)
from stripe_pipeline.recover.strategies import (
    DEFAULT_POLICY,
    DO_NOT_RETRY,
    RecoveryPolicy,
    Strategy,
)
from stripe_pipeline.support.notify import Notifier, send_notifications

log = logging.getLogger(__name__)

RECOVERIES = PaymentRecoveryAttempt.__table__
CUSTOMERS = StripeCustomer.__table__
CLAIM_LEASE = timedelta(minutes=15)
TEMPORARY_ERROR_DELAY = timedelta(minutes=30)
API_ERROR = Strategy("api_error", open_ticket=True)


@dataclass
class RetryRunSummary:
    """What one run did; ``as_metadata`` feeds the Dagster materialization."""

    claimed: int = 0
    outcomes: Counter = field(default_factory=Counter)
    merged: int = 0  # duplicate recoveries of one failure merged before claiming
    api_calls: int = 0
    seconds: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "merged_duplicates": self.merged,
            **{f"outcome_{k}": v for k, v in sorted(self.outcomes.items())},
            "api_calls": self.api_calls,
            "seconds": round(self.seconds, 3),
            "attempts_per_second": round(self.outcomes.total() / self.seconds, 1)
            if self.seconds
            else 0.0,
        }


def _utc(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC)


def attempt_key(recovery_id: int, attempt_number: int) -> str:
    """The idempotency key of one attempt: a replay of it is never a second charge."""
    return f"recovery-{recovery_id}-attempt-{attempt_number}"


def claim_due(
    engine: Engine, *, now: datetime, limit: int, lease: timedelta = CLAIM_LEASE
) -> list[dict[str, Any]]:
    """Take up to ``limit`` due recoveries for this run (see the module docstring)."""
    due = (
        select(RECOVERIES.c.id)
        .where(RECOVERIES.c.status == "open", RECOVERIES.c.next_attempt_at <= now)
        .order_by(RECOVERIES.c.next_attempt_at, RECOVERIES.c.id)
        .limit(limit)
    )
    if engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    with engine.begin() as conn:
        rows = conn.execute(
            update(RECOVERIES)
            .where(RECOVERIES.c.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=now + lease)
            .returning(*RECOVERIES.c)
        ).mappings()
        return [dict(r) for r in rows]


def run_due_retries(
    engine: Engine,
    api: Any,
    *,
    now: datetime | None = None,
    clock: Callable[[], datetime] | None = None,
    limits: attempt_limits.AttemptLimits | None = None,
    policy: RecoveryPolicy = DEFAULT_POLICY,
    notifier: Notifier | None = None,
    batch_size: int = 500,
    max_recoveries: int | None = None,
    workers: int = 4,
    actor: str = "recovery_run",
) -> RetryRunSummary:
    """Retry every due recovery once (up to ``max_recoveries``), ``workers`` at a time.

    ``api`` is a ``StripeApi`` (or anything with ``pay_invoice``/``confirm_payment_intent``);
    the API client's limiter paces all workers together. ``now`` fixes the run's clock
    (tests); otherwise ``clock`` (default: the wall clock) is read per attempt.
    """
    limits = limits or attempt_limits.AttemptLimits()
    clock = clock or (lambda: _utc(now))
    started = time.perf_counter()
    calls_before = getattr(api, "calls", 0)
    summary = RetryRunSummary()
    # one failure, one retry: recoveries whose invoice link arrived without a processed
    # event (reconciliation) are merged before anything is claimed
    with engine.begin() as conn:
        merged = merge_all_linked(conn, policy=policy, actor=actor, now=clock())
    summary.merged = sum(1 for decision in merged if decision.action == "merged")
    if notifier is not None:  # a merge may escalate the survivor (a hard decline)
        send_notifications(notifier, notifications_of(merged))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        while max_recoveries is None or summary.claimed < max_recoveries:
            take = batch_size
            if max_recoveries is not None:
                take = min(take, max_recoveries - summary.claimed)
            batch = claim_due(engine, now=clock(), limit=take)
            if not batch:
                break
            summary.claimed += len(batch)
            results = pool.map(
                lambda row: _retry_one(engine, api, row, clock, limits, policy, actor), batch
            )
            for outcome, decision in results:
                summary.outcomes[outcome] += 1
                if notifier is not None and decision is not None:
                    send_notifications(notifier, decision.notifications)
    flush = getattr(api, "flush_audit", None)
    if flush:
        flush()
    summary.api_calls = getattr(api, "calls", 0) - calls_before
    summary.seconds = time.perf_counter() - started
    return summary


def _retry_one(
    engine: Engine,
    api: Any,
    row: Mapping[str, Any],
    clock: Callable[[], datetime],
    limits: attempt_limits.AttemptLimits,
    policy: RecoveryPolicy,
    actor: str,
) -> tuple[str, RecoveryDecision | None]:
    """One retry of one recovery; returns (outcome, decision with notifications)."""
    try:
        return _attempt(engine, api, row, clock, limits, policy, actor)
    except Exception as exc:  # a bug or an outage must not stop the other retries
        log.exception("recovery %s: retry failed unexpectedly", row["id"])
        with engine.begin() as conn:
            conn.execute(
                update(RECOVERIES)
                .where(RECOVERIES.c.id == row["id"], RECOVERIES.c.status == "open")
                .values(next_attempt_at=clock() + TEMPORARY_ERROR_DELAY)
            )
            audit_recovery(
                conn,
                "recovery_retry_error",
                row["id"],
                actor=actor,
                details={"error": f"{type(exc).__name__}: {str(exc)[:500]}"},
            )
        return "error", None


def _attempt(
    engine: Engine,
    api: Any,
    row: Mapping[str, Any],
    clock: Callable[[], datetime],
    limits: attempt_limits.AttemptLimits,
    policy: RecoveryPolicy,
    actor: str,
) -> tuple[str, RecoveryDecision | None]:
    rid = row["id"]
    number = row["attempt_count"] + 1
    key = attempt_key(rid, number)
    now = clock()

    with engine.connect() as conn:
        flagged = (
            row["customer_id"]
            and conn.execute(
                select(CUSTOMERS.c.fraud_reason).where(
                    CUSTOMERS.c.stripe_customer_id == row["customer_id"],
                    CUSTOMERS.c.fraud_flagged_at.is_not(None),
                )
            ).first()
        )
        fingerprint = _fingerprint(conn, row)
    if flagged:  # never charge a card again for a customer under fraud review
        with engine.begin() as conn:
            decision = apply_strategy(
                conn,
                row,
                policy.strategies[DO_NOT_RETRY],
                "customer_fraud_flagged",
                now=now,
                actor=actor,
                reason="blocked",
            )
        return "blocked", decision

    verdict = attempt_limits.reserve(
        engine,
        attempt_limits.AttemptRequest(
            card_fingerprint=fingerprint,
            payment_method_id=row["payment_method_id"],
            customer_id=row["customer_id"],
            recovery_id=rid,
            payment_intent_id=row["payment_intent_id"],
            invoice_id=row["invoice_id"],
            idempotency_key=key,
        ),
        limits,
        now=now,
    )
    if not verdict.allowed:
        later = max(verdict.retry_after or now, now + timedelta(minutes=1))
        with engine.begin() as conn:
            conn.execute(
                update(RECOVERIES)
                .where(RECOVERIES.c.id == rid)
                .values(next_attempt_at=later, updated_at=now)
            )
            audit_recovery(
                conn,
                "recovery_attempt_refused",
                rid,
                actor=actor,
                details={
                    "reason": verdict.reason,
                    "attempt_id": verdict.attempt_id,
                    "next_attempt_at": later.isoformat(),
                    "counts": verdict.counts,
                },
            )
        return "refused", None

    try:
        if row["invoice_id"]:
            answer = api.pay_invoice(row["invoice_id"], idempotency_key=key)
            state = "succeeded" if answer.get("status") == "paid" or answer.get("paid") else None
            if state is None:
                state = _invoice_state(api, answer)
        else:
            answer = api.confirm_payment_intent(
                row["payment_intent_id"],
                idempotency_key=key,
                payment_method=row["payment_method_id"],
            )
            state = answer.get("status") or "unknown"
    except stripe.CardError as exc:
        err = exc.error
        decline = getattr(err, "decline_code", None) if err is not None else None
        return _after_failure(
            engine, row, number, verdict.attempt_id, policy, actor, clock(), exc.code, decline
        )
    except stripe.StripeError as exc:
        return _after_api_error(engine, row, number, verdict.attempt_id, actor, clock(), exc)

    done_at = clock()
    with engine.begin() as conn:
        attempt_limits.record_outcome(conn, verdict.attempt_id, state, now=done_at)
        conn.execute(
            update(RECOVERIES)
            .where(RECOVERIES.c.id == rid)
            .values(attempt_count=number, last_attempt_at=done_at, updated_at=done_at)
        )
        current = {**row, "attempt_count": number}
        if state == "succeeded":
            decision = close_recovery(
                conn,
                invoice_id=row["invoice_id"],
                payment_intent_id=None if row["invoice_id"] else row["payment_intent_id"],
                now=done_at,
                actor=actor,
                via=f"api:{key}",
            )
            return "succeeded", decision
        if state in ("requires_action", "requires_confirmation"):
            strategy, code = policy.choose(payment_status="requires_action")
            decision = apply_strategy(
                conn, current, strategy, code, now=done_at, actor=actor, reason="customer_action"
            )
            return "customer_action", decision
        if state == "processing":  # settles later; the success or failure event decides
            conn.execute(
                update(RECOVERIES)
                .where(RECOVERIES.c.id == rid)
                .values(next_attempt_at=done_at + timedelta(days=1))
            )
            return "processing", None
        strategy, code = policy.choose(failure_code=state)
        decision = apply_strategy(
            conn, current, strategy, code, now=done_at, actor=actor, reason="retry_failed"
        )
        return "failed", decision


def _invoice_state(api: Any, invoice: Mapping[str, Any]) -> str:
    """An unpaid invoice answer: ask its PaymentIntent why (e.g. 3-D Secure pending)."""
    pi = invoice.get("payment_intent")
    pi_id = pi.get("id") if isinstance(pi, dict) else pi
    if not pi_id:
        return "failed"
    status = pi.get("status") if isinstance(pi, dict) else None
    if status is None:
        status = api.retrieve("payment_intents", pi_id).get("status")
    return {"requires_payment_method": "failed"}.get(status, status or "failed")


def _fingerprint(conn, row: Mapping[str, Any]) -> str | None:
    from stripe_pipeline.recover.open import PAYMENT_METHODS, PAYMENTS

    if row["payment_method_id"]:
        found = conn.execute(
            select(PAYMENT_METHODS.c.card_fingerprint).where(
                PAYMENT_METHODS.c.stripe_payment_method_id == row["payment_method_id"]
            )
        ).scalar()
        if found:
            return found
    if row["payment_intent_id"]:
        return conn.execute(
            select(PAYMENTS.c.card_fingerprint).where(
                PAYMENTS.c.payment_intent_id == row["payment_intent_id"]
            )
        ).scalar()
    return None


def _after_failure(
    engine: Engine,
    row: Mapping[str, Any],
    number: int,
    attempt_id: int,
    policy: RecoveryPolicy,
    actor: str,
    now: datetime,
    failure_code: str | None,
    decline_code: str | None,
) -> tuple[str, RecoveryDecision | None]:
    """A declined retry: count it, then let the decline code pick the next step."""
    strategy, code = policy.choose(decline_code=decline_code, failure_code=failure_code)
    with engine.begin() as conn:
        attempt_limits.record_outcome(conn, attempt_id, "failed", now=now)
        values = {"attempt_count": number, "last_attempt_at": now}
        if failure_code:
            values["failure_code"] = failure_code
        if decline_code:
            values["decline_code"] = decline_code
        decision = apply_strategy(
            conn,
            {**row, **values},
            strategy,
            code,
            now=now,
            actor=actor,
            reason="retry_failed",
            extra=values,
        )
    return {"exhausted": "exhausted", "blocked": "blocked"}.get(
        decision.status or "", "failed"
    ), decision


def _after_api_error(
    engine: Engine,
    row: Mapping[str, Any],
    number: int,
    attempt_id: int,
    actor: str,
    now: datetime,
    exc: stripe.StripeError,
) -> tuple[str, RecoveryDecision | None]:
    """429/5xx/network (after the client's own retries): try the same attempt later.
    Any other API error (already paid, invalid request) is a person's job: a ticket."""
    message = str(getattr(exc, "user_message", None) or exc)
    with engine.begin() as conn:
        attempt_limits.record_outcome(conn, attempt_id, "error", now=now)
        if "already paid" in message.lower():
            decision = close_recovery(
                conn, invoice_id=row["invoice_id"], now=now, actor=actor, via="already_paid"
            )
            return "succeeded", decision
        if classify(exc) == "temporary":
            conn.execute(
                update(RECOVERIES)
                .where(RECOVERIES.c.id == row["id"])
                .values(next_attempt_at=now + TEMPORARY_ERROR_DELAY, updated_at=now)
            )
            audit_recovery(
                conn,
                "recovery_retry_deferred",
                row["id"],
                actor=actor,
                details={"error": type(exc).__name__, "http_status": exc.http_status},
            )
            return "deferred", None
        values = {"attempt_count": number, "last_attempt_at": now}
        decision = apply_strategy(
            conn,
            {**row, **values},
            API_ERROR,
            (exc.code or type(exc).__name__)[:64],
            now=now,
            actor=actor,
            reason="retry_error",
            extra=values,
        )
        return "exhausted", decision
