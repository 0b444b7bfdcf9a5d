"""Process the event queue: claim a batch, apply it, record outcomes, escalate failures.

This is the whole processing step; the Dagster asset only calls ``process_pending``
and publishes its ``ProcessingReport`` as metadata. Per batch:

* claim, apply, outcomes and tickets in one transaction (``queue.open_batch``);
* processed / ignored events get ``processed_at``;
* a temporary failure schedules a retry by ``RetryPolicy`` (``retry_count`` + 1,
  ``next_retry_at``, ``error_context``); past ``max_retries`` it is dead-lettered;
* a permanent failure is dead-lettered at once;
* every dead-lettered event is escalated to a support ticket grouped by cause: one
  open ticket per issue and object (payment, subscription, customer, else the event's
  object), or per issue and root-cause fingerprint when the event names no usable
  object; repeats raise ``occurrences`` (``support.dead_letters`` says what a ticket
  is about);
* the processor's post-apply hooks (dunning) return notifications; with those of new
  critical tickets they are sent through the processor's notifier after the batch
  commits, in one place (``_drain``), so a rolled-back batch announces nothing.

``apply`` isolates poison events with savepoints; if the batch fails as a whole, its
work is rolled back to a savepoint and the events are applied one at a time, each in
its own savepoint, so the culprit fails alone and the run goes on.

A failure while recording a failure never takes the batch down: each ticket is
opened in its own savepoint (falling back to a bare ticket, then to none, with the
reason in the event's ``error_context``), and an event whose failure cannot be
recorded as it is, is dead-lettered with a minimal context. Only a failure of the
database connection itself rolls the batch back.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from sqlalchemy import Connection, Engine

from stripe_pipeline.config import MAX_PROCESSING_WORKERS
from stripe_pipeline.db.statuses import EventStatus, IssueType
from stripe_pipeline.process import queue
from stripe_pipeline.process.backoff import RetryPolicy
from stripe_pipeline.process.errors import (
    PermanentError,
    classify,
    error_context,
    is_connection_failure,
)
from stripe_pipeline.process.events import QueuedEvent
from stripe_pipeline.process.processor import Processor
from stripe_pipeline.support.dead_letters import (
    bare_request,
    dead_letter_notification,
    merged_request,
    ticket_for,
)
from stripe_pipeline.support.notify import Notification, Notifier, send_notifications
from stripe_pipeline.support.tickets import TicketRequest, TicketResult, open_ticket
from stripe_pipeline.support.workflow import resolve_requeued_tickets

log = logging.getLogger(__name__)


class ApplyOutcome(Protocol):
    """What a batch apply returns (``stripe_pipeline.process.apply.ApplyResult``)."""

    outcomes: dict[int, str]
    failures: dict[int, BaseException]
    rows_written: dict[str, int]
    notes: dict[int, str]
    notifications: list[Notification]


ApplyFn = Callable[[Connection, Sequence[QueuedEvent]], ApplyOutcome]


@dataclass
class ProcessingReport:
    """What one ``process_pending`` call did; ``as_metadata()`` feeds Dagster."""

    worker_id: str
    batches: int = 0
    claimed: int = 0
    processed: int = 0
    ignored: int = 0
    retries_scheduled: int = 0
    dead_lettered: int = 0
    tickets_opened: int = 0
    tickets_resolved: int = 0
    notifications_sent: int = 0
    lost_leases: int = 0
    apply_crashes: int = 0
    by_type: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    rows_written: Counter[str] = field(default_factory=Counter)
    ticket_ids: list[int] = field(default_factory=list)
    oldest_pending_age_seconds: float | None = None
    remaining_due: int = 0
    duration_seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.claimed / self.duration_seconds if self.duration_seconds else 0.0

    def count(self, event_type: str, outcome: str) -> None:
        self.by_type[event_type][outcome] += 1

    _SUMMED = (
        "batches",
        "claimed",
        "processed",
        "ignored",
        "retries_scheduled",
        "dead_lettered",
        "tickets_opened",
        "tickets_resolved",
        "notifications_sent",
        "lost_leases",
        "apply_crashes",
    )

    def merge(self, part: ProcessingReport) -> None:
        """Fold another pass or worker of the same run into this report.

        Counts add up; queue gauges (oldest pending age, remaining due) take the
        later reading. Durations are the caller's business: passes add, workers overlap.
        """
        for name in self._SUMMED:
            setattr(self, name, getattr(self, name) + getattr(part, name))
        for event_type, outcomes in part.by_type.items():
            self.by_type[event_type].update(outcomes)
        self.rows_written.update(part.rows_written)
        self.ticket_ids.extend(part.ticket_ids)
        self.oldest_pending_age_seconds = part.oldest_pending_age_seconds
        self.remaining_due = part.remaining_due

    def events_by_type_and_outcome(self) -> dict[str, dict[str, int]]:
        return {t: dict(sorted(c.items())) for t, c in sorted(self.by_type.items())}

    def as_metadata(self) -> dict[str, Any]:
        """Plain JSON-able values (Dagster turns them into metadata entries)."""
        return {
            "worker_id": self.worker_id,
            "batches": self.batches,
            "events_claimed": self.claimed,
            "processed": self.processed,
            "ignored": self.ignored,
            "retries_scheduled": self.retries_scheduled,
            "dead_lettered": self.dead_lettered,
            "tickets_opened": self.tickets_opened,
            "tickets_resolved": self.tickets_resolved,
            "lost_leases": self.lost_leases,
            "apply_crashes": self.apply_crashes,
            "events_by_type_and_outcome": self.events_by_type_and_outcome(),
            "rows_written": dict(sorted(self.rows_written.items())),
            "oldest_pending_age_seconds": self.oldest_pending_age_seconds,
            "remaining_due": self.remaining_due,
            "duration_seconds": round(self.duration_seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
        }


def default_worker_id() -> str:
    """host:pid:random, unique per call so two runs in one process never share claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class _Escalation:
    event: QueuedEvent
    issue_type: str
    context: dict[str, Any]


