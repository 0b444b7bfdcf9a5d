"""Set-based, newest-event-wins upserts into the domain tables.

Every domain row carries the version of the newest event applied to it
(``last_event_created``, then ``last_event_rank`` (lifecycle stage, see
``ordering.py``), then ``last_event_id`` as a stable tie-break). One
``INSERT ... ON CONFLICT DO UPDATE`` per table and batch merges the incoming rows
into the stored ones, column by column, with a merge policy that makes the result
independent of delivery order (Stripe delivers at least once, in no order):

- ``NEWEST``: the newest event's value, ``NULL`` included (status, failure fields).
- ``NEWEST_KNOWN``: the newest non-``NULL`` value; an older event only fills a
  ``NULL`` (ids and amounts that some event families do not carry).
- ``GREATEST`` / ``LEAST``: monotone facts, whatever the order (refunded and
  withdrawn amounts grow; a deletion time, once known, stays).
- ``FOLLOWS``: a fact about another column's current value (a payment's card
  fingerprint belongs to its latest charge; a method's detachment time to its
  detached state): the newest known fact among the events, old or new, that name the
  merged value of that column (an older one only fills a ``NULL``); cleared when that
  column moves on.

An unversioned write (a source that does not own the row, such as a charge event
about a PaymentIntent's payment) has no version: it is never newer, so it only fills
``NULL``s of ``NEWEST_KNOWN`` columns and adds monotone facts; on INSERT its values
stand until the owning source's first event.

The same merge runs in Python (:func:`merge_row`) to fold several events about one
object within a batch into one row before the statement: PostgreSQL refuses to
update a row twice in one ``ON CONFLICT`` statement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    or_,
    select,
)
from sqlalchemy import (
    column as sql_column,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from stripe_pipeline.catalog.model import Policy, Resource
from stripe_pipeline.db.lists import chunked, in_list

# (created, lifecycle rank, event id); None for an unversioned write (see RowWrite)
Version = tuple[int, int, str]
GUARD_COLUMNS = ("last_event_created", "last_event_rank", "last_event_id")


def write_columns(resource: Resource) -> tuple[str, ...]:
    """Every column an upsert of the resource writes: its key, declared columns, guard."""
    return (resource.key, *resource.policies, *GUARD_COLUMNS)


def is_newer(incoming: Version | None, stored: Version | None) -> bool:
    """An unversioned write is never newer; anything versioned beats an unversioned row."""
    return incoming is not None and (stored is None or incoming > stored)


def merge_row(
    spec: Resource,
    stored: dict[str, Any],
    stored_version: Version | None,
    incoming: dict[str, Any],
    incoming_version: Version | None,
) -> tuple[dict[str, Any], Version | None]:
    """Python twin of the SQL merge, used to fold one batch's events per object."""
    newer = wins(spec, stored, stored_version, incoming, incoming_version)
    merged: dict[str, Any] = {}
    for column, policy in spec.policies.items():
        old, new = stored.get(column), incoming.get(column)
        if policy is Policy.NEWEST:
            merged[column] = new if newer else old
        elif policy is Policy.NEWEST_KNOWN:
            merged[column] = (
                (new if new is not None else old) if newer else (old if old is not None else new)
            )
        elif policy is Policy.GREATEST:
            merged[column] = new if old is None else old if new is None else max(old, new)
        elif policy is Policy.LEAST:
            merged[column] = new if old is None else old if new is None else min(old, new)
    for column, anchor in spec.follows.items():
        new = incoming.get(column)
        if (
            new is not None
            and incoming.get(anchor) == merged[anchor]
            and (newer or stored.get(column) is None or merged[anchor] != stored.get(anchor))
        ):
            merged[column] = new
        elif merged[anchor] == stored.get(anchor):
            merged[column] = stored.get(column)
        else:  # the anchor moved on: the old fact no longer applies
            merged[column] = None
    return merged, incoming_version if newer else stored_version


def wins(
    spec: Resource,
    stored: Mapping[str, Any],
    stored_version: Version | None,
    incoming: Mapping[str, Any],
    incoming_version: Version | None,
) -> bool:
    """Does the incoming event's state replace the stored one?

    A deletion is terminal: it beats any state of a live object and no later
    non-deleting event replaces it, even within the same ``created`` second (where
    the event id tie-break is arbitrary). Otherwise the newest event wins.
    """
    marker = spec.deleted_marker
    if marker is not None and incoming_version is not None:
        stored_deleted = stored.get(marker) is not None
        incoming_deleted = incoming.get(marker) is not None
        if stored_deleted != incoming_deleted:
            return incoming_deleted
    return is_newer(incoming_version, stored_version)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a JSON batch")


def _insert_for(dialect_name: str):
    if dialect_name == "postgresql":
        return postgresql.insert
    if dialect_name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"no upsert for dialect {dialect_name!r}")


def recordset(table: Table, columns: Sequence[str]):
    """PostgreSQL: ``SELECT`` of a batch given as one JSONB parameter named ``rows``.

    One small, cacheable statement with one parameter instead of a multi-row VALUES
    list with thousands of parameters: several times faster per row.
    """
    rows = func.jsonb_to_recordset(cast(bindparam("rows", type_=Text), JSONB)).table_valued(
        *(sql_column(c, table.c[c].type) for c in columns)
    )
    rows = rows.render_derived(name="batch", with_types=True)
    return select(*(rows.c[c] for c in columns))


