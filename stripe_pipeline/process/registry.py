"""Which function turns which Stripe event type into domain rows.

Handlers register by exact type (``"charge.refunded"``) or by type prefix
(``"customer.subscription.*"``), as dj-stripe's ``@webhooks.handler`` does, so adding
a type is one decorated function. The most specific registration wins: exact type,
then the longest prefix. Types nobody registered are kept and marked ignored.

A handler only parses: it returns :class:`RowWrite` values and never touches the
database, so a whole batch is parsed first and written set-based afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stripe_pipeline.process.events import QueuedEvent

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from stripe_pipeline.process.refunds import RefundSource


@dataclass(frozen=True, slots=True)
class RowWrite:
    """What one event says about one row: ``values`` are columns of that table's spec."""

    table: str
    key: str
    values: dict[str, Any]


@dataclass(slots=True)
class EventContext:
    """A claimed event as handlers see it: its object, time, and the optional peers."""

    event: QueuedEvent
    obj: dict[str, Any]
    refund_source: RefundSource | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def event_type(self) -> str:
        return self.event.event_type

    @property
    def created(self) -> int:
        return self.event.stripe_created

    @property
    def livemode(self) -> bool:
        mode = self.obj.get("livemode", self.event.payload.get("livemode", False))
        return bool(mode)


Handler = Callable[[EventContext], Iterable[RowWrite]]

_EXACT: dict[str, Handler] = {}
_PREFIX: dict[str, Handler] = {}


def handles(*event_types: str) -> Callable[[Handler], Handler]:
    """Register a handler for exact types and/or ``"prefix.*"`` patterns."""

    def register(handler: Handler) -> Handler:
        for pattern in event_types:
            if pattern.endswith(".*"):
                table, name = _PREFIX, pattern[:-1]  # keep the dot: "charge." != "chargeback"
            else:
                table, name = _EXACT, pattern
            if name in table and table[name] is not handler:
                raise ValueError(f"two handlers for {pattern!r}")
            table[name] = handler
        return handler

    return register


def handler_for(event_type: str) -> Handler | None:
    """The most specific handler of a type, or ``None`` (the event is ignored)."""
    found = _EXACT.get(event_type)
    if found is not None:
        return found
    best = ""
    for prefix in _PREFIX:
        if event_type.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return _PREFIX.get(best) if best else None


def registered_types() -> dict[str, list[str]]:
    """Exact types and prefixes with handlers (for docs and run metadata)."""
    return {"exact": sorted(_EXACT), "prefix": sorted(p + "*" for p in _PREFIX)}


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
