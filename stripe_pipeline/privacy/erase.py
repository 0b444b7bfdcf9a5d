"""Erase one customer's personal data from every table, and keep it erased.

What erasure keeps: every row, every Stripe id, amount, currency, status and date, so
marts, reconciliation and the audit trail still add up; the erasure record itself
(the customer id, which is needed to keep them erased). What it blanks, per table:

- ``stripe_customers``, ``stripe_payments``, ``stripe_payment_methods``,
  ``stripe_disputes``: the personal columns of ``personal.PERSONAL_COLUMNS``;
- their raw events in ``stripe_events``: the personal paths of ``data.object`` and
  ``data.previous_attributes`` (``personal.PAYLOAD_PATHS``) and, in the whole payload
  and its ``error_context``, any quote of the person's email, name, phone or street;
- every other row of theirs (invoices, subscriptions, refunds, recovery attempts,
  payment attempts, fraud hits, support tickets, reconciliation discrepancies, the
  deliveries of their events): quotes of those values in any text or JSON column;
- the audit log is not touched: it is append-only and holds no personal values
  (``redact.redact_audit_entry``).

The ``erasures`` row is committed first, so the write paths (``guard``) blank this
customer's data from that moment; the work then runs in short transactions and can be
repeated: a second run finds nothing new unless new data arrived.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Select,
    String,
    Table,
    Text,
    and_,
    cast,
    func,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from stripe_pipeline.audit import AuditEntry, record
from stripe_pipeline.catalog import CATALOG
from stripe_pipeline.config import PrivacyOptions
from stripe_pipeline.db.lists import chunked, in_list
from stripe_pipeline.db.models import (
    Erasure,
    FraudRuleHit,
    PaymentAttempt,
    PaymentRecoveryAttempt,
    PaymentSupportTicket,
    ReconciliationDiscrepancy,
    StripeCustomer,
    StripeEvent,
    StripeInvoice,
    StripePayment,
    StripeSubscription,
    WebhookDelivery,
)
from stripe_pipeline.privacy.guard import BY_CUSTOMER, BY_PAYMENT, TABLES, owned_object_ids
from stripe_pipeline.privacy.personal import (
    PERSONAL_COLUMNS,
    QUOTED_KEYS,
    personal_audit_fields,
)
from stripe_pipeline.privacy.ranges import id_ranges, last_id_received_before
from stripe_pipeline.privacy.redact import (
    Quoted,
    blank_personal,
    quoted_in_payload,
    redact_payload,
)

ERASURES = Erasure.__table__
EVENTS = StripeEvent.__table__
PAYMENTS = StripePayment.__table__
CUSTOMER_ID = re.compile(r"^cus_[A-Za-z0-9]{1,250}$")
REASONS = ("request", "customer_deleted")
ERASE_ACTION = "customer_erased"
# events per transaction when their payloads are rewritten
EVENT_BATCH = 500
# stripe_events ids scanned per statement when looking for a customer's events
SCAN_RANGE = 50_000
# an event received this long ago is committed: ids below it will not appear later
SETTLE = timedelta(seconds=60)
# the order processing writes the domain tables in (same lock order: no deadlocks)
# the domain tables a person's rows sit in, in processing's table order (its lock order)
DOMAIN_ORDER = tuple(
    r.table_name
    for r in CATALOG.resources
    if r.table_name in BY_CUSTOMER or r.table_name in BY_PAYMENT
)


class ErasureError(ValueError):
    """The request cannot be carried out as given (the message says why)."""


@dataclass
class ErasureResult:
    """What one erasure run did (or, dry, would do): rows changed per table."""

    customer_id: str
    reason: str
    dry_run: bool
    first_erasure: bool
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def rows_changed(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "payload_paths_blanked")


def check_customer_id(customer_id: str) -> str:
    """A Stripe customer id (``cus_...``), or :class:`ErasureError`."""
    value = (customer_id or "").strip()
    if not CUSTOMER_ID.match(value):
        raise ErasureError(f"{customer_id!r} is not a Stripe customer id (cus_...)")
    return value


# ---- finding a customer's data ------------------------------------------------------


def _customer_field() -> ColumnElement[str]:
    """``data.object.customer`` of an event payload, as text, on either backend."""
    return EVENTS.c.payload[("data", "object", "customer")].as_string()


def customer_event_ids(
    conn: Connection, customers: Select | list[str], *, after_id: int = 0
) -> list[int]:
    """``stripe_events`` ids about these customers: events of an object they own (by
    the indexed ``object_id``) or whose object names them as ``customer`` (a scan of
    the events after ``after_id``, in id ranges)."""
    found: set[int] = set()
    owned = owned_object_ids(customers).subquery()
    found.update(
        conn.execute(
            select(EVENTS.c.id).where(
                EVENTS.c.object_id.in_(select(owned.c.object_id)),
                EVENTS.c.id > after_id,
            )
        ).scalars()
    )
    found.update(  # the customer objects themselves, stored or not
        conn.execute(
            select(EVENTS.c.id).where(EVENTS.c.object_id.in_(customers), EVENTS.c.id > after_id)
        ).scalars()
    )
    customer = _customer_field()
    top = conn.execute(select(func.max(EVENTS.c.id))).scalar() or 0
    for lo, hi in id_ranges(after_id + 1, top + 1, SCAN_RANGE):
        found.update(
            conn.execute(
                select(EVENTS.c.id).where(
                    EVENTS.c.id >= lo, EVENTS.c.id < hi, customer.in_(customers)
                )
            ).scalars()
        )
    return sorted(found)


def settled_event_id(conn: Connection, now: datetime) -> int:
    """Highest event id received before ``now - SETTLE``: every lower id is committed,
    so a sweep that covered it never needs to look below it again."""
    return last_id_received_before(conn, now - SETTLE)


# ---- blanking rows ------------------------------------------------------------------


def _begin_write(conn: Connection) -> None:
    """On SQLite, take the write lock before reading what a transaction will rewrite.

    A deferred SQLite transaction that reads and then writes fails at once (not after
    the busy timeout) if another connection committed in between; a first statement
    that writes waits for the lock like any writer. PostgreSQL needs nothing.
    """
    if conn.dialect.name == "sqlite":
        conn.execute(update(ERASURES).where(ERASURES.c.id == -1).values(id=ERASURES.c.id))


def _scrubbed_columns(table: Table, blank: bool) -> list[str]:
    """Every text and JSON column (quotes may hide there), plus the personal ones."""
    names = [
        c.name
        for c in table.columns
        if isinstance(c.type, String | Text | JSON) and not c.primary_key and c.computed is None
    ]
    extra = PERSONAL_COLUMNS.get(table.name, ()) if blank else ()
    return names + [c for c in extra if c not in names]


def _scrub_rows(
    conn: Connection,
    table: Table,
    where: ColumnElement[bool],
    quoted: Quoted,
    *,
    order_by: str | None = None,
    blank: bool = False,
    dry: bool = False,
) -> int:
    """Rewrite the matching rows: personal columns blank (``blank``), quotes replaced in
    every text and JSON column. Only changed columns of changed rows are written (none
    when ``dry``: then only counted)."""
    columns = _scrubbed_columns(table, blank)
    pk = table.c.id
    query = select(pk, *(table.c[c] for c in columns)).where(where)
    query = query.order_by(table.c[order_by] if order_by else pk)
    changed = 0
    for row in conn.execute(query).mappings().all():
        old = dict(row)
        new = blank_personal(table.name, old) if blank else old
        diff = {}
        for column in columns:
            value = quoted.in_value(new[column])
            if value != old[column]:
                diff[column] = null() if value is None else value  # SQL NULL in JSON columns
        if diff:
            if not dry:
                conn.execute(update(table).where(pk == old["id"]).values(**diff))
            changed += 1
    return changed


def _quoted_in_rows(conn: Connection, customers: list[str]) -> set[str]:
    """Identifying strings stored in the customer's own domain rows (before blanking)."""
    found: set[str] = set()
    for table_name, columns in PERSONAL_COLUMNS.items():
        table = TABLES[table_name]
        query = select(*(table.c[c] for c in columns)).where(_owner_clause(table_name, customers))
        for row in conn.execute(query).mappings():
            for column, value in row.items():
                if isinstance(value, str) and column in QUOTED_KEYS:
                    found.add(value)
                elif isinstance(value, dict):
                    found |= {
                        v for k, v in value.items() if k in QUOTED_KEYS and isinstance(v, str)
                    }
    return found


