"""Which period a run covers, per listed resource, and the stored watermarks.

A nightly run starts at the last successful window's end minus an overlap margin
(events created just before a run may become listable a little later), and never
reaches further back than the 30 days Stripe keeps ``/v1/events``. A full run lists
every object; events are still limited to what Stripe keeps.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from stripe_pipeline.db.models import ReconciliationWatermark

WATERMARKS = ReconciliationWatermark.__table__
EVENT_RETENTION_SECONDS = 30 * 24 * 3600
DEFAULT_OVERLAP_MINUTES = 60
EVENTS = "events"


@dataclass(frozen=True, slots=True)
class Window:
    """Unix seconds, both ends inclusive; ``start`` None means every object (full run)."""

    start: int | None
    end: int

    def contains(self, created: int | None) -> bool:
        if created is None:
            return self.start is None
        return (self.start is None or created >= self.start) and created <= self.end


def to_unix(value: datetime) -> int:
    """Seconds since the epoch; SQLite hands back naive datetimes, which are UTC here."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def from_unix(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def plan_window(
    resource: str,
    watermark: datetime | None,
    *,
    now: int | None = None,
    overlap_minutes: int = DEFAULT_OVERLAP_MINUTES,
    full_run: bool = False,
    start: int | None = None,
    end: int | None = None,
) -> Window:
    """The window one resource is reconciled over.

    An explicit ``start`` wins over the watermark; without either, the last 30 days.
    """
    now = int(time.time()) if now is None else now
    end = now if end is None else min(end, now)
    oldest_event = now - EVENT_RETENTION_SECONDS
    if full_run:
        begin = oldest_event if resource == EVENTS else None
    elif start is not None:
        begin = start
    elif watermark is not None:
        begin = to_unix(watermark) - overlap_minutes * 60
    else:
        begin = oldest_event
    if resource == EVENTS and begin is not None:
        begin = max(begin, oldest_event)
    if begin is not None and begin > end:
        raise ValueError(f"window start {begin} is after its end {end}")
    return Window(begin, end)


def read_watermarks(conn: Connection) -> dict[str, datetime]:
    rows = conn.execute(select(WATERMARKS.c.resource, WATERMARKS.c.last_window_end))
    return {resource: end for resource, end in rows}


def advance_watermarks(
    conn: Connection, resources: Iterable[str], window_end: int, run_id: int
) -> None:
    """Move each resource's watermark to this run's end (never backwards)."""
    end = from_unix(window_end)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for resource in resources:
        stmt = dialect.insert(WATERMARKS).values(
            resource=resource, last_window_end=end, last_run_id=run_id, updated_at=datetime.now(UTC)
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["resource"],
            set_={
                "last_window_end": stmt.excluded.last_window_end,
                "last_run_id": stmt.excluded.last_run_id,
                "updated_at": stmt.excluded.updated_at,
            },
            where=WATERMARKS.c.last_window_end < stmt.excluded.last_window_end,
        )
        conn.execute(stmt)
