"""In-database extraction of handler rows on PostgreSQL (the fast path of ``apply``).

Shipping each 2-3 KB JSONB payload to Python (``jsonb_out``, the wire, a JSON parse)
and walking it there costs more than everything else a batch does. So a handler may
have a SQL twin: the same rows, read by PostgreSQL straight from ``stripe_events``
(``o`` is the event's ``data.object``, extracted once per row, ``LATERAL ... OFFSET 0``).
Only the extracted columns travel; folding, the newest-wins upsert, the audit log and
the post-apply hooks stay the one Python implementation in ``apply``.

A twin never decides anything on its own: every value comes with an ``ok`` condition
(``sql_fields``), and an event whose rows are not all ``ok``, whose handler
has no twin, or that a twin refuses (``SqlWrite.defer``) goes through the Python
handler as before. ``tests/test_extract_sql.py`` holds every twin to its handler,
row for row, on Stripe's fixtures and on hypothesis-mutated payloads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from stripe_pipeline.process.registry import Handler, RowWrite, handler_for
from stripe_pipeline.process.sql_fields import Expr, all_ok

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from stripe_pipeline.process.events import QueuedEvent


@dataclass(frozen=True, eq=False)  # hashed by identity: its SQL is cached
class SqlWrite:
    """One kind of row a handler writes, as SQL over ``o`` / ``e.payload``.

    ``items``: a JSONB array expression; the write then yields one row per element,
    in order, with the element as ``item`` (a charge's refunds list). ``when``: rows
    are written only where it holds (Python's ``if``). ``defer``: events the twin
    leaves to Python (the handler would call the API, or add a note).
    """

    table: str
    key: Expr
    values: Mapping[str, Expr]
    ok: Expr | None = None
    items: str | None = None
    when: str | None = None
    defer: str | None = None


@dataclass(frozen=True, eq=False)
class SqlTwin:
    handler: Handler
    writes: tuple[SqlWrite, ...]


_TWINS: dict[Handler, SqlTwin] = {}


def sql_twin(handler: Handler, *writes: SqlWrite) -> SqlTwin:
    """Register the SQL twin of ``handler``: the rows it writes, in the handler's order."""
    if handler in _TWINS:
        raise ValueError(f"{handler.__name__} already has a SQL twin")
    twin = SqlTwin(handler, tuple(writes))
    _TWINS[handler] = twin
    return twin


def twin_for(event_type: str) -> SqlTwin | None:
    handler = handler_for(event_type)
    return _TWINS.get(handler) if handler is not None else None


def extract_in_database(
    conn: Connection, events: Sequence[QueuedEvent]
) -> dict[int, list[RowWrite]]:
    """Rows per event, for every event whose handler has a SQL twin and whose payload it
    can read; events absent from the result go through their Python handler."""
    by_twin: dict[SqlTwin, list[int]] = defaultdict(list)
    for event in events:
        twin = twin_for(event.event_type)
        if twin is not None:
            by_twin[twin].append(event.id)
    if not by_twin:
        return {}
    # JIT compiles these wide expressions for up to ~200 ms per statement, longer than
    # the statement then runs; off for the rest of this batch's transaction
    conn.exec_driver_sql("SET LOCAL jit = off")
    out: dict[int, list[RowWrite]] = {}
    for twin, ids in by_twin.items():
        rows: dict[int, list[RowWrite]] = {i: [] for i in ids}
        refused: set[int] = set()
        for write in twin.writes:
            result = conn.exec_driver_sql(_query(write), (ids,))
            columns = tuple(write.values)
            seen: set[int] = set()
            for event_id, ok, key, *values in result.all():
                seen.add(event_id)
                if not ok:
                    refused.add(event_id)
                elif key is not None:  # a row the handler skips (``when`` false)
                    rows[event_id].append(
                        RowWrite(write.table, key, dict(zip(columns, values, strict=True)))
                    )
            refused.update(set(ids) - seen)  # no stored row: nothing to read in place
        out.update((i, writes) for i, writes in rows.items() if i not in refused)
    return out


@cache
def _query(write: SqlWrite) -> str:
    """One SELECT per write: ``(event id, ok, key, values...)`` per row.

    Every event of the batch yields at least one row, with ``ok`` false when it must
    go to Python, so a refused event is never mistaken for one that writes nothing.
    ``ok`` holds when ``o`` is an object, the write's event-level ``ok`` holds, the
    twin does not defer, and, for each row written (``when``), every value is ``ok``.
    """
    values = list(write.values.values())
    event_ok = ["jsonb_typeof(o) = 'object'"]
    if write.ok is not None:
        event_ok.append(all_ok(write.ok))
    if write.defer:
        event_ok.append(f"NOT coalesce({write.defer}, false)")
    when = f"coalesce({write.when}, false)" if write.when else "true"
    row_ok = f"(NOT {when} OR ({all_ok(write.key, *values)}))"
    select_values = ", ".join(v.value for v in values)
    base = (
        "FROM stripe_events e "
        "CROSS JOIN LATERAL (SELECT e.payload -> 'data' -> 'object' AS o OFFSET 0) x "
    )
    if write.items is None:
        ok = " AND ".join([*event_ok, row_ok])
        return (
            f"SELECT e.id, coalesce({ok}, false), CASE WHEN {when} THEN {write.key.value} END, "
            f"{select_values} {base}WHERE e.id = ANY(%s)"
        )
    items = write.items
    ok = " AND ".join([*event_ok, f"(item IS NULL OR {row_ok})"])
    return (
        f"SELECT e.id, coalesce({ok}, false), "
        f"CASE WHEN item IS NOT NULL AND {when} THEN {write.key.value} END, "
        f"{select_values} {base}"
        f"LEFT JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof({items}) = 'array' "
        f"THEN {items} END) WITH ORDINALITY AS it(item, n) ON true "
        f"WHERE e.id = ANY(%s) ORDER BY e.id, it.n"
    )


def twins() -> dict[Handler, SqlTwin]:
    """Registered twins (for tests and docs)."""
    return dict(_TWINS)