def _payments_of(customers: list[str]) -> Select:
    return select(PAYMENTS.c.payment_intent_id).where(PAYMENTS.c.customer_id.in_(customers))


def _owner_clause(table_name: str, customers: list[str]) -> ColumnElement[bool]:
    """Rows of a domain table that belong to these customers."""
    table = TABLES[table_name]
    if table_name in BY_CUSTOMER:
        return table.c[BY_CUSTOMER[table_name][1]].in_(customers)
    return table.c[BY_PAYMENT[table_name][1]].in_(_payments_of(customers))


def _ticket_clause(
    conn: Connection, customers: list[str], event_ids: list[str], quoted: Quoted
) -> ColumnElement[bool]:
    """Tickets about the customer: by their ids, their events, or quoting them."""
    tickets = PaymentSupportTicket.__table__
    t = tickets.c
    invoices = StripeInvoice.__table__.c
    subscriptions = StripeSubscription.__table__.c
    clauses: list[ColumnElement[bool]] = [
        t.customer_id.in_(customers),
        t.payment_intent_id.in_(_payments_of(customers)),
        t.payment_intent_id.in_(
            select(invoices.payment_intent_id).where(invoices.customer_id.in_(customers))
        ),
        t.subscription_id.in_(
            select(subscriptions.stripe_subscription_id).where(
                subscriptions.customer_id.in_(customers)
            )
        ),
    ]
    clauses += [in_list(conn, t.stripe_event_id, part) for part in chunked(event_ids)]
    for value in quoted.values:
        pattern = f"%{value}%"
        clauses += [
            t.title.ilike(pattern),
            t.resolution_note.ilike(pattern),
            cast(t.details, Text).ilike(pattern),
        ]
    return or_(*clauses)


