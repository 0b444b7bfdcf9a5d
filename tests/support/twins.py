"""Hold every SQL twin (``extract_sql``) to its Python handler, event by event.

``compare`` stores events in a real PostgreSQL ``stripe_events``, extracts them in the
database, parses the same payloads in Python, and returns both per event; ``check``
asserts the one rule twins live by: an event extracted in SQL gives exactly the
handler's rows (and the handler would have added no note), and anything the handler
refuses is never extracted in SQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from stripe_pipeline.catalog import CATALOG
from stripe_pipeline.catalog.model import RowWrite
from stripe_pipeline.db.models import StripeEvent
from stripe_pipeline.land.envelope import envelope_from_event
from stripe_pipeline.land.store import insert_event
from stripe_pipeline.process.apply import _check_writes, _parse
from stripe_pipeline.process.events import QueuedEvent
from stripe_pipeline.process.extract_sql import extract_in_database, twin_for

Row = tuple[str, str, bool, tuple[tuple[str, Any], ...]]


def normalize(writes: list[RowWrite]) -> list[Row]:
    """Writes as comparable tuples: every declared column, missing as None."""
    out = []
    for w in writes:
        resource = CATALOG.by_table[w.table]
        columns = tuple((c, w.values.get(c)) for c in resource.policies)
        out.append((w.table, w.key, w.versioned, columns))
    return out


@dataclass
class Outcome:
    event: dict[str, Any]
    sql: list[Row] | None  # None: left to Python
    python: list[Row] | None  # None: the handler raised
    python_error: str | None
    notes: list[str]


def compare(conn: Connection, events: list[dict[str, Any]]) -> list[Outcome]:
    """Extract ``events`` (each with a twin) both ways, inside the caller's transaction."""
    queued: list[QueuedEvent] = []
    for doc in events:
        envelope = envelope_from_event(doc, json.dumps(doc))
        insert_event(conn, envelope)
        row_id = conn.execute(
            select(StripeEvent.id).where(StripeEvent.stripe_event_id == doc["id"])
        ).scalar_one()
        queued.append(QueuedEvent(row_id, doc["id"], doc["type"], doc["created"], 0, payload=None))
    extracted = extract_in_database(conn, queued, CATALOG)
    out = []
    for doc, event in zip(events, queued, strict=True):
        assert twin_for(CATALOG, doc["type"]) is not None, f"{doc['type']} has no SQL twin"
        sql = extracted.get(event.id)
        if sql is not None:
            try:  # apply refuses a twin's row the table cannot hold, as the parser's
                _check_writes(CATALOG, sql)
            except ValueError:
                sql = None
        try:
            parsed = _parse(
                QueuedEvent(event.id, doc["id"], doc["type"], doc["created"], 0, payload=doc),
                CATALOG,
                None,
            )
            python, error = (normalize(parsed[0].writes), None) if parsed else ([], None)
            notes = parsed[1] if parsed else []
        except Exception as exc:  # the handler refuses the payload
            python, error, notes = None, f"{type(exc).__name__}: {exc}", []
        out.append(Outcome(doc, normalize(sql) if sql is not None else None, python, error, notes))
    return out


def check(
    outcomes: list[Outcome],
    *,
    all_in_sql: bool = False,
    python_by_design: Callable[[dict[str, Any]], bool] | None = None,
) -> None:
    """The twin rule; with ``all_in_sql`` also that no event fell back to Python, except
    those ``python_by_design`` names (which must have)."""
    for o in outcomes:
        label = f"{o.event['type']} {o.event['id']}"
        in_python = python_by_design is not None and python_by_design(o.event)
        if in_python:
            assert o.sql is None, f"{label} is Python's by design, yet extracted in SQL"
        if o.sql is None:
            assert in_python or not all_in_sql, (
                f"{label} was not extracted in SQL (python: {o.python_error})"
            )
            continue
        assert o.python is not None, f"{label}: SQL extracted what Python refuses: {o.python_error}"
        assert not o.notes, f"{label}: SQL extracted an event the handler notes: {o.notes}"
        assert o.sql == o.python, f"{label}:\n  sql    {o.sql}\n  python {o.python}"
