"""The append-only audit trail of payment operations and state changes.

Only inserts exist here; the database refuses UPDATE and DELETE on ``audit_log``.
Text values are made to fit their columns: an audit row about a hostile payload (an
id of 300 characters) is written, not refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, insert

from stripe_pipeline.db.fit import fit_row
from stripe_pipeline.db.models import AuditLog

AUDIT_LOG = AuditLog.__table__


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One state change or operation: who (an event id, an operator, a job), what, before/after."""

    actor: str
    action: str
    object_type: str
    object_id: str | None = None
    stripe_event_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    details: dict[str, Any] | None = None


def record(conn: Connection, entries: Sequence[AuditEntry]) -> int:
    """Append entries in one statement; returns how many were written."""
    if not entries:
        return 0
    # shallow: dataclasses.asdict deep-copies every before/after dict (0.1 ms per entry)
    names = [f.name for f in fields(AuditEntry)]
    rows = [fit_row(AUDIT_LOG, {n: getattr(e, n) for n in names}) for e in entries]
    conn.execute(insert(AUDIT_LOG), rows)
    return len(entries)