# ---- one erasure ------------------------------------------------------------------


def erase_customer(
    engine: Engine,
    customer_id: str,
    *,
    actor: str,
    reason: str = "request",
    dry_run: bool = False,
) -> ErasureResult:
    """Erase the customer's personal data everywhere (dry: count, then roll back).

    Repeatable: a second run rewrites only what is new. A customer with nothing stored
    is still recorded, so anything that arrives later is stored without personal data.
    """
    customer_id = check_customer_id(customer_id)
    if reason not in REASONS:
        raise ErasureError(f"reason must be one of {REASONS}")
    with engine.connect() as conn:
        result = _erase(conn, customer_id, actor=actor, reason=reason, dry=dry_run)
        conn.rollback()  # a dry run only read; a real one has committed every step
        return result


def _erase(
    conn: Connection, customer_id: str, *, actor: str, reason: str, dry: bool
) -> ErasureResult:
    """The erasure, committing after each step; a dry run reads and counts, writes nothing
    (no lock either: on SQLite it must not hold the one write lock the receiver needs)."""

    def step_done() -> None:
        if not dry:
            conn.commit()
            _begin_write(conn)

    customers = [customer_id]
    if dry:
        e = ERASURES.c
        first = conn.execute(select(e.id).where(e.customer_id == customer_id)).first() is None
    else:
        first = _record_start(conn, customer_id, actor=actor, reason=reason)
    if not dry:
        conn.commit()  # from here on, the write paths keep this customer blank
    result = ErasureResult(customer_id, reason, dry_run=dry, first_erasure=first)
    counts = result.counts

    settled = settled_event_id(conn, datetime.now(UTC))
    event_ids = customer_event_ids(conn, customers)
    quoted_values = _quoted_in_rows(conn, customers)
    stripe_ids: list[str] = []
    for part in chunked(event_ids, EVENT_BATCH):
        rows = conn.execute(
            select(EVENTS.c.stripe_event_id, EVENTS.c.payload).where(
                in_list(conn, EVENTS.c.id, part)
            )
        )
        for row in rows:
            stripe_ids.append(row.stripe_event_id)
            quoted_values |= quoted_in_payload(row.payload)
    quoted = Quoted.of(quoted_values)
    conn.commit()  # end the reads: they held no write lock, the writes below take it
    if not dry:
        _begin_write(conn)

    for name in DOMAIN_ORDER:  # processing's lock order: no deadlock with a batch
        key = (BY_CUSTOMER.get(name) or BY_PAYMENT[name])[0]
        counts[name] = _scrub_rows(
            conn,
            TABLES[name],
            _owner_clause(name, customers),
            quoted,
            order_by=key,
            blank=name in PERSONAL_COLUMNS,
            dry=dry,
        )
    counts.update(_scrub_operational(conn, customers, stripe_ids, quoted, dry=dry))
    step_done()

    events_changed = blanked = 0
    for part in chunked(event_ids, EVENT_BATCH):
        changed, paths = _redact_events(conn, list(part), quoted, dry=dry)
        events_changed += changed
        blanked += paths
        step_done()
    counts["stripe_events"] = events_changed
    counts["payload_paths_blanked"] = blanked
    counts["webhook_deliveries"] = _scrub_deliveries(conn, stripe_ids, quoted, dry=dry)
    if not dry:
        _record_done(conn, customer_id, actor=actor, reason=reason, counts=counts, swept_to=settled)
        conn.commit()
    return result


