"""Ordering of events about one object: Stripe's ``created``, then lifecycle stage.

Stripe stamps events with whole seconds, and one API call often emits several
events about one object within the same second (``invoice.created``,
``invoice.finalized``, ``invoice.paid``). Ordering those by event id would be
arbitrary, so ties on ``created`` are broken by how far along its lifecycle each
event puts the object, and only then by event id (stable, but meaningless).
"""

from __future__ import annotations

# the last segment of the event type -> stage; anything else is an ordinary update (1)
_STAGES: dict[str, int] = {
    "created": 0,
    "opened": 0,
    "succeeded": 2,
    "funds_withdrawn": 2,
    "paid": 3,
    "payment_succeeded": 3,
    "refunded": 3,
    "completed": 3,
    "funds_reinstated": 3,
    "canceled": 4,
    "closed": 4,
    "voided": 4,
    "marked_uncollectible": 4,
    "expired": 4,
    "async_payment_succeeded": 4,
    "async_payment_failed": 4,
    "detached": 4,
    "deleted": 5,
}
ORDINARY = 1


def lifecycle_rank(event_type: str) -> int:
    """Stage of an event type, used only to order events of the same second."""
    return _STAGES.get(event_type.rsplit(".", 1)[-1], ORDINARY)
