"""The PostgreSQL runtime role: what the receiver and the Dagster runs may do.

The role that owns the tables (it runs the migrations) can do anything to them,
including ``ALTER TABLE audit_log DISABLE TRIGGER`` and then rewriting history. The
receiver and the runs therefore connect as a separate role that owns nothing of the
schema: read and write on the app tables, ``SELECT, INSERT`` only on ``audit_log``
(no ``UPDATE``, ``DELETE``, ``TRUNCATE`` or ``TRIGGER``, and not being the owner it
cannot ``ALTER`` the table or its triggers), ``SELECT`` on ``alembic_version``.
``CREATE`` on the schema lets it build the SQL models' tables and views (which it
then owns); it grants nothing on the tables the owner created.

``stripe-pipeline db grant-runtime ROLE`` runs these statements as the owner; they
are idempotent, and default privileges extend them to tables later migrations add.
"""

from __future__ import annotations

from sqlalchemy import Connection

from stripe_pipeline.db.models import metadata

APPEND_ONLY_TABLES = ("audit_log",)
READ_ONLY_TABLES = ("alembic_version",)
RUNTIME_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


def runtime_grants(role: str, schema: str = "public") -> list[str]:
    """The GRANT statements that make ``role`` the runtime role (quoted identifiers)."""
    r, s = _quote(role), _quote(schema)
    read_write = [
        _quote(t.name) for t in metadata.sorted_tables if t.name not in APPEND_ONLY_TABLES
    ]
    statements = [
        f"GRANT USAGE, CREATE ON SCHEMA {s} TO {r}",
        f"GRANT {RUNTIME_TABLE_PRIVILEGES} ON {', '.join(f'{s}.{t}' for t in read_write)} TO {r}",
    ]
    for table in APPEND_ONLY_TABLES:
        t = f"{s}.{_quote(table)}"
        statements += [
            f"REVOKE ALL ON {t} FROM {r}",
            f"GRANT SELECT, INSERT ON {t} TO {r}",
        ]
    for table in READ_ONLY_TABLES:
        t = f"{s}.{_quote(table)}"
        statements += [f"REVOKE ALL ON {t} FROM {r}", f"GRANT SELECT ON {t} TO {r}"]
    statements += [
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        # tables and sequences that later migrations create (as the role running this)
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT {RUNTIME_TABLE_PRIVILEGES} ON TABLES TO {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT USAGE, SELECT ON SEQUENCES TO {r}",
    ]
    return statements


def grant_runtime(conn: Connection, role: str, schema: str = "public") -> list[str]:
    """Run ``runtime_grants`` (as the owner of the schema's tables); returns them."""
    if conn.dialect.name != "postgresql":
        raise ValueError("a runtime role exists on PostgreSQL only (SQLite has no roles)")
    exists = conn.exec_driver_sql(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = %(role)s", {"role": role}
    ).first()
    if exists is None:
        raise ValueError(f"role {role!r} does not exist: CREATE ROLE {_quote(role)} LOGIN first")
    if exists[0]:
        raise ValueError(f"role {role!r} is a superuser: it could do anything; use a plain role")
    owner = conn.exec_driver_sql(
        "SELECT tableowner FROM pg_tables WHERE schemaname = %(schema)s "
        "AND tablename = 'audit_log'",
        {"schema": schema},
    ).scalar()
    if owner == role:
        raise ValueError(f"role {role!r} owns the tables: the runtime role must not")
    statements = runtime_grants(role, schema)
    for statement in statements:
        conn.exec_driver_sql(statement)
    return statements


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
