"""What every CLI subcommand shares: the database, the operator, argument types, output.

Handlers return an exit code; database errors propagate to ``cli.main``, which prints
them cleanly.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine

from stripe_pipeline.config import load_settings
from stripe_pipeline.db import migrate
from stripe_pipeline.db.engine import make_engine

EXIT_FAILURE = 1


def app_engine() -> Engine:
    """The configured database; the embedded SQLite one migrates itself."""
    settings = load_settings()
    engine = make_engine(settings.database_url)
    migrate.ensure_schema(engine, auto_migrate=settings.is_embedded_sqlite)
    return engine


def default_actor() -> str:
    try:
        return f"operator:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "operator:cli"


# integer arguments end up in BIGINT columns: a larger one is a usage error, not a
# driver traceback
MAX_INT = 2**63 - 1


def _bounded(number: int) -> int:
    if number > MAX_INT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INT}")
    return number


def timestamp(value: str) -> int:
    """Epoch seconds or an ISO date/time (UTC unless it says otherwise)."""
    if value.isascii() and value.isdigit():
        return _bounded(int(value))
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not a Unix time or ISO date (e.g. 2025-01-31T12:00:00Z)"
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return _bounded(number)


def event_ref(value: str) -> str:
    """A row id (digits, within BIGINT) or a Stripe event id."""
    if value.isascii() and value.isdigit():
        _bounded(int(value))
    return value


def print_json(value: Any) -> None:
    print(json.dumps(value, default=str, indent=2, sort_keys=True))


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FAILURE
