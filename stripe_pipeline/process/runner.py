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
  object; repeats raise ``occurrences``. Critical tickets are sent through the
  notifier after the commit.

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
from dataclasses import dataclass, field, replace
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
    fingerprint,
    is_connection_failure,
    normalized_message,
)
from stripe_pipeline.process.events import QueuedEvent
from stripe_pipeline.process.processor import Processor
from stripe_pipeline.support.notify import Notification, Notifier, send_notifications
from stripe_pipeline.support.tickets import TicketRequest, TicketResult, open_ticket
from stripe_pipeline.support.workflow import resolve_requeued_tickets

log = logging.getLogger(__name__)

ISSUE_PERMANENT = IssueType.EVENT_PERMANENT_ERROR
ISSUE_MAX_RETRIES = IssueType.EVENT_MAX_RETRIES_EXCEEDED

# events that move money or carry a deadline: a dead letter here is critical and notifies
CRITICAL_EVENT_PREFIXES = (
    "payment_intent.",
    "charge.",
    "invoice.paid",
    "invoice.payment_",
    "refund.",
)


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
            issue = ISSUE_PERMANENT
        elif policy.exhausted(attempt) or isinstance(exc, _LeaseExpired):
            issue = ISSUE_MAX_RETRIES
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
        request = _merged([r for _, r in members])
        result, error = _open_isolated(conn, request, actor)
        for esc, _ in members:
            linked[esc.event.id] = (result.ticket_id if result else None, error)
        if result is not None and result.created:
            report.tickets_opened += 1
            report.ticket_ids.append(result.ticket_id)
            if request.priority == "critical":
                notifications.append(_notification(result.ticket_id, request, members[0][0]))
    return linked, notifications


_PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


def _merged(requests: list[TicketRequest]) -> TicketRequest:
    """The requests of one cause in one batch as one: their events, count and top priority."""
    if len(requests) == 1:
        return requests[0]
    return replace(
        requests[0],
        priority=max((r.priority for r in requests), key=_PRIORITY_RANK.__getitem__),
        event_ids=tuple(i for r in requests for i in r.event_ids),
        occurrences=sum(r.occurrences for r in requests),
    )


def _open_isolated(
    conn: Connection, request: TicketRequest, actor: str
) -> tuple[TicketResult | None, str | None]:
    """Open the ticket in a savepoint; if the database refuses it, a bare one (ids and
    class names only); if that fails too, none. A lost connection is raised."""
    errors: list[str] = []
    for attempt in (request, _bare(request)):
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


def _ascii(value: str) -> str:
    return value.encode("ascii", "backslashreplace").decode("ascii")


def _bare(request: TicketRequest) -> TicketRequest:
    """The ticket without anything taken from the payload but escaped ids."""
    return TicketRequest(
        issue_type=request.issue_type,
        dedupe_key=_ascii(request.dedupe_key),
        title=f"{request.issue_type}: events could not be described (see their error_context)",
        priority=request.priority,
        stripe_event_id=_ascii(request.stripe_event_id) if request.stripe_event_id else None,
        event_ids=tuple(_ascii(i) for i in request.event_ids),
        occurrences=request.occurrences,
        details={"bare": True},
    )


def ticket_priority(event_type: str) -> str:
    """``critical`` for events that move money or carry a deadline, else ``high``."""
    return "critical" if event_type.startswith(CRITICAL_EVENT_PREFIXES) else "high"


# what a dead letter's ticket is about, most specific first: (link, name in the key)
_SUBJECTS = (
    ("payment_intent_id", "payment"),
    ("subscription_id", "subscription"),
    ("customer_id", "customer"),
    ("object_id", "object"),
)
# longest id a ticket groups by and stores (the ticket columns are VARCHAR(255))
MAX_ID_LENGTH = 255


