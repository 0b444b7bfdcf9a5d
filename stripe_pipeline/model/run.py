"""Materialize models as tables or views, atomically, on SQLite or PostgreSQL.

A table is built under a temporary name with ``CREATE TABLE ... AS`` and swapped in
within the same transaction, so readers see the old table or the new one, never a
half-built or missing one (both backends have transactional DDL). A view is replaced
in one transaction too. Models read the domain tables in the default schema and are
created beside them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from stripe_pipeline.db.engine import begin_write
from stripe_pipeline.model.project import Model, ModelError, Project
from stripe_pipeline.model.render import render_model

TEMP_SUFFIX = "__building"


@dataclass(frozen=True)
class MaterializeResult:
    name: str
    materialized: str
    row_count: int
    sql: str


def materialize(engine: Engine, project: Project, model: Model) -> MaterializeResult:
    """Build one model; errors name the model's file and the database's complaint."""
    dialect = engine.dialect.name
    sql = render_model(model, project, dialect)
    try:
        # it inspects the catalog before it drops and creates: take SQLite's write lock
        # first, or a writer committing in between fails the build ("database is locked")
        with begin_write(engine) as conn:
            if model.materialized == "view":
                _replace_view(conn, model.name, sql)
            else:
                _replace_table(conn, model.name, sql)
            rows = conn.execute(text(f'SELECT count(*) FROM "{model.name}"')).scalar_one()
    except DBAPIError as exc:
        raise ModelError(model.path, f"failed on {dialect}: {_first_line(exc)}") from exc
    return MaterializeResult(model.name, model.materialized, int(rows), sql)


def run_project(
    engine: Engine, project: Project, names: Iterable[str] | None = None
) -> dict[str, MaterializeResult]:
    """Build the given models (default: all) in dependency order."""
    return {m.name: materialize(engine, project, m) for m in project.order(names)}


def _existing_kind(conn: Connection, name: str) -> str | None:
    inspector = inspect(conn)
    if name in inspector.get_view_names():
        return "view"
    if name in inspector.get_table_names():
        return "table"
    return None


def _drop(conn: Connection, name: str) -> None:
    kind = _existing_kind(conn, name)
    if kind is not None:
        conn.execute(text(f'DROP {kind.upper()} "{name}"'))


def _replace_table(conn: Connection, name: str, sql: str) -> None:
    temp = f"{name}{TEMP_SUFFIX}"
    conn.execute(text(f'DROP TABLE IF EXISTS "{temp}"'))
    conn.execute(text(f'CREATE TABLE "{temp}" AS {sql}'))
    _drop(conn, name)
    conn.execute(text(f'ALTER TABLE "{temp}" RENAME TO "{name}"'))


def _replace_view(conn: Connection, name: str, sql: str) -> None:
    if conn.dialect.name == "postgresql" and _existing_kind(conn, name) == "view":
        # keeps views that select from this one valid, as long as its columns only grow
        savepoint = conn.begin_nested()
        try:
            conn.execute(text(f'CREATE OR REPLACE VIEW "{name}" AS {sql}'))
            savepoint.commit()
            return
        except DBAPIError:
            savepoint.rollback()
    _drop(conn, name)
    conn.execute(text(f'CREATE VIEW "{name}" AS {sql}'))


def _first_line(exc: DBAPIError) -> str:
    message = str(exc.orig) if exc.orig is not None else str(exc)
    return message.strip().splitlines()[0] if message.strip() else type(exc).__name__
