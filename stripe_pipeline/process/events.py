"""The unit of work handed from the queue to the appliers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """A claimed ``stripe_events`` row: enough to apply it and to order it.

    ``payload`` is ``None`` until loaded: on PostgreSQL the claim leaves payloads in the
    database, where most events are extracted (``extract_sql``); ``queue.with_payloads``
    loads them for the events that go through Python.
    """

    id: int
    stripe_event_id: str
    event_type: str
    stripe_created: int
    retry_count: int
    payload: dict[str, Any] | None
