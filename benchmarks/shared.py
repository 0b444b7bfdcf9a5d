"""Helpers every benchmark uses, kept in one place so their numbers mean the same thing.

Scripts put the repository root on ``sys.path`` and import ``benchmarks.shared``.
"""

from __future__ import annotations

import math
import os
import resource
import socket
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

# the PostgreSQL server benchmarks create their throwaway databases on (trust auth)
PG_ADMIN = os.environ.get(
    "STRIPE_PIPELINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1): a value that was measured, never an
    interpolation between two."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def peak_rss_mb() -> float:
    """Peak RSS of this process image in MB (VmHWM; ``ru_maxrss`` would carry a forking
    parent's peak over ``exec``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def fresh_database(sqlite: bool, tmp: Path) -> tuple[str, Callable[[], None] | None]:
    """A new, migrated app database (a SQLite file under ``tmp`` or a PostgreSQL database
    on ``PG_ADMIN``'s server) and how to drop it (``None`` for SQLite)."""
    from sqlalchemy import create_engine, text

    from stripe_pipeline.db import migrate
    from stripe_pipeline.db.engine import make_engine

    drop: Callable[[], None] | None = None
    if sqlite:
        url = f"sqlite:///{tmp / f'bench-{uuid.uuid4().hex[:8]}.db'}"
    else:
        name = f"sp_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url, drop
