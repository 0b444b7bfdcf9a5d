"""Support tickets for dead-lettered events: what a ticket is about, keyed by cause.

Processing dead-letters an event (a permanent failure, or retries used up) and asks
this module for its ticket: one open ticket per issue and object (the payment, else
the subscription, the customer, the event's object), or per issue and root-cause
fingerprint when the event names no usable object. The payload may be the very thing
that is broken, so everything here tolerates any shape. Opening the ticket, and the
savepoints around it, stay with the runner.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from stripe_pipeline.db.statuses import IssueType
from stripe_pipeline.support.notify import Notification
from stripe_pipeline.support.tickets import TicketRequest

log = logging.getLogger(__name__)


class DeadLetter(Protocol):
    """The event a ticket is opened for (``process.events.QueuedEvent``)."""

    id: int
    event_type: str
    stripe_event_id: str
    payload: Any


# events that move money or carry a deadline: a dead letter here is critical and notifies
CRITICAL_EVENT_PREFIXES = (
    "payment_intent.",
    "charge.",
    "invoice.paid",
    "invoice.payment_",
    "refund.",
)


# what varies between occurrences of one cause: Stripe-style ids (prefix_..., with a
# digit somewhere: ``payment_intent`` is a word, ``pi_3Mt0a`` an id), hex runs, numbers
_STRIPE_ID = re.compile(r"\b[A-Za-z]+(?:_[A-Za-z0-9]+)+\b")
_VARYING = (
    (re.compile(r"\b[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"\d+"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def _id_or_word(match: re.Match[str]) -> str:
    return "<id>" if any(c.isdigit() for c in match.group()) else match.group()


def normalized_message(message: str, limit: int = 300) -> str:
    """The message without what varies between occurrences of one cause."""
    message = _STRIPE_ID.sub(_id_or_word, message)
    for pattern, replacement in _VARYING:
        message = pattern.sub(replacement, message)
    return message.strip()[:limit]


def fingerprint(exception: str, message: str) -> str:
    """Root cause of a failure: exception class and normalized message, hashed (16 hex)."""
    text = f"{exception}|{normalized_message(message)}"
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


_PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


def merged_request(requests: list[TicketRequest]) -> TicketRequest:
    """The requests of one cause in one batch as one: their events, count and top priority."""
    if len(requests) == 1:
        return requests[0]
    return replace(
        requests[0],
        priority=max((r.priority for r in requests), key=_PRIORITY_RANK.__getitem__),
        event_ids=tuple(i for r in requests for i in r.event_ids),
        occurrences=sum(r.occurrences for r in requests),
    )


def _ascii(value: str) -> str:
    return value.encode("ascii", "backslashreplace").decode("ascii")


def bare_request(request: TicketRequest) -> TicketRequest:
    """The ticket without anything taken from the payload but escaped ids."""
    return TicketRequest(
        issue_type=request.issue_type,
        dedupe_key=_ascii(request.dedupe_key),
        title=f"{request.issue_type}: events could not be described (see their error_context)",
        priority=request.priority,
        stripe_event_id=_ascii(request.stripe_event_id) if request.stripe_event_id else None,
        event_ids=tuple(_ascii(i) for i in request.event_ids),
        occurrences=request.occurrences,
        details={"bare": True},
    )


def ticket_priority(event_type: str) -> str:
    """``critical`` for events that move money or carry a deadline, else ``high``."""
    return "critical" if event_type.startswith(CRITICAL_EVENT_PREFIXES) else "high"


# what a dead letter's ticket is about, most specific first: (link, name in the key)
_SUBJECTS = (
    ("payment_intent_id", "payment"),
    ("subscription_id", "subscription"),
    ("customer_id", "customer"),
    ("object_id", "object"),
)
# longest id a ticket groups by and stores (the ticket columns are VARCHAR(255))
MAX_ID_LENGTH = 255


def usable_id(value: Any) -> bool:
    """A Stripe id a ticket can be keyed and searched by: short, printable text."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable()