def recordset_param(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The ``rows`` parameter of :func:`recordset` (datetimes as ISO 8601).

    orjson: the batch's JSON encoding was a tenth of its Python time with ``json``.
    Non-string keys (JSON documents in JSON columns) are kept as JSON does.
    """
    return {
        "rows": orjson.dumps(rows, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    }


@cache
def _upsert_statement(spec: Resource, dialect_name: str):
    """``INSERT ... ON CONFLICT (key) DO UPDATE SET <merge> WHERE <something changes>``."""
    table = spec.table
    stmt = _insert_for(dialect_name)(table)
    columns = write_columns(spec)
    if dialect_name == "postgresql":
        stmt = stmt.from_select(list(columns), recordset(table, columns))
    ex, cur = stmt.excluded, table.c
    new_id: ColumnElement = ex.last_event_id
    cur_id: ColumnElement = func.coalesce(cur.last_event_id, "")
    if dialect_name == "postgresql":
        # compare event ids bytewise, as Python does when folding a batch
        new_id, cur_id = new_id.collate("C"), cur_id.collate("C")
    cur_created = func.coalesce(cur.last_event_created, -1)
    cur_rank = func.coalesce(cur.last_event_rank, -1)
    newer = or_(
        ex.last_event_created > cur_created,
        and_(
            ex.last_event_created == cur_created,
            or_(
                ex.last_event_rank > cur_rank,
                and_(ex.last_event_rank == cur_rank, new_id > cur_id),
            ),
        ),
    )
    if spec.deleted_marker is not None:  # SQL twin of wins: a deletion is terminal
        cur_marker, new_marker = cur[spec.deleted_marker], ex[spec.deleted_marker]
        newer = or_(
            and_(new_marker.is_not(None), cur_marker.is_(None), ex.last_event_created.is_not(None)),
            and_(new_marker.is_not(None), cur_marker.is_not(None), newer),
            and_(new_marker.is_(None), cur_marker.is_(None), newer),
        )

    set_: dict[str, Any] = {}
    changes: list[ColumnElement] = [newer]
    for column, policy in spec.policies.items():
        old, new = cur[column], ex[column]
        if policy is Policy.NEWEST:
            set_[column] = case((newer, new), else_=old)
        elif policy is Policy.NEWEST_KNOWN:
            set_[column] = case((newer, func.coalesce(new, old)), else_=func.coalesce(old, new))
            changes.append(and_(old.is_(None), new.is_not(None)))
        elif policy is not Policy.FOLLOWS:
            wins = new > old if policy is Policy.GREATEST else new < old
            set_[column] = case((old.is_(None), new), (new.is_(None), old), (wins, new), else_=old)
            changes.append(and_(new.is_not(None), or_(old.is_(None), wins)))
    for column, anchor in spec.follows.items():
        old, new = cur[column], ex[column]
        kept = set_[anchor].is_not_distinct_from(cur[anchor])
        takes = and_(
            new.is_not(None),
            ex[anchor].is_not_distinct_from(set_[anchor]),
            or_(newer, old.is_(None), ~kept),
        )
        set_[column] = case((takes, new), (kept, old), else_=None)
        changes.append(and_(takes, old.is_distinct_from(new)))
    set_["last_event_created"] = case((newer, ex.last_event_created), else_=cur.last_event_created)
    set_["last_event_rank"] = case((newer, ex.last_event_rank), else_=cur.last_event_rank)
    set_["last_event_id"] = case((newer, ex.last_event_id), else_=cur.last_event_id)
    set_["updated_at"] = func.now()

    returning = [cur[spec.key], *(cur[c] for c in spec.audit_fields)]
    return stmt.on_conflict_do_update(
        index_elements=[cur[spec.key]], set_=set_, where=or_(*changes)
    ).returning(*returning)


def stored_columns(spec: Resource) -> tuple[str, ...]:
    """What :func:`select_current` reads: audit fields, NEWEST columns and the version."""
    newest = [c for c, p in spec.policies.items() if p is Policy.NEWEST]
    return tuple(dict.fromkeys([*spec.audit_fields, *newest, *GUARD_COLUMNS]))


def select_current(
    conn: Connection, spec: Resource, keys: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Stored state of the given keys: the audit log's "before", and what an incoming
    event of the same second is compared with (``stored_columns``)."""
    table = spec.table
    fields = stored_columns(spec)
    columns = [table.c[spec.key], *(table.c[c] for c in fields)]
    found: dict[str, dict[str, Any]] = {}
    key_column = table.c[spec.key]
    parts = [keys] if conn.dialect.name == "postgresql" else chunked(keys)
    chunks = [select(*columns).where(in_list(conn, key_column, part)) for part in parts]
    for query in chunks:
        for row in conn.execute(query):
            found[row[0]] = dict(zip(fields, row[1:], strict=True))
    return found


def upsert_rows(
    conn: Connection, spec: Resource, rows: Sequence[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Merge rows into the table in one statement; returns key -> audit fields of rows changed.

    Rows must have unique keys and every column of ``write_columns``; an unversioned
    row has ``None`` guard columns. Unchanged rows (older or repeated events) are not
    returned.
    """
    if not rows:
        return {}
    stmt = _upsert_statement(spec, conn.dialect.name)
    columns, defaults = write_columns(spec), spec.insert_defaults.items()
    params = []
    for row in rows:
        values = row if len(row) == len(columns) else {c: row.get(c) for c in columns}
        for name, default in defaults:
            if values[name] is None:
                values = {**values, name: default}
        params.append(values)
    changed: dict[str, dict[str, Any]] = {}
    if conn.dialect.name == "postgresql":
        result = conn.execute(stmt, recordset_param(params))
    else:
        result = conn.execute(stmt, params)
    fields = spec.audit_fields
    for row in result:
        changed[row[0]] = dict(zip(fields, row[1:], strict=True))
    return changed
