"""Shared fixtures: real SQLite and real PostgreSQL databases, migrated once per session.

Each test gets its own database: a copy of a migrated SQLite template file, or a
PostgreSQL database created from a migrated template database. Under ``CI=true`` an
unreachable PostgreSQL fails the run; elsewhere its tests are skipped.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from stripe_pipeline.db import migrate
from stripe_pipeline.db.engine import make_engine

PG_ADMIN_URL = os.environ.get(
    "STRIPE_PIPELINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An autocommit engine on the server's ``test`` database, for CREATE DATABASE."""
    engine = create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # pragma: no cover - depends on the machine
        engine.dispose()
        message = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"
        if IN_CI:
            pytest.fail(message + " (required under CI=true)")
        pytest.skip(message)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_template(pg_admin: Engine) -> Iterator[str]:
    """A migrated template database; tests clone it (much faster than migrating)."""
    name = f"sp_tpl_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(_pg_url(name))
    migrate.upgrade(engine)
    engine.dispose()
    yield name
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite_template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture
def fresh_pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a new, migrated PostgreSQL database for this test only."""
    admin: Engine = request.getfixturevalue("pg_admin")
    template: str = request.getfixturevalue("pg_template")
    name = f"sp_t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield _pg_url(name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def fresh_sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "app.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh migrated database on each backend: the same test runs on both."""
    if request.param == "sqlite":
        return request.getfixturevalue("fresh_sqlite_url")
    return request.getfixturevalue("fresh_pg_url")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An unmigrated database on each backend (for migration tests)."""
    yield from _empty(request, tmp_path)


def _empty(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin: Engine = request.getfixturevalue("pg_admin")
    name = f"sp_e_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield _pg_url(name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# a copy of ../shared/stripe/fixtures3.json (Stripe's OpenAPI fixtures, MIT licensed)
FIXTURES3 = Path(__file__).with_name("data") / "fixtures3.json"


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where this test's reconciliation runs spool their listings (its own folder)."""
    path = tmp_path / "spool"
    monkeypatch.setenv("STRIPE_PIPELINE_SPOOL_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def stripe_fixtures() -> dict:
    """Stripe's own example objects (current API shapes), from ../shared."""
    import json

    return json.loads(FIXTURES3.read_text())["resources"]


# live receivers (one gunicorn per backend per session) for tests/test_receiver_*.py
from tests.support.receiver_server import (  # noqa: E402, F401
    live_receiver,
    pg_receiver,
    receiver_client,
    sqlite_receiver,
)
