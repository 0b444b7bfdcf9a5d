"""The ``stripe-pipeline`` command line.

Each subcommand is a thin shell over a domain function; errors become a clear
message and a non-zero exit, never a traceback, for bad arguments or an
unreachable database.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from stripe_pipeline import __version__
from stripe_pipeline.commands.common import positive_int
from stripe_pipeline.config import ENVIRONMENT, ConfigError, load_settings, redact_url
from stripe_pipeline.db import migrate
from stripe_pipeline.db.engine import make_engine

EXIT_USAGE = 2
EXIT_FAILURE = 1


class CommandError(Exception):
    """A failure the user can act on; printed without a traceback."""


def _engine():
    return make_engine(load_settings().database_url)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    engine = _engine()
    migrate.upgrade(engine, args.revision)
    print(f"database at {migrate.current_revision(engine)}")
    return 0


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    engine = _engine()
    migrate.downgrade(engine, args.revision)
    print(f"database at {migrate.current_revision(engine) or 'base (empty)'}")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    engine = _engine()
    current = migrate.current_revision(engine)
    head = migrate.head_revision()
    state = "up to date" if current == head else f"behind head {head}"
    print(f"{current or 'base (empty)'} ({state})")
    return 0 if current == head else EXIT_FAILURE


def cmd_db_grant_runtime(args: argparse.Namespace) -> int:
    from stripe_pipeline.db.roles import grant_runtime, runtime_grants

    if args.print_only:
        print(";\n".join(runtime_grants(args.role, args.schema)) + ";")
        return 0
    engine = _engine()
    if engine.dialect.name != "postgresql":
        raise CommandError("a runtime role exists on PostgreSQL only (SQLite has no roles)")
    try:
        with engine.begin() as conn:
            count = len(grant_runtime(conn, args.role, args.schema))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    print(f"granted the runtime privileges to {args.role} ({count} statements)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from receiver.server import serve

    serve(host=args.host, port=args.port, workers=args.workers, threads=args.threads)
    return 0


def build_parser() -> argparse.ArgumentParser:
    env_help = "\n".join(f"  {name}: {text}" for name, text in ENVIRONMENT.items())
    parser = argparse.ArgumentParser(
        prog="stripe-pipeline",
        description="Stripe webhook and reconciliation pipeline.",
        epilog=f"environment:\n{env_help}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = commands.add_parser("db", help="database schema migrations (Alembic)")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_commands.add_parser("upgrade", help="migrate the schema up (default: to head)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)
    down = db_commands.add_parser("downgrade", help="migrate the schema down (default: one step)")
    down.add_argument("revision", nargs="?", default="-1")
    down.set_defaults(func=cmd_db_downgrade)
    current = db_commands.add_parser("current", help="show the schema revision (exit 1 if behind)")
    current.set_defaults(func=cmd_db_current)
    grant = db_commands.add_parser(
        "grant-runtime",
        help="give a PostgreSQL role the runtime privileges (run as the table owner)",
        description="Grant ROLE what the receiver and the Dagster runs need and no more: "
        "read/write on the app tables, SELECT and INSERT only on audit_log, SELECT on "
        "alembic_version, CREATE on the schema for the SQL models. Run it as the role "
        "that owns the tables (the one running `db upgrade`); idempotent.",
    )
    grant.add_argument("role", help="an existing role that is neither owner nor superuser")
    grant.add_argument("--schema", default="public")
    grant.add_argument(
        "--print", dest="print_only", action="store_true", help="print the SQL, change nothing"
    )
    grant.set_defaults(func=cmd_db_grant_runtime)

    serve = commands.add_parser("serve", help="run the webhook receiver under gunicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=positive_int, default=8000)
    serve.add_argument("--workers", type=positive_int, default=2)
    serve.add_argument("--threads", type=positive_int, default=4)
    serve.set_defaults(func=cmd_serve)

    for register in _extension_commands():
        register(commands)
    return parser


def _extension_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands owned by other areas (processing, support, reconciliation, privacy, demo)."""
    from stripe_pipeline.commands import events, privacy, process, reconcile, tickets
    from stripe_pipeline.devtools.cli import add_dev_command  # argparse only: no demo imports

    return [
        process.add_process_command,
        events.add_events_commands,
        tickets.add_tickets_commands,
        reconcile.add_reconcile_command,
        privacy.add_privacy_commands,
        add_dev_command,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except migrate.SchemaNotReady as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OperationalError as exc:
        url = redact_url(load_settings().database_url)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        print(f"error: database unreachable ({url}): {reason}", file=sys.stderr)
        return EXIT_FAILURE
    except SQLAlchemyError as exc:
        # the driver's first line only: never the statement or its parameters (payload parts)
        orig = getattr(exc, "orig", None)
        reason = str(orig).strip().splitlines()[0] if orig is not None and str(orig) else ""
        print(
            f"error: database error: {type(exc).__name__}: {reason}".rstrip(": "), file=sys.stderr
        )
        return EXIT_FAILURE
    except OverflowError:
        print("error: a number is out of range", file=sys.stderr)
        return EXIT_USAGE
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
