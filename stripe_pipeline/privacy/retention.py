"""Retention: keep raw data only as long as it is needed, in short batches.

Three clocks (``config.PrivacyOptions``):

- raw payloads of ``processed`` and ``ignored`` events older than ``payload_days`` are
  dropped to their envelope: id, type, created, livemode, API version, account, the
  object's id and type, and a ``pruned`` marker. The row stays (its status, error,
  retry count and times are columns), so counts, marts and the audit trail still
  add up. Never touched: events still queued (pending, retry, processing), dead
  letters, and events an unresolved support ticket points at;
- ``webhook_deliveries`` older than ``delivery_days`` are deleted;
- ``payment_support_tickets`` resolved more than ``ticket_days`` ago are deleted
  (rows that pointed at them keep a NULL link).

Cost on big tables: every transaction covers at most ``batch_size`` ids of one table,
found by primary key ranges (no index on ``received_at`` is needed, none is added to
the receiver's hot table), and commits at once, so locks last milliseconds and only
cover old rows the receiver never writes. After each batch the run pauses
``pause_ratio`` times as long as the batch took, leaving the receiver its share of
CPU and WAL bandwidth. Each run starts where the last one
stopped (``retention_runs.events_scanned_to_id``); events held back by a ticket are
looked at again once their ticket is resolved; ``full`` rescans from the first id.

A dry run counts what a run would do and writes nothing (not even its run record).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    delete,
    exists,
    func,
    not_,
    select,
    text,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from stripe_pipeline.config import PrivacyOptions
from stripe_pipeline.db.lists import chunked, in_list
from stripe_pipeline.db.models import (
    FraudRuleHit,
    PaymentRecoveryAttempt,
    PaymentSupportTicket,
    ReconciliationDiscrepancy,
    RetentionRun,
    StripeEvent,
    WebhookDelivery,
)
from stripe_pipeline.db.statuses import QUEUED_STATUSES, EventStatus
from stripe_pipeline.privacy.ranges import id_ranges, last_id_received_before

EVENTS = StripeEvent.__table__
E = EVENTS.c
DELIVERIES = WebhookDelivery.__table__
TICKETS = PaymentSupportTicket.__table__
RUNS = RetentionRun.__table__
PRUNABLE_STATUSES = (EventStatus.PROCESSED, EventStatus.IGNORED)
QUEUE_STATUSES = QUEUED_STATUSES
PRUNED_MARKER = "pruned"
# rows counted per statement in a dry run (reads only: no lock, just bounded work)
COUNT_RANGE_FACTOR = 20

# the envelope a dropped payload keeps, built in the database from the row's columns
_ENVELOPE = {
    "postgresql": text(
        "jsonb_build_object("
        "'id', stripe_event_id, 'object', 'event', 'type', event_type, "
        "'created', stripe_created, 'livemode', livemode, 'api_version', api_version, "
        "'account', account, 'data', jsonb_build_object('object', jsonb_build_object("
        "'id', object_id, 'object', payload #> '{data,object,object}')), "
        "'pruned', jsonb_build_object('at', CAST(:pruned_at AS text), 'reason', 'retention'))"
    ),
    "sqlite": text(
        "json_object("
        "'id', stripe_event_id, 'object', 'event', 'type', event_type, "
        "'created', stripe_created, "
        "'livemode', json(CASE WHEN livemode THEN 'true' ELSE 'false' END), "
        "'api_version', api_version, 'account', account, "
        "'data', json_object('object', json_object("
        "'id', object_id, 'object', json_extract(payload, '$.data.object.object'))), "
        "'pruned', json_object('at', :pruned_at, 'reason', 'retention'))"
    ),
}
_NOT_PRUNED = {
    "postgresql": text("(stripe_events.payload -> 'pruned') IS NULL"),
    "sqlite": text("json_extract(stripe_events.payload, '$.pruned') IS NULL"),
}


@dataclass
class RetentionResult:
    """What a run did (or, dry, would do)."""

    dry_run: bool
    settings: dict[str, Any]
    run_id: int | None = None
    payloads_dropped: int = 0
    # payloads past their age kept because an unresolved ticket points at their event
    payloads_held_by_tickets: int = 0
    deliveries_deleted: int = 0
    tickets_deleted: int = 0
    transactions: int = 0
    events_scanned_from_id: int = 0
    events_scanned_to_id: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def rows_changed(self) -> int:
        return self.payloads_dropped + self.deliveries_deleted + self.tickets_deleted

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_changed": self.rows_changed}


def _settings(options: PrivacyOptions) -> dict[str, Any]:
    return {
        "payload_days": options.payload_days,
        "delivery_days": options.delivery_days,
        "ticket_days": options.ticket_days,
        "batch_size": options.batch_size,
        "pause_ratio": options.pause_ratio,
    }


def run_retention(
    engine: Engine,
    options: PrivacyOptions,
    *,
    dry_run: bool = False,
    full: bool = False,
    triggered_by: str = "",
    now: datetime | None = None,
) -> RetentionResult:
    """One retention run over events, deliveries and tickets, each on its own clock."""
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    result = RetentionResult(dry_run=dry_run, settings=_settings(options))
    with engine.connect() as conn:
        previous = _previous_run(conn)
        if not dry_run:
            result.run_id = conn.execute(
                RUNS.insert()
                .values(dry_run=False, triggered_by=triggered_by or None, settings=result.settings)
                .returning(RUNS.c.id)
            ).scalar_one()
            conn.commit()
        try:
            if options.payload_days is not None:
                cutoff = now - timedelta(days=options.payload_days)
                _drop_payloads(conn, options, cutoff, now, previous, full, result)
            if options.delivery_days is not None:
                cutoff = now - timedelta(days=options.delivery_days)
                _prune_deliveries(conn, options, cutoff, result)
            if options.ticket_days is not None:
                cutoff = now - timedelta(days=options.ticket_days)
                _prune_tickets(conn, options, cutoff, result)
        except Exception as exc:
            conn.rollback()
            result.errors.append(f"{type(exc).__name__}: {exc}")
            _finish(conn, result, started, status="failed")
            raise
        _finish(conn, result, started, status="succeeded")
    return result


def _finish(conn: Connection, result: RetentionResult, started: float, *, status: str) -> None:
    result.seconds = round(time.perf_counter() - started, 3)
    if result.run_id is None:
        return
    counts = {k: v for k, v in result.as_dict().items() if k not in ("settings", "errors")}
    conn.execute(
        update(RUNS)
        .where(RUNS.c.id == result.run_id)
        .values(
            status=status,
            finished_at=datetime.now(UTC),
            counts=counts,
            events_scanned_to_id=result.events_scanned_to_id if status == "succeeded" else None,
            error="; ".join(result.errors) or None,
        )
    )
    conn.commit()


@dataclass(frozen=True)
class _Previous:
    started_at: datetime | None
    scanned_to_id: int


def _previous_run(conn: Connection) -> _Previous:
    """Where the last successful run stopped, and when it started."""
    r = RUNS.c
    row = conn.execute(
        select(r.started_at, r.events_scanned_to_id)
        .where(r.status == "succeeded", r.dry_run.is_(False), r.events_scanned_to_id.is_not(None))
        .order_by(r.id.desc())
        .limit(1)
    ).first()
    conn.commit()
    if row is None:
        return _Previous(None, 0)
    return _Previous(row.started_at, row.events_scanned_to_id)


# ---- event payloads -----------------------------------------------------------------


def _linked_event_ids(rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """Stripe event ids tickets point at: their own link and ``details.stripe_event_ids``."""
    found: set[str] = set()
    for row in rows:
        if row["stripe_event_id"]:
            found.add(row["stripe_event_id"])
        details = row["details"]
        extra = details.get("stripe_event_ids") if isinstance(details, dict) else None
        if isinstance(extra, list):
            found.update(e for e in extra if isinstance(e, str))
    return found


def _ticket_event_rows(conn: Connection, stripe_ids: set[str]) -> list[int]:
    ids: list[int] = []
    for part in chunked(sorted(stripe_ids)):
        ids += conn.execute(select(E.id).where(in_list(conn, E.stripe_event_id, part))).scalars()
    return sorted(ids)


def _held_by_open_tickets(conn: Connection) -> set[int]:
    """Row ids of events an unresolved ticket points at (they keep their payload)."""
    t = TICKETS.c
    rows = conn.execute(
        select(t.stripe_event_id, t.details).where(t.status != "resolved")
    ).mappings()
    held = set(_ticket_event_rows(conn, _linked_event_ids(rows)))
    conn.commit()
    return held


def _released_since(conn: Connection, since: datetime | None) -> list[int]:
    """Row ids of events whose ticket was resolved since ``since`` (held back before)."""
    if since is None:
        return []
    t = TICKETS.c
    rows = conn.execute(
        select(t.stripe_event_id, t.details).where(t.status == "resolved", t.resolved_at >= since)
    ).mappings()
    ids = _ticket_event_rows(conn, _linked_event_ids(rows))
    conn.commit()
    return ids


def _prunable(
    conn: Connection, cutoff: datetime, ids: ColumnElement[bool], *, held_check: bool = True
) -> ColumnElement[bool]:
    """Events of these ids whose payload may be dropped now (``held_check``: unless an
    unresolved ticket, maybe opened during the run, points at them directly)."""
    clauses = [
        ids,
        E.status.in_(PRUNABLE_STATUSES),
        E.received_at < cutoff,
        _NOT_PRUNED[conn.dialect.name],
    ]
    if held_check:
        t = TICKETS.c
        clauses.append(
            not_(exists().where(t.stripe_event_id == E.stripe_event_id, t.status != "resolved"))
        )
    return and_(*clauses)


def _held_in(held: set[int], lo: int, hi: int) -> list[int]:
    return sorted(i for i in held if lo <= i < hi)


def _drop_payloads(
    conn: Connection,
    options: PrivacyOptions,
    cutoff: datetime,
    now: datetime,
    previous: _Previous,
    full: bool,
    result: RetentionResult,
) -> None:
    start = 0 if full else previous.scanned_to_id
    upper = last_id_received_before(conn, cutoff)  # every id <= upper is past the age
    conn.commit()
    held = _held_by_open_tickets(conn)
    result.events_scanned_from_id = start
    envelope = _ENVELOPE[conn.dialect.name]
    pacer = _Pacer(conn, options, result)
    pruned_at = now.isoformat()
    batch = options.batch_size
    step = batch * COUNT_RANGE_FACTOR if result.dry_run else batch
    for lo, hi in id_ranges(max(start, 1), upper + 1, step):
        keep = _held_in(held, lo, hi)
        ids = and_(E.id >= lo, E.id < hi)
        if keep:
            ids = and_(ids, E.id.not_in(keep))
        where = _prunable(conn, cutoff, ids)
        result.payloads_dropped += _apply(pacer, where, envelope, pruned_at)
        if keep:
            held_here = _prunable(conn, cutoff, E.id.in_(keep), held_check=False)
            result.payloads_held_by_tickets += _count(conn, held_here)
    late = [i for i in _released_since(conn, previous.started_at) if i < start and i not in held]
    for part in chunked(late, batch):
        where = _prunable(conn, cutoff, in_list(conn, E.id, list(part)))
        result.payloads_dropped += _apply(pacer, where, envelope, pruned_at)
    result.events_scanned_to_id = _next_start(conn, start, upper)


class _Pacer:
    """Commits a batch, then waits ``pause_ratio`` times as long as the batch took."""

    def __init__(self, conn: Connection, options: PrivacyOptions, result: RetentionResult):
        self.conn, self.ratio, self.result = conn, options.pause_ratio, result
        self.started = time.perf_counter()

    def commit(self) -> None:
        self.conn.commit()
        self.result.transactions += 1
        if self.ratio > 0:
            time.sleep((time.perf_counter() - self.started) * self.ratio)
        self.started = time.perf_counter()


def _apply(pacer: _Pacer, where: ColumnElement[bool], envelope, pruned_at: str) -> int:
    """Drop the payloads matching ``where`` in one short transaction (dry: count them)."""
    if pacer.result.dry_run:
        return _count(pacer.conn, where)
    done = pacer.conn.execute(
        update(EVENTS).where(where).values(payload=envelope),
        {"pruned_at": pruned_at},
    )
    pacer.commit()
    return done.rowcount or 0


def _count(conn: Connection, where: ColumnElement[bool]) -> int:
    count = conn.execute(select(func.count()).select_from(EVENTS).where(where)).scalar_one()
    conn.commit()
    return count


def _next_start(conn: Connection, start: int, upper: int) -> int:
    """Where the next run starts: past ``upper``, unless an event in the range is still
    queued (it may become prunable once processed)."""
    queued = conn.execute(
        select(func.min(E.id)).where(E.status.in_(QUEUE_STATUSES), E.id >= start, E.id <= upper)
    ).scalar()
    conn.commit()
    return min(upper + 1, queued) if queued is not None else max(start, upper + 1)


# ---- deliveries and tickets ----------------------------------------------------------


def _prune_deliveries(
    conn: Connection, options: PrivacyOptions, cutoff: datetime, result: RetentionResult
) -> None:
    d = DELIVERIES.c
    if result.dry_run:
        result.deliveries_deleted = conn.execute(
            select(func.count()).select_from(DELIVERIES).where(d.received_at < cutoff)
        ).scalar_one()
        conn.commit()
        return
    # the last delivery past the age, through ix_webhook_deliveries_received_at (after
    # the first run, about one day's rows)
    upper = conn.execute(select(func.max(d.id)).where(d.received_at < cutoff)).scalar()
    lowest = conn.execute(select(func.min(d.id))).scalar()
    conn.commit()
    if upper is None or lowest is None:
        return
    pacer = _Pacer(conn, options, result)
    for lo, hi in id_ranges(lowest, upper + 1, options.batch_size):
        done = conn.execute(delete(DELIVERIES).where(d.id >= lo, d.id < hi, d.received_at < cutoff))
        pacer.commit()
        result.deliveries_deleted += done.rowcount or 0


# rows that may point at a ticket: their link is cleared when the ticket goes
_TICKET_LINKS = (
    (PaymentRecoveryAttempt.__table__, "support_ticket_id"),
    (FraudRuleHit.__table__, "support_ticket_id"),
    (ReconciliationDiscrepancy.__table__, "ticket_id"),
)


def _prune_tickets(
    conn: Connection, options: PrivacyOptions, cutoff: datetime, result: RetentionResult
) -> None:
    t = TICKETS.c
    ids = list(
        conn.execute(
            select(t.id).where(t.status == "resolved", t.resolved_at < cutoff).order_by(t.id)
        ).scalars()
    )
    conn.commit()
    if result.dry_run:
        result.tickets_deleted = len(ids)
        return
    pacer = _Pacer(conn, options, result)
    for part in chunked(ids, options.batch_size):
        chosen = in_list(conn, t.id, list(part))
        for table, column in _TICKET_LINKS:
            conn.execute(
                update(table)
                .where(table.c[column].in_(select(t.id).where(chosen)))
                .values({column: None})
            )
        # resolved and old at the moment of deletion (a ticket reopened meanwhile stays)
        done = conn.execute(
            delete(TICKETS).where(chosen, t.status == "resolved", t.resolved_at < cutoff)
        )
        pacer.commit()
        result.tickets_deleted += done.rowcount or 0
