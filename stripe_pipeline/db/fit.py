"""Make values fit the columns they go to, so recording something never fails on size.

Used where the values describe something that went wrong (tickets, audit rows): a
Stripe id of 300 characters in a payload must not make the record of its failure
fail too. PostgreSQL enforces ``VARCHAR(n)`` and refuses NUL characters in text;
SQLite does neither, so without this the two databases would disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from sqlalchemy import String, Table

ELLIPSIS = "…"


def clip(value: str, length: int | None) -> str:
    """``value`` without NUL characters, cut to ``length`` characters (marked with …)."""
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    if length is not None and len(value) > length:
        return value[: length - 1] + ELLIPSIS
    return value


@cache
def _text_columns(table: Table) -> dict[str, int | None]:
    return {c.name: c.type.length for c in table.c if isinstance(c.type, String)}


def fit_row(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every string for a ``VARCHAR``/``TEXT`` column made to fit it."""
    limits = _text_columns(table)
    fitted = dict(values)
    for name, value in values.items():
        if isinstance(value, str) and name in limits:
            limit = limits[name]
            if (limit is not None and len(value) > limit) or "\x00" in value:
                fitted[name] = clip(value, limit)
    return fitted
