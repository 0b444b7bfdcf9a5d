"""Time as the database sees it: one clock for due-ness, and datetimes that compare.

PostgreSQL judges due-ness by its own clock (``now()``, shared by every worker and
host); the embedded SQLite by the local UTC clock, stored as naive UTC text. Every
stage that writes or compares a timestamp column goes through these helpers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Interval, func, literal
from sqlalchemy.sql.elements import ColumnElement


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_postgres(conn: Connection | Engine) -> bool:
    """PostgreSQL (server clock, aware timestamps) rather than SQLite."""
    return conn.dialect.name == "postgresql"


def db_now(conn: Connection | Engine) -> ColumnElement[Any]:
    """The clock due-ness is judged by: the server's on PostgreSQL (shared by all
    workers), the local UTC clock on SQLite (single machine, stored as naive UTC)."""
    if is_postgres(conn):
        return func.now()
    return literal(to_db_time(conn, utcnow()), DateTime(timezone=True))


def db_now_plus(conn: Connection | Engine, seconds: float) -> ColumnElement[Any]:
    if is_postgres(conn):
        return func.now() + literal(timedelta(seconds=seconds), Interval())
    return literal(to_db_time(conn, utcnow() + timedelta(seconds=seconds)), DateTime(True))


def to_db_time(conn: Connection | Engine, value: datetime) -> datetime:
    """SQLite stores datetimes as naive text: bind them as naive UTC so they compare."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value if is_postgres(conn) else value.replace(tzinfo=None)


def from_db_time(value: datetime | str | None) -> datetime | None:
    """Read back a timestamp as aware UTC (SQLite returns naive UTC, raw SQL text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
