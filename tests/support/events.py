"""Build Stripe event envelopes around Stripe objects, as Stripe would send them.

``make_event`` gives the event dict (sign it with the receiver's helpers to POST
it); ``queued`` turns one into the ``QueuedEvent`` the appliers receive.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from stripe_pipeline.process.events import QueuedEvent

CURRENT_API_VERSION = "2025-03-31.basil"
LEGACY_API_VERSION = "2017-08-15"

_counter = itertools.count(1)


def make_event(
    event_type: str,
    obj: dict[str, Any],
    created: int,
    event_id: str | None = None,
    api_version: str = CURRENT_API_VERSION,
    *,
    livemode: bool = False,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Stripe ``event`` object wrapping a deep copy of ``obj``."""
    data: dict[str, Any] = {"object": copy.deepcopy(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": event_id or f"evt_test{next(_counter):010d}",
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def queued(event: dict[str, Any], row_id: int | None = None, retry_count: int = 0) -> QueuedEvent:
    """The claimed ``stripe_events`` row of an event (id defaults to a fresh number)."""
    return QueuedEvent(
        id=row_id if row_id is not None else next(_counter),
        stripe_event_id=event["id"],
        event_type=event["type"],
        stripe_created=event["created"],
        retry_count=retry_count,
        payload=event,
    )