def usable_id(value: Any) -> bool:
    """A Stripe id a ticket can be keyed and searched by: short, printable text."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable()


def ticket_for(event: QueuedEvent, issue_type: str, context: Mapping[str, Any]) -> TicketRequest:
    """The support ticket of one dead-lettered event, keyed by its cause.

    One open ticket per issue and object (the payment, else the subscription, the
    customer, the event's object); an event naming no usable id is keyed by issue
    and root-cause fingerprint (exception class and message without ids and numbers).
    Ids that are not usable (over-long, unprintable) are left out of the columns and
    shown cut short in ``details.unusable_ids``.
    """
    links = ticket_links(event.payload)
    usable = {k: v for k, v in links.items() if usable_id(v)}
    exception = str(context.get("exception") or "unknown")
    message = str(context.get("message") or "")
    short = exception.rpartition(".")[2]
    what = "failed permanently" if issue_type == ISSUE_PERMANENT else "exhausted their retries"
    details: dict[str, Any] = {
        "event_row_id": event.id,
        "event_type": event.event_type,
        "object_id": usable.get("object_id"),
        "attempt": context.get("attempt"),
        "error_kind": context.get("kind"),
        "exception": exception,
        "message": message,
    }
    unusable = {k: _preview(v) for k, v in links.items() if k not in usable}
    if unusable:
        details["unusable_ids"] = unusable
    subject = next(((name, usable[k]) for k, name in _SUBJECTS if k in usable), None)
    if subject is not None:
        name, object_id = subject
        key = f"{issue_type}:{name}:{object_id}"
        shown = _object_kind(event.payload) if name == "object" else name
        title = f"Events of {shown} {object_id} {what} ({short})"
        details["grouped_by"] = name
    else:
        cause = fingerprint(exception, message)
        key = f"{issue_type}:cause:{cause}"
        title = f"Events {what}: {short}: {normalized_message(message, 200)}"
        details["grouped_by"] = "cause"
        details["fingerprint"] = cause
    return TicketRequest(
        issue_type=issue_type,
        dedupe_key=key,
        title=title,
        priority=ticket_priority(event.event_type),
        payment_intent_id=usable.get("payment_intent_id"),
        subscription_id=usable.get("subscription_id"),
        customer_id=usable.get("customer_id"),
        stripe_event_id=event.stripe_event_id,
        details=details,
        event_ids=(event.stripe_event_id,),
    )


def _object_kind(payload: Any) -> str:
    """``data.object.object`` (dispute, invoice, ...) when it is a plain word."""
    try:
        kind = payload["data"]["object"]["object"]
    except (KeyError, TypeError):
        return "object"
    return kind if isinstance(kind, str) and kind.isidentifier() and len(kind) <= 64 else "object"


def _preview(value: str, keep: int = 40) -> str:
    """An unusable id cut short for a person to recognise it."""
    shown = value[:keep].encode("ascii", "backslashreplace").decode("ascii")
    return f"{shown}… ({len(value)} characters)" if len(value) > keep else shown


def _notification(ticket_id: int, request: TicketRequest, esc: _Escalation) -> Notification:
    # ids and classes only: no payload, no message text (it may quote payload values)
    details = {
        "ticket_id": ticket_id,
        "issue_type": request.issue_type,
        "event_type": esc.event.event_type,
        "stripe_event_id": esc.event.stripe_event_id,
        "payment_intent_id": request.payment_intent_id,
        "subscription_id": request.subscription_id,
        "exception": esc.context.get("exception"),
        "attempt": esc.context.get("attempt"),
    }
    body = (
        f"Support ticket #{ticket_id} ({request.issue_type}): {request.title}. "
        f"Re-queue with `stripe-pipeline tickets retry {ticket_id}` once the cause is fixed."
    )
    return Notification(request.title, body, request.priority, details)


def _id_of(value: Any) -> str | None:
    """A Stripe reference given as an id or as an expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def ticket_links(payload: Any) -> dict[str, str]:
    """Payment, subscription and customer ids derivable from an event payload.

    Tolerant by design: the payload may be the very thing that is broken.
    """
    links: dict[str, str] = {}
    try:
        obj = payload.get("data", {}).get("object", {}) if isinstance(payload, Mapping) else {}
        if not isinstance(obj, Mapping):
            return links
        kind, oid = obj.get("object"), _id_of(obj)
        if oid:
            links["object_id"] = oid
        if kind == "payment_intent" and oid:
            links["payment_intent_id"] = oid
        elif kind == "subscription" and oid:
            links["subscription_id"] = oid
        elif kind == "customer" and oid:
            links["customer_id"] = oid
        pi = _id_of(obj.get("payment_intent"))
        if pi:
            links.setdefault("payment_intent_id", pi)
        if kind == "charge" and oid:
            links.setdefault("payment_intent_id", oid)  # legacy charge without a PI
        if kind in ("dispute", "refund"):
            charge = _id_of(obj.get("charge"))
            if charge:
                links.setdefault("payment_intent_id", charge)
        sub = _id_of(obj.get("subscription"))
        if not sub:
            parent = obj.get("parent")
            if isinstance(parent, Mapping):
                details = parent.get("subscription_details")
                if isinstance(details, Mapping):
                    sub = _id_of(details.get("subscription"))
        if sub:
            links.setdefault("subscription_id", sub)
        customer = _id_of(obj.get("customer"))
        if customer:
            links.setdefault("customer_id", customer)
    except Exception:  # never let a broken payload stop the escalation itself
        log.debug("could not derive ticket links", exc_info=True)
    return links
