"""API objects through the processing parsers, so a compared or repaired row is built
exactly as an event-built one (same status vocabulary, units, API-version handling).

A listed or fetched object is read as if an event of the listing's ``read_as`` type
(``*.updated``) had arrived at the observation time: the catalog routes it to the
same parser processing uses (or to a resource's reader, for objects no event
carries on their own, such as an invoice's lines). Which of the row's columns the
object then states:

- an object that owns its row (``Listing.owns``; a fetch by id always does) states
  every reconciled column whose policy is ``NEWEST`` (``None`` included: a cleared
  field is a fact), and every other reconciled column it knows (``None`` there means
  "this payload does not say", the same way processing never erases a known value);
- an object that only refines a row another source owns (a PaymentIntent's charge)
  states only the columns its listing refines (``Listing.refines``: a charge's
  refunded amount and card), never the owner's state;
- a deleted object, which Stripe answers by id as ``{"id", "object", "deleted": true}``,
  states only that it is deleted (the resource's deletion marker): not that its email
  or name were cleared. Its deletion time is the time it was found deleted, so any
  deletion time already stored agrees with it (``Projection.deleted_stub``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stripe_pipeline.catalog.model import Catalog, EventContext, Listing, Policy, Resource, RowWrite
from stripe_pipeline.catalog.readers import deleted_stub
from stripe_pipeline.process.events import QueuedEvent
from stripe_pipeline.reconcile.window import to_unix

REPAIR_EVENT_PREFIX = "reconciliation"


@dataclass(frozen=True, slots=True)
class Projection:
    """An API object seen through one listing: its local key and the values it states."""

    key: str
    values: dict[str, Any]
    # False: the listing only refines a row another listing owns (a PaymentIntent's
    # charge), so its absence locally is reported by the owner
    owns_object: bool = True
    # the values FOLLOWS columns belong to (a card fingerprint is the charge_id's)
    anchors: dict[str, Any] = field(default_factory=dict)
    # Stripe's answer for a deleted object: it states the deletion, not when it happened
    deleted_stub: bool = False


def row_from_api_object(
    catalog: Catalog,
    resource: Resource,
    read_as: str,
    obj: dict[str, Any],
    *,
    observed_at: int,
    event_id: str = REPAIR_EVENT_PREFIX,
) -> RowWrite:
    """The row processing would write for this object (raises like a parser on bad shapes)."""
    route = catalog.reader_for(read_as)
    if route is None:
        raise LookupError(f"no parser for {read_as}")
    kind = obj.get("object")
    if kind is not None and kind not in route.objects:
        raise ValueError(f"listed a {str(kind)[:40]!r} object as {resource.object_type}")
    livemode = obj.get("livemode", False)
    event = QueuedEvent(
        id=0,
        stripe_event_id=event_id,
        event_type=read_as,
        stripe_created=observed_at,
        retry_count=0,
        payload={
            "id": event_id,
            "object": "event",
            "type": read_as,
            "created": observed_at,
            "livemode": livemode,
            "data": {"object": obj},
        },
    )
    for write in route.handler(EventContext(event, obj)):
        if write.table == resource.table_name:
            return write
    raise LookupError(f"the {read_as} parser wrote no {resource.table_name} row")


def stated(
    resource: Resource, write: RowWrite, *, refines: frozenset[str] | None = None
) -> dict[str, Any]:
    """The reconciled values a write states (see the module docstring), datetimes as
    Unix seconds. ``refines``: None for an object that owns its row, else the columns
    it may state."""
    values = {}
    for column in resource.columns:
        if not column.reconciled or column.name not in write.values:
            continue
        if refines is not None and column.name not in refines:
            continue
        value = write.values[column.name]
        if value is None and column.policy is not Policy.NEWEST:
            continue
        values[column.name] = to_unix(value) if isinstance(value, datetime) else value
    return values


def is_deleted_stub(resource: Resource, obj: dict[str, Any]) -> bool:
    """Stripe's answer for a deleted object of a resource that records deletions."""
    return resource.deleted_marker is not None and deleted_stub(obj)


def refined_by(
    resource: Resource, listing: Listing | None, obj: dict[str, Any]
) -> frozenset[str] | None:
    """None when the object owns its row (a fetch by id, without a listing, does), else
    the columns it may state: those its listing refines, or a deleted object's marker."""
    marker = resource.deleted_marker
    if marker is not None and is_deleted_stub(resource, obj):
        return frozenset({marker})
    if listing is None or listing.owns is None or listing.owns(obj):
        return None
    return frozenset(listing.refines)


def project(
    resource: Resource,
    write: RowWrite,
    *,
    refines: frozenset[str] | None = None,
    deleted_stub: bool = False,
) -> Projection:
    if not write.versioned and refines is None:
        refines = frozenset(c for c, p in resource.policies.items() if p is not Policy.NEWEST)
    values = stated(resource, write, refines=refines)
    anchors = {a: write.values.get(a) for a in resource.follows.values()}
    return Projection(write.key, values, refines is None, anchors, deleted_stub)
