"""Hostile deliveries for the mixed-stream fuzz test, as a list of builders.

Each builder makes one delivery (path, body, headers) from a random source and says
what must become of it: refused at the receiver (any 4xx), stored and ignored
(unknown event type), or stored and dead-lettered into the ticket of its cause. A
``group`` names the cause: every delivery of one group must end on one ticket, and
different groups on different tickets; ``ticket_key`` is the expected dedupe key when
the cause is an object (payment, dispute, ...).

To add a case (for example a signed event whose payload the appliers must refuse),
append a ``Hostile`` to ``HOSTILE`` whose ``build`` returns a ``Delivery``.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stripe_pipeline.land.signature import sign

PERMANENT = "event_permanent_error"


@dataclass(frozen=True)
class Delivery:
    body: bytes
    signature: str | None
    path: str = "/webhooks/stripe"
    event_id: str | None = None  # the event id, when the body is an event
    expect: str = "rejected"  # rejected | ignored | dead_letter | applied
    group: str | None = None
    ticket_key: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hostile:
    name: str
    weight: int
    build: Callable[[random.Random, str], Delivery]


def event(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_fz_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": event_type,
        "data": {"object": obj},
    }


def signed(doc: dict[str, Any], secret: str, **kw: Any) -> Delivery:
    body = json.dumps(doc).encode()
    return Delivery(body, sign(body, secret), event_id=doc["id"], **kw)


def payment(n: int | str, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"pi_fz_{n}",
        "object": "payment_intent",
        "amount": 1000,
        "currency": "usd",
        "status": "succeeded",
        "customer": f"cus_fz_{n}",
        **fields,
    }


# ---- refused at the receiver


def _long_event_id(rng: random.Random, secret: str) -> Delivery:
    doc = event("payment_intent.succeeded", payment(rng.random()))
    doc["id"] = "evt_" + "x" * rng.randint(252, 400)
    return signed(doc, secret)


def _long_object_id(rng: random.Random, secret: str) -> Delivery:
    return signed(
        event("customer.created", {"id": "cus_" + "c" * 300, "object": "customer"}), secret
    )


def _wrong_secret(rng: random.Random, secret: str) -> Delivery:
    return signed(event("payment_intent.succeeded", payment(uuid.uuid4().hex)), "whsec_someone")


def _v0_only(rng: random.Random, secret: str) -> Delivery:
    body = json.dumps(event("payment_intent.succeeded", payment(uuid.uuid4().hex))).encode()
    return Delivery(body, sign(body, secret).replace("v1=", "v0="))


def _garbled_header(rng: random.Random, secret: str) -> Delivery:
    body = json.dumps(event("payment_intent.succeeded", payment(uuid.uuid4().hex))).encode()
    header = rng.choice(["t=abc,v1=00", "", "v1=" + "0" * 64, "t=1," * 50, "t=\u00e9,v1=1"])
    return Delivery(body, header or None)


def _tampered_body(rng: random.Random, secret: str) -> Delivery:
    delivery = signed(event("payment_intent.succeeded", payment(uuid.uuid4().hex)), secret)
    return Delivery(delivery.body.replace(b"1000", b"9000"), delivery.signature)


def _future_timestamp(rng: random.Random, secret: str) -> Delivery:
    body = json.dumps(event("payment_intent.succeeded", payment(uuid.uuid4().hex))).encode()
    ahead = rng.choice([600, 3600, 10**9, 10**30])
    return Delivery(body, sign(body, secret, int(time.time()) + ahead))


def _unknown_endpoint(rng: random.Random, secret: str) -> Delivery:
    delivery = signed(event("payment_intent.succeeded", payment(uuid.uuid4().hex)), secret)
    return Delivery(delivery.body, delivery.signature, path=f"/webhooks/stripe/x{rng.random()}")


def _malformed_json(rng: random.Random, secret: str) -> Delivery:
    body = rng.choice([b"{", b'{"id": "evt_1", "object": "event"', b"[]", b"\x00", b"null"])
    return Delivery(body, sign(body.decode("utf-8", "replace"), secret))


# ---- stored, then ignored or dead-lettered


def _unknown_type(rng: random.Random, secret: str) -> Delivery:
    doc = event(f"made.up_{rng.randint(1, 5)}", {"id": f"thing_{uuid.uuid4().hex}"})
    return signed(doc, secret, expect="ignored")


def _payment_without_id(rng: random.Random, secret: str) -> Delivery:
    # no usable object: grouped by issue and root cause, whatever the event ids
    doc = event("payment_intent.succeeded", {"object": "payment_intent", "amount": 5})
    return signed(doc, secret, expect="dead_letter", group="payment-without-id")


def _broken_payment(rng: random.Random, secret: str) -> Delivery:
    # a few payments fail repeatedly (amount not an integer): one ticket per payment
    n = rng.randint(1, 3)
    doc = event("payment_intent.payment_failed", payment(f"broken{n}", amount="lots"))
    return signed(
        doc,
        secret,
        expect="dead_letter",
        group=f"broken-payment-{n}",
        ticket_key=f"{PERMANENT}:payment:pi_fz_broken{n}",
    )


def _dispute_without_charge(rng: random.Random, secret: str) -> Delivery:
    # names no charge, and a customer id too long for any column
    n = rng.randint(1, 2)
    obj = {
        "id": f"dp_fz_{n}",
        "object": "dispute",
        "amount": 100,
        "currency": "usd",
        "status": "needs_response",
        "customer": "cus_" + "l" * 300,
    }
    return signed(
        event("charge.dispute.created", obj),
        secret,
        expect="dead_letter",
        group=f"dispute-{n}",
        ticket_key=f"{PERMANENT}:object:dp_fz_{n}",
    )


HOSTILE: list[Hostile] = [
    Hostile("over-long event id", 2, _long_event_id),
    Hostile("over-long object id", 2, _long_object_id),
    Hostile("signed with another secret", 2, _wrong_secret),
    Hostile("v0 signature only", 1, _v0_only),
    Hostile("garbled signature header", 2, _garbled_header),
    Hostile("body changed after signing", 1, _tampered_body),
    Hostile("signed timestamp from the future", 2, _future_timestamp),
    Hostile("unknown endpoint", 2, _unknown_endpoint),
    Hostile("signed malformed JSON", 2, _malformed_json),
    Hostile("unknown event type", 2, _unknown_type),
    Hostile("payment without an id", 3, _payment_without_id),
    Hostile("payment that cannot be parsed", 3, _broken_payment),
    Hostile("dispute without a charge", 2, _dispute_without_charge),
]


def valid_delivery(n: int, secret: str) -> Delivery:
    """A valid event: payments, customers, and now and then a 255-character event id."""
    if n % 5 == 0:
        obj = {"id": f"cus_fz_valid{n}", "object": "customer", "email": f"c{n}@example.com"}
        doc = event("customer.updated", obj)
    else:
        doc = event("payment_intent.succeeded", payment(f"valid{n}"))
    if n % 97 == 0:
        doc["id"] = f"evt_fz_{n}_".ljust(255, "L")
    return signed(doc, secret, expect="applied")
