"""What an applied batch hands to its follow-up work: the rows it changed.

Which parser reads which event type is declared per resource in
``stripe_pipeline.catalog``; this module only holds the post-apply hook point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row an applied batch changed, as the audit log and post-apply hooks see it."""

    table: str
    object_type: str
    object_id: str
    stripe_event_id: str
    before: dict[str, Any] | None
    after: dict[str, Any]


PostApplyHook = Callable[["Connection", list[RowChange]], None]
_POST_APPLY_HOOKS: list[PostApplyHook] = []


def register_post_apply_hook(hook: PostApplyHook) -> PostApplyHook:
    """Extension point for follow-up work on applied changes (e.g. dunning of failed payments).

    Hooks run inside the batch's transaction, after the domain rows and the audit
    log are written, with every changed row (filter on ``table`` and ``after``: a
    payment whose status turned ``requires_payment_method`` / ``failed``, an invoice
    whose ``attempt_count`` grew). A hook that raises fails the batch's write, which
    then falls back to one event at a time, so only the events whose changes the
    hook refuses fail. Usable as a decorator.
    """
    if hook not in _POST_APPLY_HOOKS:
        _POST_APPLY_HOOKS.append(hook)
    return hook


def unregister_post_apply_hook(hook: PostApplyHook) -> None:
    if hook in _POST_APPLY_HOOKS:
        _POST_APPLY_HOOKS.remove(hook)


def post_apply_hooks() -> tuple[PostApplyHook, ...]:
    return tuple(_POST_APPLY_HOOKS)
