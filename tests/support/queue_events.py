"""Helpers for queue and runner tests: load events, and small stand-in apply functions.

The stand-ins exist to force outcomes the real appliers never produce on purpose (a
temporary failure, an apply that raises as a whole, a slow apply to kill mid-batch).
``MarkingApply`` writes one audit row per application, so "applied exactly once" is
countable; it wraps the real ``apply_events`` when that module is present.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, func, select, text

from stripe_pipeline.audit import AUDIT_LOG, AuditEntry, record
from stripe_pipeline.land.envelope import envelope_from_event
from stripe_pipeline.land.store import insert_event
from stripe_pipeline.process.events import QueuedEvent

MARK_ACTION = "test_applied"


def real_apply_available() -> bool:
    return importlib.util.find_spec("stripe_pipeline.process.apply") is not None


def event_doc(
    n: int,
    *,
    event_type: str = "payment_intent.succeeded",
    created: int | None = None,
    obj: dict[str, Any] | None = None,
) -> dict[str, Any]:
    obj = obj or {
        "id": f"pi_{n}",
        "object": "payment_intent",
        "amount": 1000 + n,
        "currency": "usd",
        "status": "succeeded",
        "customer": f"cus_{n % 7}",
    }
    return {
        "id": f"evt_{n:06d}",
        "object": "event",
        "type": event_type,
        "created": created if created is not None else 1_700_000_000 + n,
        "livemode": False,
        "api_version": "2024-06-20",
        "data": {"object": obj},
    }


def load(engine: Engine, docs: Iterable[dict[str, Any]]) -> int:
    with engine.begin() as conn:
        return sum(insert_event(conn, envelope_from_event(d)) for d in docs)


def statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT stripe_event_id, status FROM stripe_events")).all())


def make_due(engine: Engine) -> None:
    """Move every waiting retry (and lease) into the past, instead of sleeping."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE stripe_events SET next_retry_at = :past WHERE status = 'retry'"
            ).bindparams(past="2000-01-01 00:00:00")
            if conn.dialect.name == "sqlite"
            else text(
                "UPDATE stripe_events SET next_retry_at = now() - interval '1 second' "
                "WHERE status = 'retry'"
            )
        )


def marks(engine: Engine) -> dict[str, int]:
    """How many times each Stripe event was applied (committed) by MarkingApply."""
    a = AUDIT_LOG.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(a.stripe_event_id, func.count())
            .where(a.action == MARK_ACTION)
            .group_by(a.stripe_event_id)
        ).all()
    return dict(rows)


@dataclass
class Result:
    outcomes: dict[int, str] = field(default_factory=dict)
    failures: dict[int, BaseException] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)
    notifications: list[Any] = field(default_factory=list)


Decide = Callable[[QueuedEvent], "str | BaseException"]


@dataclass
class MarkingApply:
    """Apply stand-in: per event ``decide`` returns an outcome or an exception.

    Successful events get one audit mark (in the caller's transaction). With
    ``use_real`` the real ``apply_events`` runs first on the events ``decide`` accepts.
    """

    decide: Decide = lambda e: "processed"
    use_real: bool = False
    calls: list[list[int]] = field(default_factory=list)
    after: Callable[[Sequence[QueuedEvent]], None] | None = None

    def __call__(
        self,
        conn: Connection,
        events: Sequence[QueuedEvent],
        *,
        refund_source: Any = None,
        actor_prefix: str = "event",
    ) -> Result:
        self.calls.append([e.id for e in events])
        result = Result()
        accepted = []
        for e in events:
            verdict = self.decide(e)
            if isinstance(verdict, BaseException):
                result.failures[e.id] = verdict
            else:
                result.outcomes[e.id] = verdict
                accepted.append(e)
        if self.use_real and accepted:
            from stripe_pipeline.process.apply import apply_events

            real = apply_events(conn, accepted, refund_source=refund_source)
            result.outcomes.update(real.outcomes)
            result.failures.update(real.failures)
            for failed in real.failures:
                result.outcomes.pop(failed, None)
            result.rows_written = dict(real.rows_written)
            result.notifications = list(real.notifications)
            accepted = [e for e in accepted if e.id in real.outcomes]
        record(
            conn,
            [
                AuditEntry(
                    actor=f"{actor_prefix}:{e.stripe_event_id}",
                    action=MARK_ACTION,
                    object_type="stripe_event",
                    object_id=str(e.id),
                    stripe_event_id=e.stripe_event_id,
                )
                for e in accepted
            ],
        )
        if self.after is not None:
            self.after(events)
        return result
