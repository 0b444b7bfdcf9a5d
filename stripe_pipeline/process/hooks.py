"""What an applied batch hands to its follow-up work: the rows it changed.

Which parser reads which event type is declared per resource in
``stripe_pipeline.catalog``; the follow-up work (dunning) is a post-apply hook the
entry point passes in with its ``Processor``. Nothing registers itself here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from stripe_pipeline.support.notify import Notification


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row an applied batch changed, as the audit log and post-apply hooks see it."""

    table: str
    object_type: str
    object_id: str
    stripe_event_id: str
    before: dict[str, Any] | None
    after: dict[str, Any]


PostApplyHook = Callable[["Connection", list[RowChange]], "list[Notification]"]
"""Follow-up work on a batch's changed rows (e.g. dunning of failed payments).

A hook runs inside the batch's transaction, after the domain rows and the audit log
are written, with every changed row (filter on ``table`` and ``after``). It returns
the notifications it wants sent; the runner sends them only after the batch commits,
so a rolled-back batch never announces anything. A hook that raises fails the
batch's write, which then falls back to one event at a time, so only the events
whose changes the hook refuses fail.
"""
