"""Self-healing where it is deterministic; everything else becomes a ticket.

A missing or stale local object is rebuilt from its API object through the
processing parsers and written newest-wins: the API answer observed at time T is
the object's full state at T, so it replaces what events older than T said, and an
event newer than T still wins afterwards. Each repair is an audit row
(``reconciliation_repair``). Repaired rows then settle the columns they link
(``process.links``: a listed invoice payment fills its invoice's PaymentIntent and its
payment's invoice), each such change an audit row (``reconciliation_link``).
Objects the API no longer has, and differences that are not staleness (a currency),
are left open for the discrepancy check, which raises one deduplicated ticket per
discrepancy and closes it when the difference is gone.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from stripe_pipeline.audit import AuditEntry, record
from stripe_pipeline.catalog.model import Catalog, Policy, Resource, RowWrite
from stripe_pipeline.db.lists import chunked, in_list
from stripe_pipeline.db.models import (
    PaymentSupportTicket,
    ReconciliationDiscrepancy,
    StaleObject,
)
from stripe_pipeline.privacy.guard import scrub_erased_write
from stripe_pipeline.privacy.redact import redact_audit_entry
from stripe_pipeline.process.links import fill_links
from stripe_pipeline.process.ordering import ORDINARY
from stripe_pipeline.reconcile.compare import listed_ids, seen_ids
from stripe_pipeline.reconcile.parse import refined_by, row_from_api_object, stated
from stripe_pipeline.reconcile.spool import Finding, Repair, Spool
from stripe_pipeline.reconcile.window import from_unix
from stripe_pipeline.support.tickets import TicketRequest, open_tickets, resolve_tickets

log = logging.getLogger(__name__)

DISCREPANCIES = ReconciliationDiscrepancy.__table__
TICKETS = PaymentSupportTicket.__table__
STALE = StaleObject.__table__
UNRESOLVED = ("open", "ticketed")
REPAIR_ACTION = "reconciliation_repair"
LINK_ACTION = "reconciliation_link"
ISSUE_TYPE = "reconciliation_discrepancy"


@dataclass(slots=True)
class HealResult:
    repaired_objects: int = 0
    repair_failed: int = 0
    repair_skipped_newer: int = 0
    discrepancies: Counter = field(default_factory=Counter)  # status -> rows written
    resolved: int = 0
    links_settled: int = 0
    confirmed_objects: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "repaired_objects": self.repaired_objects,
            "repair_failed": self.repair_failed,
            "repair_skipped_newer": self.repair_skipped_newer,
            "discrepancies": dict(self.discrepancies),
            "resolved_since_last_run": self.resolved,
            "links_settled": self.links_settled,
            "confirmed_objects": self.confirmed_objects,
        }


def repair_event_id(run_id: int) -> str:
    """The ``last_event_id`` of a repaired row: says where its state came from."""
    return f"reconciliation:{run_id}"


def _insert(conn: Connection):
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert


@dataclass(slots=True)
class _Parsed:
    resource: Resource
    repair: Repair
    write: RowWrite
    fields: list[str]
    refines: frozenset[str] | None = None  # None: the object owns its row (``parse``)


def _parse_repair(
    catalog: Catalog, run_id: int, repair: Repair, fields: list[str]
) -> _Parsed | None:
    resource = catalog.by_type[repair.object_type]
    if repair.source == "deleted":
        marker = resource.deleted_marker
        if marker is None:
            return None
        deleted = {marker: from_unix(repair.observed_at)}
        write = RowWrite(resource.table_name, repair.object_id, deleted)
        return _Parsed(resource, repair, write, fields, refines=frozenset(deleted))
    try:
        write = row_from_api_object(
            catalog,
            resource,
            repair.read_as,
            repair.obj,
            observed_at=repair.observed_at,
            event_id=repair_event_id(run_id),
        )
    except (LookupError, TypeError, ValueError) as exc:
        log.warning("cannot repair %s %s: %s", repair.object_type, repair.object_id, exc)
        return None
    listing = catalog.listings.get(repair.source, (None, None))[1]
    refines = refined_by(resource, listing, repair.obj)
    if refines is None and not write.versioned:
        refines = frozenset(c for c, p in resource.policies.items() if p is not Policy.NEWEST)
    return _Parsed(resource, repair, write, fields, refines)


def _current_rows(conn: Connection, parsed: list[_Parsed]) -> dict[tuple[str, str], dict]:
    """Stored rows of every object a chunk repairs: one query per table, not per row."""
    by_resource: dict[Resource, set[str]] = {}
    for p in parsed:
        by_resource.setdefault(p.resource, set()).add(p.write.key)
    found: dict[tuple[str, str], dict] = {}
    for resource, keys in by_resource.items():
        column = resource.table.c[resource.key]
        for part in chunked(sorted(keys)):
            rows = conn.execute(select(resource.table).where(in_list(conn, column, part)))
            for row in rows.mappings():
                found[(resource.table_name, row[resource.key])] = dict(row)
    return found


def _repair_values(p: _Parsed, current: dict | None) -> dict[str, Any]:
    """What a repair writes: the columns the object states (``parse.stated``), as the
    API says them. The API state is the whole truth at the observation time, so it may
    also lower a "growing" value that a corrupted row got wrong; columns the object does
    not state (event facts, what another source owns) keep what the row has."""
    resource, write = p.resource, p.write
    if p.repair.source == "deleted":
        return dict(write.values)
    if current is None:  # a new row: everything the parser read, as processing would
        values = {c: write.values.get(c) for c in resource.policies}
        for column, default in resource.insert_defaults.items():
            if values.get(column) is None:
                values[column] = default
        return values
    values = {}
    for name in stated(resource, write, refines=p.refines):
        values[name] = write.values[name]
    for column, anchor in resource.follows.items():
        # a fact about another column's value: only with that value
        anchor_value = values.get(anchor, current.get(anchor))
        if column in values and anchor_value != write.values.get(anchor):
            del values[column]
    return values


def _repair_one(
    conn: Connection, run_id: int, p: _Parsed, current: dict | None, actor: str
) -> tuple[str, dict | None, AuditEntry | None]:
    """Rebuild one row from its API object: (outcome, row as now stored, audit entry)."""
    p.write = scrub_erased_write(conn, p.write)  # erased customers stay erased (privacy)
    repair, resource, write = p.repair, p.resource, p.write
    table = resource.table
    key_col = table.c[resource.key]
    versioned = p.refines is None
    version = (
        {
            "last_event_created": repair.observed_at,
            "last_event_rank": ORDINARY,
            "last_event_id": repair_event_id(run_id),
        }
        if versioned
        else {}
    )
    now = datetime.now(UTC)
    values = _repair_values(p, current)
    if current is None:
        if not versioned:
            return "not_owned", None, None  # only the owner's listing may create the row
        stmt = (
            _insert(conn)(table)
            .values({resource.key: write.key, **values, **version})
            .on_conflict_do_nothing(index_elements=[resource.key])
        )
        if conn.execute(stmt).rowcount == 0:
            return "newer_locally", None, None  # processing created it; the next run checks
        before = None
    else:
        stored = current["last_event_created"]
        if stored is not None and stored > repair.observed_at:
            return "newer_locally", None, None
        guard = (table.c.last_event_created.is_(None)) | (
            table.c.last_event_created <= repair.observed_at
        )
        done = conn.execute(
            update(table)
            .where(key_col == write.key, guard)
            .values(**values, **version, updated_at=now)
        )
        if done.rowcount == 0:
            return "newer_locally", None, None
        before = {c: _jsonable(current[c]) for c in resource.audit_fields}
    merged = {**(current or {}), **values, **version}
    after = {c: _jsonable(merged.get(c)) for c in resource.audit_fields}
    entry = AuditEntry(
        actor=actor,
        action=REPAIR_ACTION,
        object_type=repair.object_type,
        object_id=write.key,
        before=before,
        after=after,
        details={
            "run_id": run_id,
            "source": repair.source,
            "observed_at": repair.observed_at,
            "fields": p.fields,
        },
    )
    return "repaired", merged, entry


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _unresolved(conn: Connection, keys: Sequence[tuple[str, str, str, str]]) -> dict:
    """Existing unresolved rows of these discrepancy keys: key -> (id, status)."""
    found: dict[tuple[str, str, str, str], tuple[int, str]] = {}
    d = DISCREPANCIES.c
    for start in range(0, len(keys), 500):
        part = keys[start : start + 500]
        rows = conn.execute(
            select(d.id, d.status, d.object_type, d.object_id, d.kind, d.field).where(
                d.status.in_(UNRESOLVED),
                tuple_(d.object_type, d.object_id, d.kind, d.field).in_(part),
            )
        )
        for row in rows:
            found[(row.object_type, row.object_id, row.kind, row.field)] = (row.id, row.status)
    return found


def _write_findings(
    conn: Connection,
    run_id: int,
    items: list[tuple[Finding, bool]],
    result: HealResult,
) -> None:
    """Insert new discrepancies, refresh the unresolved ones found again (set-based)."""
    if not items:
        return
    # one row per key: two listings may report the same difference of one object
    unique: dict[tuple[str, str, str, str], tuple[Finding, bool]] = {}
    for finding, repaired in items:
        earlier = unique.get(finding.key)
        unique[finding.key] = (finding, repaired or (earlier is not None and earlier[1]))
    items = list(unique.values())
    now = datetime.now(UTC)
    existing = _unresolved(conn, [f.key for f, _ in items])
    inserts, updates = [], []
    for finding, repaired in items:
        values = {
            "run_id": run_id,
            "local_value": finding.local_value,
            "remote_value": finding.remote_value,
            "updated_at": now,
            "resolved_run_id": run_id if repaired else None,
            "resolved_at": now if repaired else None,
        }
        found = existing.get(finding.key)
        if found is None:
            status = "repaired" if repaired else "open"
            inserts.append(
                {
                    **values,
                    "object_type": finding.object_type,
                    "object_id": finding.object_id,
                    "kind": finding.kind,
                    "field": finding.field,
                    "first_seen_run_id": run_id,
                    "status": status,
                }
            )
        else:
            status = "repaired" if repaired else found[1]
            updates.append({**values, "_id": found[0], "status": status})
        result.discrepancies[status] += 1
    if inserts:
        conn.execute(DISCREPANCIES.insert(), inserts)
    if updates:
        d = DISCREPANCIES.c
        conn.execute(
            update(DISCREPANCIES)
            .where(d.id == bindparam("_id"))
            .values(
                run_id=bindparam("run_id"),
                status=bindparam("status"),
                local_value=bindparam("local_value"),
                remote_value=bindparam("remote_value"),
                updated_at=bindparam("updated_at"),
                resolved_run_id=bindparam("resolved_run_id"),
                resolved_at=bindparam("resolved_at"),
            ),
            updates,
        )


def record_findings(
    conn: Connection,
    catalog: Catalog,
    run_id: int,
    spool: Spool,
    *,
    repair: bool = True,
    actor: str,
) -> HealResult:
    """Repair what is deterministic, then write every finding with its outcome.

    Runs inside the run's final transaction: nothing here is visible unless the whole
    run commits. Per spool chunk: one query per table for the stored rows, one
    statement per repaired row, one audit insert, set-based discrepancy writes.
    """
    result = HealResult()
    for chunk in spool.chunks():
        parsed: dict[int, _Parsed] = {}
        if repair:
            for n, group in enumerate(chunk):
                if group.repair is not None:
                    fields = sorted({f.field or f.kind for f in group.findings})
                    p = _parse_repair(catalog, run_id, group.repair, fields)
                    if p is None:
                        result.repair_failed += 1
                    else:
                        parsed[n] = p
        current = _current_rows(conn, list(parsed.values())) if parsed else {}
        audit: list[AuditEntry] = []
        items: list[tuple[Finding, bool]] = []
        written: dict[str, dict[str, str | None]] = {}
        for n, group in enumerate(chunk):
            repaired = False
            p = parsed.get(n)
            if p is not None:
                row_key = (p.write.table, p.write.key)
                outcome, stored, entry = _repair_one(conn, run_id, p, current.get(row_key), actor)
                repaired = outcome == "repaired"
                if repaired:
                    result.repaired_objects += 1
                    current[row_key] = stored  # a later repair of the same row sees it
                    audit.append(entry)
                    written.setdefault(p.write.table, {})[p.write.key] = repair_event_id(run_id)
                elif outcome == "newer_locally":
                    result.repair_skipped_newer += 1
            items.extend((f, repaired) for f in group.findings)
        audit.extend(_link_entries(conn, catalog, run_id, written, actor))
        record(conn, [redact_audit_entry(e) for e in audit])  # no personal values
        _write_findings(conn, run_id, items, result)
    return result


def _link_entries(
    conn: Connection,
    catalog: Catalog,
    run_id: int,
    written: dict[str, dict[str, str | None]],
    actor: str,
) -> list[AuditEntry]:
    """Settle the linked columns the repaired rows decide; one audit row per change."""
    if not written:
        return []
    return [
        AuditEntry(
            actor=actor,
            action=LINK_ACTION,
            object_type=linked.resource.object_type,
            object_id=linked.key,
            before={c: _jsonable(v) for c, v in linked.before.items()},
            after={c: _jsonable(v) for c, v in linked.after.items()},
            details={"run_id": run_id},
        )
        for linked in fill_links(conn, catalog, written)
    ]


def settle_links(conn: Connection, catalog: Catalog, run_id: int, *, actor: str) -> int:
    """Recompute the linked columns of every row the run listed, on both sides of each
    link. Processing links rows as it writes them, but two concurrent PostgreSQL batches
    that each write one side (an invoice payment, its payment) cannot see each other's
    uncommitted row; the nightly run settles such a link. Returns the rows changed."""
    written: dict[str, dict[str, str | None]] = {}
    for resource in catalog.resources:
        if resource.links or catalog.links_into(resource):
            keys = listed_ids(conn, resource.object_type)
            if keys:
                written[resource.table_name] = dict.fromkeys(keys)
    entries = _link_entries(conn, catalog, run_id, written, actor)
    record(conn, entries)
    return len(entries)


def confirm_unchanged(conn: Connection, catalog: Catalog, run_id: int, spool: Spool) -> int:
    """Move the version of every row Stripe stated as stored to the observation time.

    Stripe's answer at time T is the object's whole state at T, so any event created
    before T is older than it. Without this, an older event of the same second as the
    row's version (a same-second update whose webhook was lost, brought back by this
    run's backfill) would still win the tie on its event id and replace a state the run
    had just found right. Values are not touched: no audit row. A row changed by an
    event of the observation second or later keeps its version.

    Takes the confirmations not written yet, so a run writes them chunk by chunk as it
    compares (the database works beside the comparison instead of at the end): they
    are facts of the observation time, true whether or not the run then commits.
    """
    confirmed = 0
    version = {"last_event_rank": ORDINARY, "last_event_id": repair_event_id(run_id)}
    for object_type, observed_at, keys in spool.confirmations():
        resource = catalog.by_type[object_type]
        table = resource.table
        c = table.c
        for part in chunked(keys):
            done = conn.execute(
                update(table)
                .where(
                    in_list(conn, c[resource.key], part),
                    (c.last_event_created.is_(None)) | (c.last_event_created < observed_at),
                )
                .values(last_event_created=observed_at, **version)
            )
            confirmed += done.rowcount
    return confirmed


def _local_keys(conn: Connection, resource: Resource, ids: list[str]) -> set[str]:
    column = resource.table.c[resource.key]
    found: set[str] = set()
    for part in chunked(ids):
        found.update(conn.execute(select(column).where(in_list(conn, column, part))).scalars())
    return found


def resolve_vanished(
    conn: Connection, catalog: Catalog, run_id: int, object_types: Iterable[str], *, full_run: bool
) -> int:
    """Close unresolved discrepancies this run checked again and no longer found.

    "Checked again" depends on the kind: a missing local object is gone once the row
    exists; a field difference or an object missing in Stripe once the API listed the
    object again (or the local row is gone). Objects outside this run's window keep
    their discrepancies open until a run covers them.
    """
    d = DISCREPANCIES.c
    now = datetime.now(UTC)
    resolved = 0
    for object_type in object_types:
        rows = conn.execute(
            select(d.id, d.object_id, d.kind).where(
                d.object_type == object_type, d.status.in_(UNRESOLVED), d.run_id != run_id
            )
        ).all()
        if not rows:
            continue
        ids = sorted({r.object_id for r in rows})
        local = _local_keys(conn, catalog.by_type[object_type], ids)
        seen = seen_ids(conn, object_type, ids)
        gone = []
        for row in rows:
            if row.kind == "missing_locally":
                vanished = row.object_id in local or full_run
            else:
                vanished = row.object_id in seen or row.object_id not in local
            if vanished:
                gone.append(row.id)
        for part in chunked(gone):
            conn.execute(
                update(DISCREPANCIES)
                .where(in_list(conn, d.id, part))
                .values(status="resolved", resolved_run_id=run_id, resolved_at=now, updated_at=now)
            )
        resolved += len(gone)
    return resolved


# --- tickets (driven by the discrepancy asset check) ------------------------------------

TICKET_CHUNK = 1000  # open discrepancies ticketed per round of statements


def dedupe_key(object_type: str, object_id: str, kind: str, field_name: str) -> str:
    return f"reconciliation:{object_type}:{object_id}:{kind}:{field_name}"


def _ticket_request(row: Any) -> TicketRequest:
    what = {
        "missing_locally": "exists in Stripe but not locally",
        "missing_in_stripe": "exists locally but not in Stripe",
        "field_mismatch": f"{row.field} differs from Stripe",
    }[row.kind]
    money = row.object_type in ("payment", "refund", "dispute")
    high = (row.kind == "missing_in_stripe" and money) or row.field == "currency"
    return TicketRequest(
        issue_type=ISSUE_TYPE,
        dedupe_key=dedupe_key(row.object_type, row.object_id, row.kind, row.field),
        title=f"Reconciliation: {row.object_type} {row.object_id} {what}",
        priority="high" if high else "medium",
        payment_intent_id=row.object_id if row.object_type == "payment" else None,
        subscription_id=row.object_id if row.object_type == "subscription" else None,
        details={
            "discrepancy_id": row.id,
            "run_id": row.run_id,
            "first_seen_run_id": row.first_seen_run_id,
            "object_type": row.object_type,
            "object_id": row.object_id,
            "kind": row.kind,
            "field": row.field,
            "local_value": row.local_value,
            "remote_value": row.remote_value,
        },
    )


def ticket_open_discrepancies(conn: Connection, *, actor: str = "reconciliation") -> list[int]:
    """One deduplicated ticket per open discrepancy; the discrepancy becomes ``ticketed``.

    Set-based, a chunk of discrepancies at a time: a run may leave thousands open, and
    the check handles them in one transaction on one connection.
    """
    d = DISCREPANCIES.c
    ticket_ids: list[int] = []
    after_id = 0
    while True:
        rows = conn.execute(
            select(DISCREPANCIES)
            .where(d.status == "open", d.id > after_id)
            .order_by(d.id)
            .limit(TICKET_CHUNK)
        ).all()
        if not rows:
            return ticket_ids
        after_id = rows[-1].id
        tickets = open_tickets(conn, [_ticket_request(row) for row in rows], actor=actor)
        conn.execute(
            update(DISCREPANCIES)
            .where(d.id == bindparam("_id"))
            .values(
                status="ticketed", ticket_id=bindparam("_ticket"), updated_at=datetime.now(UTC)
            ),
            [{"_id": row.id, "_ticket": t.ticket_id} for row, t in zip(rows, tickets, strict=True)],
        )
        ticket_ids.extend(t.ticket_id for t in tickets)


def close_tickets_of_resolved(conn: Connection, *, actor: str = "reconciliation") -> list[int]:
    """Close the open tickets whose discrepancy a later run found gone (or repaired)."""
    d, t = DISCREPANCIES.c, TICKETS.c
    rows = conn.execute(
        select(d.ticket_id, d.status, d.resolved_run_id)
        .select_from(DISCREPANCIES.join(TICKETS, t.id == d.ticket_id))
        .where(and_(d.status.in_(("resolved", "repaired")), t.status != "resolved"))
        .distinct()
    ).all()
    still_open = set(
        conn.execute(
            select(d.ticket_id).where(d.status.in_(UNRESOLVED), d.ticket_id.is_not(None))
        ).scalars()
    )
    notes: dict[int, str] = {}
    for row in rows:
        if row.ticket_id in still_open or row.ticket_id in notes:
            continue  # the same difference came back: its ticket stays open
        notes[row.ticket_id] = (
            f"discrepancy {row.status} by reconciliation run {row.resolved_run_id}"
        )
    return resolve_tickets(conn, notes, resolution="auto_closed", actor=actor)


def forget_refreshed(conn: Connection, refreshed: list[tuple[str, str]]) -> None:
    """Drop the stale-object entries this run fetched (their state is now Stripe's)."""
    s = STALE.c
    for start in range(0, len(refreshed), 500):
        part = refreshed[start : start + 500]
        conn.execute(STALE.delete().where(tuple_(s.object_type, s.object_id).in_(part)))
