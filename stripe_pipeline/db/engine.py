"""Engines for the app database, tuned per dialect.

SQLite (the embedded default) runs in WAL mode with a busy timeout and full sync,
so an acknowledged webhook survives a crash; PostgreSQL connects through psycopg 3
with a short connect timeout, so an outage turns into a fast 503, not a hung worker.

Both hide SQL parameters from error messages (``hide_parameters``): parameters are
payload parts (ids, emails, amounts), and error messages reach logs, the CLI and
``stripe_events.error_context``. For the same reason PostgreSQL errors keep only their
first line: the server's DETAIL quotes the values (``Failing row contains (...)``,
``Key (id)=(...)``); the detail stays readable in code as ``exc.orig.diag``.

SQLite has one writer at a time, and the busy timeout only helps a transaction that
has not read yet: a deferred transaction that read, then wants to write after another
writer committed, fails at once with "database is locked" (its snapshot is stale, no
wait can fix it). A transaction that reads before it writes therefore starts with
:func:`begin_write` (``BEGIN IMMEDIATE``: the write lock first, waiting up to the busy
timeout); one whose first statement writes (a claim, a landing) needs nothing more.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url

SQLITE_BUSY_TIMEOUT_MS = 5000
# execution option of connections whose transaction begins with the write lock (SQLite)
BEGIN_IMMEDIATE = "stripe_pipeline_begin_immediate"


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def _loads(value: str | bytes | int | float) -> Any:
    """Decode a JSON column's value, including what SQLite turned into a number.

    SQLite gives a column declared ``JSON`` numeric affinity: a bare JSON number (a
    discrepancy's period end) is stored as an INTEGER or REAL and comes back as a
    Python number, which orjson refuses (SQLAlchemy's own fallback only catches the
    TypeError of ``json.loads``). Strings, null, objects and lists stay JSON text.
    """
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


def shareable_url(engine: Engine) -> str | None:
    """The engine's URL for another process to open the same database (it may hold a
    password: never log it); None for an in-memory SQLite database, which no other
    process can see."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return None
    return url.render_as_string(hide_password=False)


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
            hide_parameters=True,
            **JSON_OPTIONS,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # let SQLAlchemy, not pysqlite, decide where transactions begin
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    engine = create_engine(
        url,
        echo=echo,
        hide_parameters=True,
        **JSON_OPTIONS,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"connect_timeout": 3, "application_name": "stripe-pipeline"},
    )
    event.listen(engine, "handle_error", _first_line_only)
    return engine


def _first_line_only(context: ExceptionContext) -> None:
    """Drop the DETAIL/HINT/CONTEXT lines of a driver error (they may quote row values)."""
    orig = context.original_exception
    if orig is None or not orig.args or not isinstance(orig.args[0], str):
        return
    orig.args = (orig.args[0].split("\n", 1)[0], *orig.args[1:])
    wrapped = context.sqlalchemy_exception
    if wrapped is not None and wrapped.args:  # its message was built from the whole text
        cls = type(orig)
        wrapped.args = (f"({cls.__module__}.{cls.__name__}) {orig}", *wrapped.args[1:])


@contextmanager
def begin_write(engine: Engine) -> Iterator[Connection]:
    """A transaction that reads and then writes: on SQLite it takes the write lock when
    it begins (``BEGIN IMMEDIATE``), so it waits its turn instead of failing with
    "database is locked" once another writer commits; elsewhere a plain transaction."""
    with engine.connect() as conn:
        conn.execution_options(**{BEGIN_IMMEDIATE: True})
        with conn.begin():
            yield conn


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(BEGIN_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # pysqlite's own transaction handling would defer BEGIN; we issue it ourselves
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