def _scrub_operational(
    conn: Connection, customers: list[str], stripe_ids: list[str], quoted: Quoted, *, dry: bool
) -> dict[str, int]:
    """Quotes of the person in the pipeline's own tables (recovery, fraud, tickets...)."""
    counts: dict[str, int] = {}
    invoices = StripeInvoice.__table__.c
    their_invoices = select(invoices.stripe_invoice_id).where(invoices.customer_id.in_(customers))
    for table in (PaymentRecoveryAttempt.__table__, PaymentAttempt.__table__):
        owner = or_(
            table.c.customer_id.in_(customers),
            table.c.payment_intent_id.in_(_payments_of(customers)),
            table.c.invoice_id.in_(their_invoices),
        )
        counts[str(table.name)] = _scrub_rows(conn, table, owner, quoted, dry=dry)
    hits = FraudRuleHit.__table__
    counts[str(hits.name)] = _scrub_rows(
        conn, hits, hits.c.customer_id.in_(customers), quoted, dry=dry
    )
    tickets = PaymentSupportTicket.__table__
    counts[str(tickets.name)] = _scrub_rows(
        conn, tickets, _ticket_clause(conn, customers, stripe_ids, quoted), quoted, dry=dry
    )
    d = ReconciliationDiscrepancy.__table__
    owned = owned_object_ids(customers).subquery()
    mine = d.c.object_id.in_(select(owned.c.object_id))
    counts[str(d.name)] = _scrub_rows(conn, d, mine, quoted, dry=dry)
    for object_type, fields in personal_audit_fields().items():  # a personal field's values
        personal = and_(
            mine,
            d.c.object_type == object_type,
            d.c.field.in_(fields),
            or_(d.c.local_value.is_not(None), d.c.remote_value.is_not(None)),
        )
        if dry:
            found = conn.execute(select(func.count()).select_from(d).where(personal)).scalar()
            counts[str(d.name)] += found or 0
            continue
        done = conn.execute(  # SQL NULL, not JSON null
            update(d).where(personal).values(local_value=null(), remote_value=null())
        )
        counts[str(d.name)] += done.rowcount or 0
    return counts


def _redact_events(
    conn: Connection, ids: list[int], quoted: Quoted, *, dry: bool = False
) -> tuple[int, int]:
    """Rewrite these events' payloads and error contexts; (events changed, paths blanked).

    Each payload is also searched for its own identifying values, so an event that
    quotes the person somewhere unexpected (metadata) is caught by what it says itself.
    """
    changed = blanked = 0
    rows = conn.execute(
        select(EVENTS.c.id, EVENTS.c.payload, EVENTS.c.error_context)
        .where(in_list(conn, EVENTS.c.id, ids))
        .order_by(EVENTS.c.id)
    ).all()
    for row in rows:
        own = quoted | Quoted.of(quoted_in_payload(row.payload))
        payload, paths = redact_payload(row.payload, own)
        context = own.in_value(row.error_context)
        values: dict[str, Any] = {}
        if payload != row.payload:
            values["payload"] = payload
        if context != row.error_context:
            values["error_context"] = context
        if values:
            if not dry:
                conn.execute(update(EVENTS).where(EVENTS.c.id == row.id).values(**values))
            changed += 1
            blanked += paths
    return changed, blanked


def _scrub_deliveries(conn: Connection, stripe_ids: list[str], quoted: Quoted, *, dry: bool) -> int:
    """Deliveries of their events hold no personal columns; quotes in ``reason`` go."""
    deliveries = WebhookDelivery.__table__
    changed = 0
    for part in chunked(stripe_ids):
        where = in_list(conn, deliveries.c.stripe_event_id, part)
        changed += _scrub_rows(conn, deliveries, where, quoted, dry=dry)
    return changed


def _insert(conn: Connection):
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert


