"""``column IN (values)`` for batches, the same way everywhere.

PostgreSQL gets one array parameter (``= ANY(:array)``): parsed and planned once,
whatever the batch size, instead of a thousand bound values. SQLite gets a plain IN
list; callers with unbounded lists split them with :func:`chunked` (SQLite caps the
bound parameters of one statement).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import ARRAY, BigInteger, Connection, String, any_, literal
from sqlalchemy.sql.elements import ColumnElement

T = TypeVar("T")
IN_CHUNK = 2000


def in_list(conn: Connection, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN values`` (ints or strings), as one array parameter on PostgreSQL."""
    if conn.dialect.name == "postgresql":
        element = BigInteger() if values and isinstance(values[0], int) else String()
        return column == any_(literal(list(values), ARRAY(element)))
    return column.in_(list(values))


def chunked(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