def ticket_for(event: DeadLetter, issue_type: str, context: Mapping[str, Any]) -> TicketRequest:
    """The support ticket of one dead-lettered event, keyed by its cause.

    One open ticket per issue and object (the payment, else the subscription, the
    customer, the event's object); an event naming no usable id is keyed by issue
    and root-cause fingerprint (exception class and message without ids and numbers).
    Ids that are not usable (over-long, unprintable) are left out of the columns and
    shown cut short in ``details.unusable_ids``.
    """
    links = ticket_links(event.payload)
    usable = {k: v for k, v in links.items() if usable_id(v)}
    exception = str(context.get("exception") or "unknown")
    message = str(context.get("message") or "")
    short = exception.rpartition(".")[2]
    what = (
        "failed permanently"
        if issue_type == IssueType.EVENT_PERMANENT_ERROR
        else "exhausted their retries"
    )
    details: dict[str, Any] = {
        "event_row_id": event.id,
        "event_type": event.event_type,
        "object_id": usable.get("object_id"),
        "attempt": context.get("attempt"),
        "error_kind": context.get("kind"),
        "exception": exception,
        "message": message,
    }
    unusable = {k: _preview(v) for k, v in links.items() if k not in usable}
    if unusable:
        details["unusable_ids"] = unusable
    subject = next(((name, usable[k]) for k, name in _SUBJECTS if k in usable), None)
    if subject is not None:
        name, object_id = subject
        key = f"{issue_type}:{name}:{object_id}"
        shown = _object_kind(event.payload) if name == "object" else name
        title = f"Events of {shown} {object_id} {what} ({short})"
        details["grouped_by"] = name
    else:
        cause = fingerprint(exception, message)
        key = f"{issue_type}:cause:{cause}"
        title = f"Events {what}: {short}: {normalized_message(message, 200)}"
        details["grouped_by"] = "cause"
        details["fingerprint"] = cause
    return TicketRequest(
        issue_type=issue_type,
        dedupe_key=key,
        title=title,
        priority=ticket_priority(event.event_type),
        payment_intent_id=usable.get("payment_intent_id"),
        subscription_id=usable.get("subscription_id"),
        customer_id=usable.get("customer_id"),
        stripe_event_id=event.stripe_event_id,
        details=details,
        event_ids=(event.stripe_event_id,),
    )


def _object_kind(payload: Any) -> str:
    """``data.object.object`` (dispute, invoice, ...) when it is a plain word."""
    try:
        kind = payload["data"]["object"]["object"]
    except (KeyError, TypeError):
        return "object"
    return kind if isinstance(kind, str) and kind.isidentifier() and len(kind) <= 64 else "object"


def _preview(value: str, keep: int = 40) -> str:
    """An unusable id cut short for a person to recognise it."""
    shown = value[:keep].encode("ascii", "backslashreplace").decode("ascii")
    return f"{shown}… ({len(value)} characters)" if len(value) > keep else shown


def dead_letter_notification(
    ticket_id: int, request: TicketRequest, event: DeadLetter, context: Mapping[str, Any]
) -> Notification:
    """What a new critical dead-letter ticket tells people."""
    # ids and classes only: no payload, no message text (it may quote payload values)
    details = {
        "ticket_id": ticket_id,
        "issue_type": request.issue_type,
        "event_type": event.event_type,
        "stripe_event_id": event.stripe_event_id,
        "payment_intent_id": request.payment_intent_id,
        "subscription_id": request.subscription_id,
        "exception": context.get("exception"),
        "attempt": context.get("attempt"),
    }
    body = (
        f"Support ticket #{ticket_id} ({request.issue_type}): {request.title}. "
        f"Re-queue with `stripe-pipeline tickets retry {ticket_id}` once the cause is fixed."
    )
    return Notification(request.title, body, request.priority, details)


def _id_of(value: Any) -> str | None:
    """A Stripe reference given as an id or as an expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def ticket_links(payload: Any) -> dict[str, str]:
    """Payment, subscription and customer ids derivable from an event payload.

    Tolerant by design: the payload may be the very thing that is broken.
    """
    links: dict[str, str] = {}
    try:
        obj = payload.get("data", {}).get("object", {}) if isinstance(payload, Mapping) else {}
        if not isinstance(obj, Mapping):
            return links
        kind, oid = obj.get("object"), _id_of(obj)
        if oid:
            links["object_id"] = oid
        if kind == "payment_intent" and oid:
            links["payment_intent_id"] = oid
        elif kind == "subscription" and oid:
            links["subscription_id"] = oid
        elif kind == "customer" and oid:
            links["customer_id"] = oid
        pi = _id_of(obj.get("payment_intent"))
        if pi:
            links.setdefault("payment_intent_id", pi)
        if kind == "charge" and oid:
            links.setdefault("payment_intent_id", oid)  # legacy charge without a PI
        if kind in ("dispute", "refund"):
            charge = _id_of(obj.get("charge"))
            if charge:
                links.setdefault("payment_intent_id", charge)
        sub = _id_of(obj.get("subscription"))
        if not sub:
            parent = obj.get("parent")
            if isinstance(parent, Mapping):
                details = parent.get("subscription_details")
                if isinstance(details, Mapping):
                    sub = _id_of(details.get("subscription"))
        if sub:
            links.setdefault("subscription_id", sub)
        customer = _id_of(obj.get("customer"))
        if customer:
            links.setdefault("customer_id", customer)
    except Exception:  # never let a broken payload stop the escalation itself
        log.debug("could not derive ticket links", exc_info=True)
    return links
