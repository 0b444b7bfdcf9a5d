"""The unit of work handed from the queue to the appliers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """A claimed ``stripe_events`` row: enough to apply it and to order it."""

    id: int
    stripe_event_id: str
    event_type: str
    stripe_created: int
    retry_count: int
    payload: dict[str, Any]
