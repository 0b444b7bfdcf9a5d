"""Walking ``stripe_events`` by primary key, so big tables are read and rewritten in
short, cheap steps: the table has no index on ``received_at`` (the receiver's hot
insert path pays for every index), but ids grow with arrival time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import Connection, func, select

from stripe_pipeline.db.models import StripeEvent

EVENTS = StripeEvent.__table__


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive UTC; PostgreSQL aware times."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def last_id_received_before(conn: Connection, moment: datetime) -> int:
    """Highest ``stripe_events.id`` whose row was received before ``moment`` (0: none).

    A binary search over the primary key: about 30 point reads whatever the table's
    size. Ids are assigned at insert and ``received_at`` is the insert's time, so the
    ids received before a moment are the ids up to some point.
    """
    top = conn.execute(select(func.max(EVENTS.c.id))).scalar()
    if top is None:
        return 0
    lo, hi = 0, top  # invariant: every id <= lo was received before the moment
    while lo < hi:
        mid = (lo + hi + 1) // 2
        row = conn.execute(
            select(EVENTS.c.received_at).where(EVENTS.c.id >= mid).order_by(EVENTS.c.id).limit(1)
        ).first()
        if row is not None and _aware(row[0]) < moment:
            lo = mid
        else:
            hi = mid - 1
    return lo


def id_ranges(start: int, stop: int, size: int) -> Iterator[tuple[int, int]]:
    """Half-open id ranges ``[lo, hi)`` of ``size`` ids covering ``[start, stop)``."""
    lo = start
    while lo < stop:
        hi = min(lo + size, stop)
        yield lo, hi
        lo = hi
