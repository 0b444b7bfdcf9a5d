"""API objects through the processing parsers, so a compared or repaired row is built
exactly as an event-built one (same status vocabulary, units, API-version handling).

Each listed resource is read as if an ``*.updated`` event of that object had arrived
at the observation time: the handler registry picks the same parser processing uses.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from stripe_pipeline.process.events import QueuedEvent
from stripe_pipeline.process.registry import EventContext, Handler, RowWrite, handler_for

# resource -> (event type read as, table written)
READ_AS: dict[str, tuple[str, str]] = {
    "payment_intents": ("payment_intent.updated", "stripe_payments"),
    "charges": ("charge.updated", "stripe_payments"),
    "refunds": ("refund.updated", "stripe_refunds"),
    "disputes": ("charge.dispute.updated", "stripe_disputes"),
    "subscriptions": ("customer.subscription.updated", "stripe_subscriptions"),
    "invoices": ("invoice.updated", "stripe_invoices"),
}
REPAIR_EVENT_PREFIX = "reconciliation"


@cache
def _handler(resource: str) -> Handler:
    import stripe_pipeline.process.resources  # noqa: F401 - registers every handler

    event_type = READ_AS[resource][0]
    handler = handler_for(event_type)
    if handler is None:
        raise LookupError(f"no processing parser for {event_type}")
    return handler


def row_from_api_object(
    resource: str, obj: dict[str, Any], *, observed_at: int, event_id: str = REPAIR_EVENT_PREFIX
) -> RowWrite:
    """The row processing would write for this object (raises like a parser on bad shapes)."""
    event_type, table = READ_AS[resource]
    livemode = bool(obj.get("livemode", False))
    event = QueuedEvent(
        id=0,
        stripe_event_id=event_id,
        event_type=event_type,
        stripe_created=observed_at,
        retry_count=0,
        payload={
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created": observed_at,
            "livemode": livemode,
            "data": {"object": obj},
        },
    )
    for write in _handler(resource)(EventContext(event, obj)):
        if write.table == table:
            return write
    raise LookupError(f"the {event_type} parser wrote no {table} row")
