"""Read model output as plain Python values that compare equal across backends."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, text


def normalize(value: Any) -> Any:
    """Decimal -> float, bool -> int, datetime -> UTC text as SQLite stores it."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def fetch_rows(engine: Engine, relation: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(text(f'SELECT * FROM "{relation}"'))
        return [{k: normalize(v) for k, v in row.items()} for row in result.mappings()]


def same_value(a: Any, b: Any, *, rel: float = 1e-6, abs_: float = 1e-3) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)
    return a == b


# ages are measured from each build's own clock: the two backends build some seconds
# apart (a minute on a loaded machine), which must not count as a different result
AGE_TOLERANCE_HOURS = 0.05


def _same(column: str, a: Any, b: Any) -> bool:
    if column.endswith("_age_hours"):
        return same_value(a, b, abs_=AGE_TOLERANCE_HOURS)
    return same_value(a, b)


def assert_same_rows(left: list[dict[str, Any]], right: list[dict[str, Any]], label: str) -> None:
    """Equal row sets, numbers within tolerance (REAL on SQLite, NUMERIC on PostgreSQL)."""
    assert len(left) == len(right), f"{label}: {len(left)} rows vs {len(right)}"
    assert not left or set(left[0]) == set(right[0]), f"{label}: columns differ"
    pending = list(right)
    for row in left:
        match = next(
            (other for other in pending if all(_same(k, row[k], other[k]) for k in row)),
            None,
        )
        assert match is not None, f"{label}: no match on the other backend for {row}"
        pending.remove(match)