def process_pending(
    engine: Engine,
    *,
    policy: RetryPolicy | None = None,
    batch_size: int = 2000,
    max_batches: int | None = None,
    worker_id: str | None = None,
    lease_seconds: float = 300,
    processor: Processor | None = None,
    apply: ApplyFn | None = None,
    workers: int = 1,
) -> ProcessingReport:
    """Process due events batch by batch until none are due (or ``max_batches``).

    Safe to run concurrently (disjoint claims) and to kill at any point: uncommitted
    work rolls back, and the batch in flight is due again at once on PostgreSQL (its
    session ended) or after ``lease_seconds`` on SQLite. ``lease_seconds`` must exceed
    the time one batch takes to apply.

    ``workers`` > 1 runs that many claim/apply loops on threads of this process: while
    one waits on PostgreSQL another parses, so a run uses both the database and the
    interpreter. SQLite has one writer at a time, so there it stays one loop. The loops
    of a run share a ``ClaimCursor`` (PostgreSQL): each claim starts past the newest
    event already claimed, so no loop steps over the rows another one holds.

    ``processor`` is what the entry point built (handlers, post-apply hooks, Stripe
    peer, notifier); without one, the catalog alone with a log notifier. ``apply``
    stands in for ``processor.apply`` (tests inject failures with it).
    """
    if not 1 <= workers <= MAX_PROCESSING_WORKERS:
        raise ValueError(f"workers must be between 1 and {MAX_PROCESSING_WORKERS}")
    is_pg = engine.dialect.name == "postgresql"
    loops = workers if is_pg else 1
    base = worker_id or default_worker_id()
    processor = processor or Processor()
    loop = partial(
        _drain,
        engine,
        policy=policy or RetryPolicy(),
        batch_size=batch_size,
        max_batches=None if max_batches is None else max(1, -(-max_batches // loops)),
        lease_seconds=lease_seconds,
        notifier=processor.notifier,
        apply=apply or processor.apply,
        cursor=queue.ClaimCursor() if is_pg else None,
    )
    started = time.perf_counter()
    queue.sweep_dead_claims(engine)
    if loops == 1:
        report = loop(worker_id=base)
    else:
        with ThreadPoolExecutor(max_workers=loops, thread_name_prefix="process") as pool:
            futures = [pool.submit(loop, worker_id=f"{base}/{n}") for n in range(loops)]
            parts = [f.result() for f in futures]
        report = ProcessingReport(worker_id=base)
        for part in parts:
            report.merge(part)
    report.duration_seconds = time.perf_counter() - started
    # read after every loop: one that found the queue empty may have finished before
    # another one claimed
    stats = queue.queue_stats(engine)
    report.oldest_pending_age_seconds = stats.oldest_due_age_seconds
    report.remaining_due = stats.due
    log.info("processed events: %s", report.as_metadata())
    return report


def _drain(
    engine: Engine,
    *,
    worker_id: str,
    policy: RetryPolicy,
    batch_size: int,
    max_batches: int | None,
    lease_seconds: float,
    notifier: Notifier,
    apply: ApplyFn,
    cursor: queue.ClaimCursor | None,
) -> ProcessingReport:
    """One claim/apply loop: batches until none are due past the cursor, then from the
    oldest event (late arrivals, retries) until none are due at all."""
    report = ProcessingReport(worker_id=worker_id)
    from_start = cursor is None
    while max_batches is None or report.batches < max_batches:
        after = None if from_start else cursor.position
        with queue.open_batch(
            engine,
            worker_id=worker_id,
            batch_size=batch_size,
            lease_seconds=lease_seconds,
            after=after,
        ) as batch:
            if cursor is not None:
                cursor.advance(batch.events)
            if batch.claimed:
                part = ProcessingReport(worker_id=worker_id, batches=1)
                part.claimed, part.lost_leases = batch.claimed, batch.lost
                notifications = _process_batch(batch.conn, batch.events, part, policy, apply)
        if batch.claimed:
            report.merge(part)  # committed: now, and only now, tell people
            report.notifications_sent += send_notifications(notifier, notifications)
        if batch.claimed < batch_size:
            if after is None:
                break
            from_start = True  # drained past the cursor: one pass from the oldest event
    return report


def _process_batch(
    conn: Connection,
    events: list[QueuedEvent],
    report: ProcessingReport,
    policy: RetryPolicy,
    apply: ApplyFn,
) -> list[Notification]:
    """Apply and record a held batch inside its transaction; counts go to ``report``."""
    attempt = _fresh(report)
    try:
        with conn.begin_nested():
            notifications = _apply_and_record(conn, events, attempt, policy, apply)
        report.merge(attempt)
        return notifications
    except Exception:
        # apply (or a write) failed as a whole and its work was rolled back: go one event
        # at a time, so the culprit fails alone and the rest of the batch goes through
        log.exception("batch of %d events failed as a whole; retrying one by one", len(events))
        report.apply_crashes += 1
    notifications = []
    for event in events:
        attempt = _fresh(report)
        try:
            with conn.begin_nested():
                notifications += _apply_and_record(conn, [event], attempt, policy, apply)
        except Exception as exc:
            if is_connection_failure(exc):
                raise  # the database is gone: the whole batch rolls back and is retried
            failure = exc if classify(exc) == "permanent" else _as_temporary(exc)
            attempt, sent = _record_failure(conn, event, failure, report, policy)
            notifications += sent
        report.merge(attempt)
    return notifications


def _record_failure(
    conn: Connection,
    event: QueuedEvent,
    failure: BaseException,
    report: ProcessingReport,
    policy: RetryPolicy,
) -> tuple[ProcessingReport, list[Notification]]:
    """Record one event's failure; if even that is refused, dead-letter it with the bare
    minimum (class names only) instead of rolling back the batch."""
    attempt = _fresh(report)
    try:
        with conn.begin_nested():
            return attempt, _record(
                conn, {event.id: event}, {}, {event.id: failure}, attempt, policy
            )
    except Exception as exc:
        if is_connection_failure(exc):
            raise
        log.error(
            "could not record the failure of event row %d (%s); dead-lettering it with a "
            "minimal context",
            event.id,
            type(exc).__name__,
        )
        bare = _Unrecordable(
            f"{type(failure).__name__}: the failure could not be recorded as it is "
            f"({type(exc).__name__}); its details were dropped"
        )
    attempt = _fresh(report)
    with conn.begin_nested():
        return attempt, _record(conn, {event.id: event}, {}, {event.id: bare}, attempt, policy)


def _fresh(report: ProcessingReport) -> ProcessingReport:
    """Counts of one attempt, merged only once its savepoint is released."""
    return ProcessingReport(worker_id=report.worker_id)


def _apply_and_record(
    conn: Connection,
    events: list[QueuedEvent],
    report: ProcessingReport,
    policy: RetryPolicy,
    apply: ApplyFn,
) -> list[Notification]:
    """Apply held events and record their outcomes (inside the caller's savepoint);
    returns the hooks' and the new tickets' notifications, to send after commit."""
    by_id = {e.id: e for e in events}
    # a re-claimed event that keeps killing its worker has used up its retries
    worn_out = [e for e in events if policy.exhausted(e.retry_count)]
    events = [e for e in events if not policy.exhausted(e.retry_count)]
    outcomes: dict[int, str] = {}
    failures: dict[int, BaseException] = {}
    notifications: list[Notification] = []
    if events:
        result = apply(conn, events)
        notifications.extend(result.notifications)
        failures = {i: x for i, x in result.failures.items() if i in by_id}
        # an event is finished or failed, never both (a failure wins)
        outcomes = {i: o for i, o in result.outcomes.items() if i in by_id and i not in failures}
        report.rows_written.update(result.rows_written or {})
    for e in events:
        if e.id not in outcomes and e.id not in failures:
            failures[e.id] = RuntimeError("apply returned no outcome for this event")
    for e in worn_out:
        failures[e.id] = _LeaseExpired(
            f"its batch died {e.retry_count} times: a run crashed or timed out "
            "while processing this event"
        )
    return notifications + _record(conn, by_id, outcomes, failures, report, policy)


def _as_temporary(exc: BaseException) -> BaseException:
    return exc if classify(exc) == "temporary" else _BatchFailed(f"{type(exc).__name__}: {exc}")


class _LeaseExpired(Exception):
    """The event's batches died too often; treated as exhausted temporary failures."""


class _BatchFailed(Exception):
    """An apply failure of unknown kind; retried with backoff."""


class _Unrecordable(PermanentError):
    """A failure whose own record the database refused; dead-lettered with class names."""


def _record(
    conn: Connection,
    by_id: Mapping[int, QueuedEvent],
    outcomes: dict[int, str],
    failures: dict[int, BaseException],
    report: ProcessingReport,
    policy: RetryPolicy,
) -> list[Notification]:
    """Write outcomes and failure states, open tickets; returns notifications to send."""
    queue.mark_finished(conn, outcomes, worker_id=report.worker_id)
    # AutoRetry tickets close when their re-queued events go through
    report.tickets_resolved += len(resolve_requeued_tickets(conn, list(outcomes)))
    for event_id, outcome in outcomes.items():
        report.count(by_id[event_id].event_type, outcome)
        if outcome == EventStatus.PROCESSED:
            report.processed += 1
        else:
            report.ignored += 1

    updates: list[queue.FailureUpdate] = []
    escalations: list[_Escalation] = []
    for event_id, exc in failures.items():
        event = by_id[event_id]
        attempt = event.retry_count + 1
        context = error_context(exc, attempt)
        kind = "temporary" if isinstance(exc, _LeaseExpired) else context["kind"]
        context["kind"] = kind
        if kind == "permanent":
            issue = IssueType.EVENT_PERMANENT_ERROR
        elif policy.exhausted(attempt) or isinstance(exc, _LeaseExpired):
            issue = IssueType.EVENT_MAX_RETRIES_EXCEEDED
        else:
            issue = None
        if issue is None:
            next_at = policy.next_retry_at(attempt)
            context["next_retry_at"] = next_at.isoformat()
            updates.append(
                queue.FailureUpdate(event_id, EventStatus.RETRY, attempt, context, next_at)
            )
            report.retries_scheduled += 1
            report.count(event.event_type, "retry")
        else:
            escalations.append(_Escalation(event, issue, context))
            report.dead_lettered += 1
            report.count(event.event_type, "dead_letter")

    notifications: list[Notification] = []
    if escalations:
        linked, notifications = _escalate(conn, escalations, report)
        for esc in escalations:
            ticket_id, ticket_error = linked[esc.event.id]
            esc.context["support_ticket_id"] = ticket_id
            if ticket_error is not None:
                esc.context["ticket_error"] = ticket_error
            updates.append(
                queue.FailureUpdate(
                    esc.event.id,
                    EventStatus.DEAD_LETTER,
                    esc.context["attempt"],
                    esc.context,
                    support_ticket_id=ticket_id,
                )
            )
    queue.mark_failed(conn, updates, worker_id=report.worker_id)
    return notifications


def _escalate(
    conn: Connection, escalations: list[_Escalation], report: ProcessingReport
) -> tuple[dict[int, tuple[int | None, str | None]], list[Notification]]:
    """One ticket per cause for a batch's dead letters, each opened in its own savepoint.

    Returns per event row its ticket id (None if none could be opened) and what went
    wrong opening it, and the notifications of new critical tickets.
    """
    loaded = {e.id: e for e in queue.with_payloads(conn, [esc.event for esc in escalations])}
    groups: dict[str, list[tuple[_Escalation, TicketRequest]]] = defaultdict(list)
    for esc in escalations:
        request = ticket_for(loaded[esc.event.id], esc.issue_type, esc.context)
        groups[request.dedupe_key].append((esc, request))
    actor = f"processor:{report.worker_id}"
    linked: dict[int, tuple[int | None, str | None]] = {}
    notifications: list[Notification] = []
    for key in sorted(groups):  # one lock order in every batch: no deadlock between runs
        members = groups[key]
        request = merged_request([r for _, r in members])
        result, error = _open_isolated(conn, request, actor)
        for esc, _ in members:
            linked[esc.event.id] = (result.ticket_id if result else None, error)
        if result is not None and result.created:
            report.tickets_opened += 1
            report.ticket_ids.append(result.ticket_id)
            if request.priority == "critical":
                first = members[0][0]
                notifications.append(
                    dead_letter_notification(result.ticket_id, request, first.event, first.context)
                )
    return linked, notifications


def _open_isolated(
    conn: Connection, request: TicketRequest, actor: str
) -> tuple[TicketResult | None, str | None]:
    """Open the ticket in a savepoint; if the database refuses it, a bare one (ids and
    class names only); if that fails too, none. A lost connection is raised."""
    errors: list[str] = []
    for attempt in (request, bare_request(request)):
        try:
            with conn.begin_nested():
                return open_ticket(conn, attempt, actor=actor), "; ".join(errors) or None
        except Exception as exc:
            if is_connection_failure(exc):
                raise
            errors.append(f"{type(exc).__name__} while opening the ticket")
            log.error(
                "could not open support ticket (%s) for %d event(s): %s",
                request.issue_type,
                request.occurrences,
                type(exc).__name__,
            )
    return None, "; ".join(errors)
