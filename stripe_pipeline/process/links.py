"""Linked columns: values of one resource's rows that another resource's rows decide.

Since API version 2025-03-31.basil the invoice <-> payment link lives in invoice
payments (``catalog.invoice_payments``, declared as :class:`~stripe_pipeline.catalog.
model.Link`). Whatever order the rows arrive in, a target row's linked column ends as
the preferred link row's value: after a write (a processed batch, a reconciliation
repair), every target row it may have moved is recomputed, those it wrote itself and
those named by the link rows it changed.

Set-based: per target table, one indexed probe per match column for the written
targets some link row names (on an account without invoice payments, that is all it
costs), one SELECT of the rows whose linked value differs (with their audit "before",
locked on PostgreSQL) and one UPDATE of those rows; both read the preferred link row
through a correlated subquery on the link table's indexed match columns.
The UPDATE leaves the target's event version alone: the link is a fact about another
object, not a newer state of this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, case, func, literal, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from stripe_pipeline.catalog.model import Catalog, Link, Resource
from stripe_pipeline.db.lists import chunked, in_list


@dataclass(frozen=True, slots=True)
class LinkedRow:
    """A target row whose linked columns moved: its audit fields before and after, and
    the event (or repair) that wrote the row which caused it."""

    resource: Resource
    key: str
    before: dict[str, Any]
    after: dict[str, Any]
    cause: str | None


def fill_links(
    conn: Connection, catalog: Catalog, written: Mapping[str, Mapping[str, str | None]]
) -> list[LinkedRow]:
    """Recompute the linked columns of every target row ``written`` may have moved.

    ``written``: table -> {key: the event (or repair) id that wrote the row}, for the
    rows the caller changed. Returns the target rows changed, in catalog order.
    """
    source_matches: dict[tuple[str, tuple[str, ...]], dict[str, str | None]] = {}
    out: list[LinkedRow] = []
    for target in catalog.resources:
        links = catalog.links_into(target)
        if not links:
            continue
        # a written target needs its links only when some link row names it (on an
        # account without invoice payments: one indexed probe, nothing more)
        candidates = _named(conn, links, written.get(target.table_name, {}))
        for source, link in links:
            rows = written.get(source.table_name)
            if not rows:
                continue
            cache_key = (source.table_name, link.match)
            if cache_key not in source_matches:
                source_matches[cache_key] = _matched_keys(conn, source, link, rows)
            for key, cause in source_matches[cache_key].items():
                candidates.setdefault(key, cause)
        if candidates:
            out.extend(_relink(conn, target, links, candidates))
    return out


def may_move_link(
    catalog: Catalog,
    resource: Resource,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
) -> bool:
    """Whether a write of a row can need its links recomputed: a row of a link source,
    a new target row, or a target row whose own payload moved a linked column. A
    target row updated otherwise keeps the links computed when they last moved."""
    if resource.links:
        return True
    columns = [link.column for _, link in catalog.links_into(resource)]
    if not columns:
        return False
    return before is None or any(before.get(c) != after.get(c) for c in columns)


def _named(
    conn: Connection,
    links: tuple[tuple[Resource, Link], ...],
    targets: Mapping[str, str | None],
) -> dict[str, str | None]:
    """The written target keys some source row names through a match column."""
    if not targets:
        return {}
    found: set[str] = set()
    keys = sorted(targets)
    for source, match in dict.fromkeys((source, link.match) for source, link in links):
        table = source.table
        for column in match:
            for part in [keys] if conn.dialect.name == "postgresql" else chunked(keys):
                stmt = select(table.c[column]).where(in_list(conn, table.c[column], part))
                found.update(conn.execute(stmt.distinct()).scalars())
    return {key: cause for key, cause in targets.items() if key in found}


def _matched_keys(
    conn: Connection, source: Resource, link: Link, rows: Mapping[str, str | None]
) -> dict[str, str | None]:
    """Target keys the written source rows name (any match column), with their cause."""
    table = source.table
    columns = [table.c[source.key], *(table.c[m] for m in link.match)]
    found: dict[str, str | None] = {}
    for part in chunked(sorted(rows)):
        for key, *values in conn.execute(
            select(*columns).where(in_list(conn, table.c[source.key], part))
        ):
            for value in values:
                if value is not None:
                    found.setdefault(value, rows[key])
    return found


def preferred(conn: Connection, source: Resource, link: Link, target_key: Any) -> Any:
    """Scalar subquery: ``link.value`` of the preferred source row naming ``target_key``."""
    s = source.table.c
    key = s[source.key].collate("C") if conn.dialect.name == "postgresql" else s[source.key]
    order: list[ColumnElement] = [
        case((s[column] == literal(value), 0), else_=1) for column, value in link.prefer
    ]
    order += [func.coalesce(s.stripe_created, -1).desc(), key.desc()]
    return (
        select(s[link.value])
        .where(or_(*(s[m] == target_key for m in link.match)), s[link.value].is_not(None))
        .order_by(*order)
        .limit(1)
        .scalar_subquery()
    )


def _relink(
    conn: Connection,
    target: Resource,
    links: tuple[tuple[Resource, Link], ...],
    candidates: dict[str, str | None],
) -> list[LinkedRow]:
    table = target.table
    t = table.c
    key_column = t[target.key]
    resolved = {link.column: preferred(conn, source, link, key_column) for source, link in links}
    differs = or_(
        *(v.is_not(None) & t[column].is_distinct_from(v) for column, v in resolved.items())
    )
    fields = target.audit_fields
    out: list[LinkedRow] = []
    keys = sorted(candidates)
    parts = [keys] if conn.dialect.name == "postgresql" else chunked(keys)
    for part in parts:
        query = (
            select(key_column, *(t[f] for f in fields))
            .where(in_list(conn, key_column, part), differs)
            .order_by(key_column)  # one lock order for every run
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(of=table)
        before = {row[0]: dict(zip(fields, row[1:], strict=True)) for row in conn.execute(query)}
        if not before:
            continue
        changed = conn.execute(
            update(table)
            .where(in_list(conn, key_column, sorted(before)))
            .values(
                {
                    **{column: func.coalesce(v, t[column]) for column, v in resolved.items()},
                    "updated_at": func.now(),
                }
            )
            .returning(key_column, *(t[f] for f in fields))
        )
        for row in changed:
            after = dict(zip(fields, row[1:], strict=True))
            if after != before[row[0]]:
                out.append(LinkedRow(target, row[0], before[row[0]], after, candidates[row[0]]))
    out.sort(key=lambda r: r.key)
    return out
