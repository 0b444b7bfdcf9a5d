"""Run Alembic migrations from code (the CLI, the receiver's self-migration, tests)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class SchemaNotReady(RuntimeError):
    """The database is not at the migration head; the message says what to run."""


def _config(connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str:
    heads = ScriptDirectory.from_config(_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have one head, found {heads}")
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate up; Alembic commits each revision itself (``migrations/env.py``), so a
    revision may build an index CONCURRENTLY, outside any transaction."""
    with engine.connect() as connection:
        command.upgrade(_config(connection), revision)


def downgrade(engine: Engine, revision: str = "-1") -> None:
    with engine.connect() as connection:
        command.downgrade(_config(connection), revision)


def ensure_schema(engine: Engine, *, auto_migrate: bool) -> None:
    """Migrate the embedded database, or refuse to run on a stale external one."""
    current = current_revision(engine)
    if current == head_revision():
        return
    if auto_migrate:
        upgrade(engine)
        return
    raise SchemaNotReady(
        f"database schema is at {current or 'an empty schema'}, the code needs "
        f"{head_revision()}: run `stripe-pipeline db upgrade` first"
    )
