"""In-database extraction of handler rows on PostgreSQL (the fast path of ``apply``).

Shipping each 2-3 KB JSONB payload to Python (``jsonb_out``, the wire, a JSON parse)
and walking it there costs more than everything else a batch does. So a handler may
have a SQL twin: the same rows, read by PostgreSQL straight from ``stripe_events``
(``o`` is the event's ``data.object``, extracted once per row, ``LATERAL ... OFFSET 0``).
Only the extracted columns travel; folding, the newest-wins upsert, the audit log and
the post-apply hooks stay the one Python implementation in ``apply``.

A twin never decides anything on its own: every value comes with an ``ok`` condition
(``catalog.sql_readers``), and an event whose rows are not all ``ok``, whose handler
has no twin, or that a twin refuses (``SqlWrite.defer``) goes through the Python
handler as before. ``tests/test_extract_sql.py`` holds every twin to its handler,
row for row, on Stripe's fixtures and on hypothesis-mutated payloads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

from stripe_pipeline.catalog.model import Catalog, Route, RowWrite, SqlWrite
from stripe_pipeline.catalog.sql_readers import all_ok

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from stripe_pipeline.process.events import QueuedEvent


def twin_for(catalog: Catalog, event_type: str) -> Route | None:
    """The route of an event type when it has a SQL twin."""
    route = catalog.route_for(event_type)
    return route if route is not None and route.twin else None


def extract_in_database(
    conn: Connection, events: Sequence[QueuedEvent], catalog: Catalog
) -> dict[int, list[RowWrite]]:
    """Rows per event, for every event whose route has a SQL twin and whose payload it
    can read; events absent from the result go through their Python parser."""
    by_route: dict[Route, list[int]] = defaultdict(list)
    for event in events:
        route = twin_for(catalog, event.event_type)
        if route is not None:
            by_route[route].append(event.id)
    if not by_route:
        return {}
    # JIT compiles these wide expressions for up to ~200 ms per statement, longer than
    # the statement then runs; off for the rest of this batch's transaction
    conn.exec_driver_sql("SET LOCAL jit = off")
    out: dict[int, list[RowWrite]] = {}
    for route, ids in by_route.items():
        rows: dict[int, list[RowWrite]] = {i: [] for i in ids}
        refused: set[int] = set()
        objects = tuple(sorted(route.objects))
        for write in route.twin:
            result = conn.exec_driver_sql(_query(write), (list(objects), ids))
            columns = tuple(write.values)
            seen: set[int] = set()
            for event_id, ok, key, versioned, *values in result.all():
                seen.add(event_id)
                if not ok:
                    refused.add(event_id)
                elif key is not None:  # a row the handler skips (``when`` false)
                    rows[event_id].append(
                        RowWrite(
                            write.table, key, dict(zip(columns, values, strict=True)), versioned
                        )
                    )
            refused.update(set(ids) - seen)  # no stored row: nothing to read in place
        out.update((i, writes) for i, writes in rows.items() if i not in refused)
    return out


@cache
def _query(write: SqlWrite) -> str:
    """One SELECT per write: ``(event id, ok, key, versioned, values...)`` per row.

    Every event of the batch yields at least one row, with ``ok`` false when it must
    go to Python, so a refused event is never mistaken for one that writes nothing.
    ``ok`` holds when ``o`` is an object of a kind the route accepts (a missing
    ``object`` is accepted, as the parser does), the write's event-level ``ok`` holds,
    the twin does not defer, and, for each row written (``when``), every value is ``ok``.
    Parameters: the route's accepted ``object`` values, then the event row ids.
    """
    values = list(write.values.values())
    event_ok = [
        "jsonb_typeof(o) = 'object'",
        "(NOT o ? 'object' OR coalesce((o ->> 'object') = ANY(%s), false))",
    ]
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
            f"coalesce({write.versioned}, false), {select_values} {base}WHERE e.id = ANY(%s)"
        )
    items = write.items
    ok = " AND ".join([*event_ok, f"(item IS NULL OR {row_ok})"])
    return (
        f"SELECT e.id, coalesce({ok}, false), "
        f"CASE WHEN item IS NOT NULL AND {when} THEN {write.key.value} END, "
        f"coalesce({write.versioned}, false), {select_values} {base}"
        f"LEFT JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof({items}) = 'array' "
        f"THEN {items} END) WITH ORDINALITY AS it(item, n) ON true "
        f"WHERE e.id = ANY(%s) ORDER BY e.id, it.n"
    )
