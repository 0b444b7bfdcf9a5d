"""Payment-attempt limits per card and per customer, enforced by the database.

Card networks penalise merchants who retry a card too often (Visa and Mastercard
allow at most 15 attempts per card in 30 days), and a burst of retries on one
customer looks like card testing. The ledger ``payment_attempts`` is the only source
of truth, so every run, thread and process shares the same count: each reservation
counts the rolling windows and inserts its row in one transaction, serialised per
card and customer (PostgreSQL: transaction-scoped advisory locks; SQLite: the ledger
insert comes first and takes the database's single write lock). A refused attempt is
kept in the ledger with the window that refused it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, func, insert, select, text, update

from stripe_pipeline.db.models import PaymentAttempt

ATTEMPTS = PaymentAttempt.__table__
ALLOWED = "allowed"
REFUSED = "refused"


@dataclass(frozen=True)
class Window:
    """At most ``max_attempts`` allowed attempts per ``scope`` key within ``period``."""

    name: str
    scope: str  # "card" or "customer"
    period: timedelta
    max_attempts: int


DEFAULT_WINDOWS: tuple[Window, ...] = (
    Window("card_30d", "card", timedelta(days=30), 15),
    Window("card_daily", "card", timedelta(days=1), 4),
    Window("customer_30d", "customer", timedelta(days=30), 45),
    Window("customer_daily", "customer", timedelta(days=1), 10),
)


@dataclass(frozen=True)
class AttemptLimits:
    windows: tuple[Window, ...] = DEFAULT_WINDOWS

    @classmethod
    def configured(
        cls,
        *,
        card_per_30_days: int = 15,
        card_per_day: int = 4,
        customer_per_30_days: int = 45,
        customer_per_day: int = 10,
    ) -> AttemptLimits:
        return cls(
            (
                Window("card_30d", "card", timedelta(days=30), card_per_30_days),
                Window("card_daily", "card", timedelta(days=1), card_per_day),
                Window("customer_30d", "customer", timedelta(days=30), customer_per_30_days),
                Window("customer_daily", "customer", timedelta(days=1), customer_per_day),
            )
        )


@dataclass(frozen=True)
class AttemptRequest:
    card_fingerprint: str | None
    payment_method_id: str | None
    customer_id: str | None
    recovery_id: int | None = None
    payment_intent_id: str | None = None
    invoice_id: str | None = None
    idempotency_key: str | None = None

    @property
    def card_key(self) -> str:
        return card_key(self.card_fingerprint, self.payment_method_id, self.customer_id)


@dataclass(frozen=True)
class AttemptDecision:
    attempt_id: int
    allowed: bool
    reason: str | None = None  # the refusing window's name
    retry_after: datetime | None = None  # when the refusing window frees a slot
    counts: dict[str, int] | None = None


def card_key(
    fingerprint: str | None, payment_method_id: str | None, customer_id: str | None
) -> str:
    """The card identity: its fingerprint (the same card across payment methods), else the
    payment method, else the customer's unknown card."""
    if fingerprint:
        return f"fp:{fingerprint}"
    if payment_method_id:
        return f"pm:{payment_method_id}"
    return f"cus:{customer_id or 'unknown'}:card"


def _utc(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC)


def _lock_keys(conn: Connection, keys: Sequence[str]) -> None:
    """Serialise reservations per card and customer (sorted, so two never deadlock)."""
    if conn.dialect.name != "postgresql":
        return
    for key in sorted(set(keys)):
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"payment_attempts:{key}"},
        )


def reserve_attempt(
    conn: Connection,
    request: AttemptRequest,
    limits: AttemptLimits | None = None,
    *,
    now: datetime | None = None,
) -> AttemptDecision:
    """Count the rolling windows and record the attempt as allowed or refused.

    Call inside a transaction that contains nothing else slow: the per-card lock is
    held until it commits. The insert comes before the counts so that, on SQLite, the
    transaction holds the write lock while counting.
    """
    limits = limits or AttemptLimits()
    now = _utc(now)
    key = request.card_key
    lock_keys = [f"card:{key}"]
    if request.customer_id:
        lock_keys.append(f"customer:{request.customer_id}")
    _lock_keys(conn, lock_keys)
    attempt_id = conn.execute(
        insert(ATTEMPTS)
        .values(
            card_key=key,
            customer_id=request.customer_id,
            recovery_id=request.recovery_id,
            payment_intent_id=request.payment_intent_id,
            invoice_id=request.invoice_id,
            idempotency_key=request.idempotency_key,
            decision="pending",
            attempted_at=now,
        )
        .returning(ATTEMPTS.c.id)
    ).scalar_one()

    counts: dict[str, int] = {}
    refusal: Window | None = None
    retry_after: datetime | None = None
    for window in limits.windows:
        if window.scope == "customer" and not request.customer_id:
            continue
        column = ATTEMPTS.c.card_key if window.scope == "card" else ATTEMPTS.c.customer_id
        value = key if window.scope == "card" else request.customer_id
        since = now - window.period
        used = conn.execute(
            select(func.count()).where(
                column == value,
                ATTEMPTS.c.decision == ALLOWED,
                ATTEMPTS.c.attempted_at > since,
                ATTEMPTS.c.id != attempt_id,
            )
        ).scalar_one()
        counts[window.name] = used
        if used >= window.max_attempts and refusal is None:
            refusal = window
            retry_after = _free_slot_at(conn, column, value, window, now)

    decision = REFUSED if refusal else ALLOWED
    conn.execute(
        update(ATTEMPTS)
        .where(ATTEMPTS.c.id == attempt_id)
        .values(decision=decision, reason=refusal.name if refusal else None)
    )
    return AttemptDecision(
        attempt_id,
        refusal is None,
        refusal.name if refusal else None,
        retry_after,
        counts,
    )


def _free_slot_at(conn: Connection, column, value: str, window: Window, now: datetime) -> datetime:
    """When the window next has room: the moment its oldest counted attempts age out."""
    nth = conn.execute(
        select(ATTEMPTS.c.attempted_at)
        .where(
            column == value,
            ATTEMPTS.c.decision == ALLOWED,
            ATTEMPTS.c.attempted_at > now - window.period,
        )
        .order_by(ATTEMPTS.c.attempted_at.desc())
        .offset(window.max_attempts - 1)
        .limit(1)
    ).scalar()
    if nth is None:
        return now
    oldest = nth if nth.tzinfo else nth.replace(tzinfo=UTC)
    return oldest + window.period + timedelta(seconds=1)


def reserve(
    engine: Engine,
    request: AttemptRequest,
    limits: AttemptLimits | None = None,
    *,
    now: datetime | None = None,
) -> AttemptDecision:
    """``reserve_attempt`` in its own short transaction (what retry runs use)."""
    with engine.begin() as conn:
        return reserve_attempt(conn, request, limits, now=now)


def record_outcome(
    conn: Connection, attempt_id: int, outcome: str, *, now: datetime | None = None
) -> None:
    """Note how an allowed attempt ended (succeeded, failed, requires_action, error)."""
    conn.execute(
        update(ATTEMPTS)
        .where(ATTEMPTS.c.id == attempt_id)
        .values(outcome=outcome[:32], completed_at=_utc(now))
    )
