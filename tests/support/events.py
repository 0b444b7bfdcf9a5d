"""Build Stripe event envelopes around Stripe objects, as Stripe would send them.

``make_event`` gives the event dict (sign it with the receiver's helpers to POST
it); ``queued`` turns one into the ``QueuedEvent`` the appliers receive.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from stripe_pipeline.process.events import QueuedEvent

CURRENT_API_VERSION = "2025-03-31.basil"
LEGACY_API_VERSION = "2017-08-15"

_counter = itertools.count(1)


def make_event(
    event_type: str,
    obj: dict[str, Any],
    created: int,
    event_id: str | None = None,
    api_version: str = CURRENT_API_VERSION,
    *,
    livemode: bool = False,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Stripe ``event`` object wrapping a deep copy of ``obj``."""
    data: dict[str, Any] = {"object": copy.deepcopy(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": event_id or f"evt_test{next(_counter):010d}",
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def queued(event: dict[str, Any], row_id: int | None = None, retry_count: int = 0) -> QueuedEvent:
    """The claimed ``stripe_events`` row of an event (id defaults to a fresh number)."""
    return QueuedEvent(
        id=row_id if row_id is not None else next(_counter),
        stripe_event_id=event["id"],
        event_type=event["type"],
        stripe_created=event["created"],
        retry_count=retry_count,
        payload=event,
    )


# --- applying events in tests -------------------------------------------------


def _domain_tables() -> dict[str, str]:
    from stripe_pipeline.catalog import CATALOG

    return {r.table_name: r.key for r in CATALOG.resources}


DOMAIN_TABLES = _domain_tables()  # table -> its Stripe key column, every declared resource
# columns that record when a row was written, not what it says
VOLATILE_COLUMNS = frozenset({"id", "created_at", "updated_at", "amount"})


def apply_in_transaction(engine: Any, events: list[dict[str, Any]], **kwargs: Any) -> Any:
    """Apply event dicts in one committed transaction, as the queue's runner does."""
    from stripe_pipeline.process.apply import apply_events

    with engine.begin() as conn:
        return apply_events(conn, [queued(e) for e in events], **kwargs)


def fetch_row(conn_or_engine: Any, table: str, key: str) -> dict[str, Any] | None:
    """One domain row by its Stripe key, datetimes as aware UTC (SQLite returns naive ones)."""
    from sqlalchemy import select

    from stripe_pipeline.db.models import metadata

    def run(conn: Any) -> dict[str, Any] | None:
        t = metadata.tables[table]
        found = conn.execute(select(t).where(t.c[DOMAIN_TABLES[table]] == key)).mappings().first()
        return _normalize(dict(found)) if found is not None else None

    if hasattr(conn_or_engine, "begin") and not hasattr(conn_or_engine, "in_transaction"):
        with conn_or_engine.connect() as conn:
            return run(conn)
    return run(conn_or_engine)


def domain_state(conn: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Every domain table's rows by key, without bookkeeping columns: for equality checks."""
    from sqlalchemy import select

    from stripe_pipeline.db.models import metadata

    state: dict[str, dict[str, dict[str, Any]]] = {}
    for table, column in DOMAIN_TABLES.items():
        rows = conn.execute(select(metadata.tables[table])).mappings().all()
        state[table] = {
            row[column]: {
                k: v for k, v in _normalize(dict(row)).items() if k not in VOLATILE_COLUMNS
            }
            for row in rows
        }
    return state


def _normalize(row: dict[str, Any]) -> dict[str, Any]:
    from datetime import UTC, datetime

    return {
        key: value.replace(tzinfo=UTC)
        if isinstance(value, datetime) and value.tzinfo is None
        else value
        for key, value in row.items()
    }