def _record_start(conn: Connection, customer_id: str, *, actor: str, reason: str) -> bool:
    """Insert the erasure record (status ``erasing``); False when it already existed."""
    stmt = (
        _insert(conn)(ERASURES)
        .values(customer_id=customer_id, status="erasing", reason=reason, requested_by=actor)
        .on_conflict_do_nothing(index_elements=["customer_id"])
        .returning(ERASURES.c.id)
    )
    return conn.execute(stmt).first() is not None


def _higher(conn: Connection, column: ColumnElement[Any], value: int) -> ColumnElement[Any]:
    current = func.coalesce(column, 0)
    if conn.dialect.name == "postgresql":
        return func.greatest(current, value)
    return func.max(current, value)  # SQLite's two-argument max() is a scalar function


def _record_done(
    conn: Connection,
    customer_id: str,
    *,
    actor: str,
    reason: str,
    counts: dict[str, int],
    swept_to: int,
) -> None:
    e = ERASURES.c
    conn.execute(
        update(ERASURES)
        .where(e.customer_id == customer_id)
        .values(
            status="erased",
            erased_by=actor,
            erased_at=datetime.now(UTC),
            runs=e.runs + 1,
            counts=counts,
            events_swept_to_id=_higher(conn, e.events_swept_to_id, swept_to),
        )
    )
    record(
        conn,
        [
            AuditEntry(
                actor=actor,
                action=ERASE_ACTION,
                object_type="customer",
                object_id=customer_id,
                after={"status": "erased"},
                details={"reason": reason, "counts": counts},
            )
        ],
    )


# ---- deleted customers and new events -----------------------------------------------


def due_deleted_customers(conn: Connection, options: PrivacyOptions, now: datetime) -> list[str]:
    """Customers Stripe deleted at least ``erase_after_delete_days`` ago, not yet erased."""
    if options.erase_after_delete_days is None:
        return []
    c = StripeCustomer.__table__.c
    cutoff = now - timedelta(days=options.erase_after_delete_days)
    return list(
        conn.execute(
            select(c.stripe_customer_id)
            .where(
                c.deleted_at.is_not(None),
                c.deleted_at <= cutoff,
                c.stripe_customer_id.not_in(select(ERASURES.c.customer_id)),
            )
            .order_by(c.stripe_customer_id)
        ).scalars()
    )


def erase_deleted_customers(
    engine: Engine,
    options: PrivacyOptions,
    *,
    actor: str,
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[ErasureResult]:
    """Erase every customer whose ``customer.deleted`` is older than the configured delay."""
    now = now or datetime.now(UTC)
    with engine.connect() as conn:
        due = due_deleted_customers(conn, options, now)
    return [
        erase_customer(engine, cid, actor=actor, reason="customer_deleted", dry_run=dry_run)
        for cid in due
    ]


@dataclass
class SweepResult:
    """New events about erased customers, found since the last sweep, and redacted."""

    scanned_from_id: int
    scanned_to_id: int
    events_redacted: int = 0


def sweep_erased_events(
    engine: Engine, *, now: datetime | None = None, dry_run: bool = False
) -> SweepResult:
    """Redact events that arrived about erased customers since their erasure.

    Processing already stores such events' rows without personal data (``guard``); this
    blanks their raw payloads too. It scans only events after the oldest erasure's
    sweep mark, so a daily run reads about a day of events.
    """
    now = now or datetime.now(UTC)
    with engine.connect() as conn:
        e = ERASURES.c
        start = conn.execute(
            select(func.min(func.coalesce(e.events_swept_to_id, 0))).where(e.status == "erased")
        ).scalar()
        if start is None:
            return SweepResult(0, 0)
        settled = settled_event_id(conn, now)
        erased = select(e.customer_id).where(e.status == "erased")
        ids = customer_event_ids(conn, erased, after_id=start)
        conn.commit()
        result = SweepResult(start, settled)
        for part in chunked(ids, EVENT_BATCH):
            if not dry_run:
                _begin_write(conn)
            changed, _ = _redact_events(conn, list(part), Quoted.of(()), dry=dry_run)
            result.events_redacted += changed
            conn.commit()
        if not dry_run and settled > start:
            _begin_write(conn)
            conn.execute(
                update(ERASURES)
                .where(e.status == "erased", func.coalesce(e.events_swept_to_id, 0) < settled)
                .values(events_swept_to_id=settled)
            )
            conn.commit()
        return result
