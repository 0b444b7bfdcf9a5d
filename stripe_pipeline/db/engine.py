"""Engines for the app database, tuned per dialect.

SQLite (the embedded default) runs in WAL mode with a busy timeout and full sync,
so an acknowledged webhook survives a crash; PostgreSQL connects through psycopg 3
with a short connect timeout, so an outage turns into a fast 503, not a hung worker.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 5000


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def _loads(value: str | bytes | int | float) -> object:
    """A JSON column's value. SQLite gives a column declared ``JSON`` numeric affinity,
    so a bare JSON number (a discrepancy's period end) is stored and read back as a
    number, not as its text: it is already the decoded value."""
    if isinstance(value, int | float):
        return value
    return orjson.loads(value)


# JSON columns hold whole Stripe payloads: orjson decodes them ~5x faster than json
JSON_OPTIONS = {"json_serializer": _dumps, "json_deserializer": _loads}


def normalize_url(url: str) -> str:
    """Use psycopg 3 for bare ``postgresql://`` URLs, the driver we install."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> Engine:
    """Create an engine; for a SQLite file, create its folder and set the pragmas."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            **JSON_OPTIONS,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # let SQLAlchemy, not pysqlite, decide where transactions begin (BEGIN IMMEDIATE
        # for writers is issued by callers that need it)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine
    return create_engine(
        url,
        echo=echo,
        **JSON_OPTIONS,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"connect_timeout": 3, "application_name": "stripe-pipeline"},
    )


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # pysqlite's own transaction handling would defer BEGIN; we issue it ourselves
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
