"""Unit tests of the receiver's building blocks: verification, parsing, limiter, audit."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import select

from receiver.abuse import InvalidRequestLimiter
from receiver.audit import DeliveryAuditBuffer
from stripe_pipeline.db.models import StripeEvent, WebhookDelivery
from stripe_pipeline.land.envelope import MalformedEvent, envelope_from_event, parse_envelope
from stripe_pipeline.land.lander import EventLander, RejectedByDatabase
from stripe_pipeline.land.signature import InvalidSignature, sign, verify_signature
from stripe_pipeline.land.store import Delivery
from tests.support.receiver_server import make_event

BODY = json.dumps(make_event("evt_unit")).encode()
NOW = int(time.time())


def v1(body: bytes, secret: str, t: int = NOW) -> str:
    return sign(body, secret, t).split("v1=")[1]


def test_any_configured_secret_verifies():
    verify_signature(BODY, sign(BODY, "whsec_old"), ["whsec_new", "whsec_old"])
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify_signature(BODY, sign(BODY, "whsec_gone"), ["whsec_new", "whsec_old"])


def test_any_v1_value_verifies_and_v0_is_ignored():
    header = f"t={NOW},v1={'f' * 64},v1={v1(BODY, 'whsec_a')}"
    verify_signature(BODY, header, ["whsec_a"])
    with pytest.raises(InvalidSignature, match="no v1 signature"):
        verify_signature(BODY, f"t={NOW},v0={v1(BODY, 'whsec_a')}", ["whsec_a"])


def test_stale_signature_is_refused_with_its_own_reason():
    header = sign(BODY, "whsec_a", NOW - 301)
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify_signature(BODY, header, ["whsec_other", "whsec_a"], tolerance=300)
    verify_signature(BODY, header, ["whsec_a"], tolerance=600)


@pytest.mark.parametrize(
    "header",
    [None, "", "garbage", "t=abc,v1=00", f"t={NOW},v1=\u00e9", f"t={NOW}"],
    ids=["none", "empty", "garbage", "bad-timestamp", "non-ascii", "no-v1"],
)
def test_missing_or_garbled_headers_are_refused(header):
    with pytest.raises(InvalidSignature):
        verify_signature(BODY, header, ["whsec_a"])


def test_forged_body_and_non_utf8_body_are_refused():
    header = sign(BODY, "whsec_a")
    with pytest.raises(InvalidSignature):
        verify_signature(BODY.replace(b"evt_unit", b"evt_evil"), header, ["whsec_a"])
    with pytest.raises(InvalidSignature, match="UTF-8"):
        verify_signature(b"\xff\xfe", header, ["whsec_a"])
    with pytest.raises(InvalidSignature, match="no webhook secret"):
        verify_signature(BODY, header, [])


def test_envelope_extracts_the_queue_columns():
    event = make_event("evt_env", account="acct_1")
    env = parse_envelope(json.dumps(event).encode())
    assert (env.stripe_event_id, env.event_type, env.api_version, env.account) == (
        "evt_env",
        "payment_intent.succeeded",
        "2025-03-31.basil",
        "acct_1",
    )
    assert env.object_id == event["data"]["object"]["id"]
    assert env.payload == event


@pytest.mark.parametrize(
    "doc",
    [
        "nope",
        [],
        {"object": "charge"},
        {**make_event(), "id": ""},
        {**make_event(), "created": -1},
        {**make_event(), "created": 2**63},
        {**make_event(), "created": True},
        {**make_event(), "data": {"object": "x"}},
    ],
)
def test_envelope_refuses_what_is_not_a_storable_event(doc):
    with pytest.raises(MalformedEvent):
        parse_envelope(json.dumps(doc) if not isinstance(doc, str) else doc)


def test_envelope_refuses_values_that_do_not_fit_their_columns():
    # refused, not stored with parts missing: what is stored can always be recorded
    too_long = {
        "id": "evt_" + "i" * 252,
        "type": "t" * 256,
        "api_version": "x" * 65,
        "account": "acct_" + "a" * 251,
    }
    for field, value in too_long.items():
        with pytest.raises(MalformedEvent, match=f"'{field}' is longer than"):
            parse_envelope(json.dumps(make_event(**{field: value})))
    event = make_event()
    event["data"]["object"]["id"] = "pi_" + "o" * 253
    with pytest.raises(MalformedEvent, match=r"'data\.object\.id' is longer than 255"):
        parse_envelope(json.dumps(event))
    with pytest.raises(MalformedEvent, match="'id' contains control characters"):
        parse_envelope(json.dumps(make_event(event_id="evt_\n1")))
    # the longest values that fit are kept; values of another type are not stored
    env = parse_envelope(
        json.dumps(make_event(event_id="evt_" + "i" * 251, api_version=7, account=None))
    )
    assert len(env.stripe_event_id) == 255 and env.api_version is None and env.account is None


def test_limiter_slides_and_is_per_address():
    clock = [0.0]
    limiter = InvalidRequestLimiter(3, clock=lambda: clock[0])
    assert [limiter.record_invalid("a") for _ in range(4)] == [False, False, False, True]
    assert limiter.is_blocked("a") and not limiter.is_blocked("b")
    assert limiter.record_invalid("b") is False
    clock[0] = 61.0  # the window has slid past every hit
    assert not limiter.is_blocked("a")
    assert limiter.record_invalid("a") is False


def test_limiter_memory_is_bounded():
    limiter = InvalidRequestLimiter(2, max_addresses=10)
    for i in range(100):
        limiter.record_invalid(f"10.0.0.{i}")
    assert len(limiter._hits) == 10


def test_audit_buffer_merges_identical_rows_and_writes_in_batches(engine):
    dropped: list[int] = []
    buffer = DeliveryAuditBuffer(engine, flush_interval=3600, max_rows=2, on_drop=dropped.append)
    flood = Delivery(
        "default", "10.1.1.1", "invalid_signature", 400, "no signature matches", body_bytes=10
    )
    for _ in range(50):
        buffer.add(flood)
    buffer.add(Delivery("default", "10.1.1.2", "too_large", 413, "big", body_bytes=99))
    buffer.add(Delivery("default", "10.1.1.3", "too_large", 413, "big"))  # over max_rows
    assert buffer.flush() == 2
    assert dropped == [1]
    with engine.connect() as conn:
        rows = conn.execute(
            select(WebhookDelivery.remote_addr, WebhookDelivery.repeat_count).order_by(
                WebhookDelivery.remote_addr
            )
        ).all()
    assert [tuple(r) for r in rows] == [("10.1.1.1", 50), ("10.1.1.2", 1)]
    buffer.close()


def test_landers_write_the_same_rows_on_every_path(engine):
    """PostgreSQL's one-statement fast path must match the portable store path."""
    fast = EventLander(engine)
    portable = EventLander(engine)
    portable.fast_path = False
    results = {}
    for name, lander in (("fast", fast), ("portable", portable)):
        event = make_event(f"evt_{name}_{uuid.uuid4().hex[:6]}", account="acct_9")
        envelope = parse_envelope(json.dumps(event))
        delivery = Delivery(
            "default",
            "10.0.0.1",
            "stored",
            200,
            None,
            envelope.stripe_event_id,
            envelope.event_type,
            123,
        )
        assert lander.land(envelope, delivery) is True
        assert lander.land(envelope, delivery) is False
        with engine.connect() as conn:
            events = StripeEvent.__table__
            ev = conn.execute(select(events).where(events.c.stripe_event_id == event["id"])).one()
            audit = conn.execute(
                select(
                    WebhookDelivery.outcome,
                    WebhookDelivery.body_bytes,
                    WebhookDelivery.remote_addr,
                    WebhookDelivery.endpoint,
                )
                .where(WebhookDelivery.stripe_event_id == event["id"])
                .order_by(WebhookDelivery.id)
            ).all()
        results[name] = (
            (
                ev.event_type,
                ev.api_version,
                ev.livemode,
                ev.account,
                ev.object_id == event["data"]["object"]["id"],
                ev.status,
                ev.retry_count,
                ev.source,
                ev.endpoint,
                ev.payload == event,
            ),
            [tuple(a) for a in audit],
        )
    assert results["fast"] == results["portable"]
    assert results["fast"][1] == [
        ("stored", 123, "10.0.0.1", "default"),
        ("duplicate", 123, "10.0.0.1", "default"),
    ]


def test_lander_refuses_payloads_the_database_cannot_hold(engine):
    """A lone surrogate: the parser and the envelope check refuse it first
    (MalformedEvent -> 400); an envelope built around both must still never reach a 500."""
    lander = EventLander(engine)
    bad_id = f"evt_\ud800{uuid.uuid4().hex[:6]}"
    doc = make_event(bad_id)
    with pytest.raises(MalformedEvent):
        parse_envelope(json.dumps(doc))
    with pytest.raises(MalformedEvent, match="control characters"):
        envelope_from_event(doc, json.dumps(doc))
    envelope = replace(envelope_from_event(make_event()), stripe_event_id=bad_id)
    with pytest.raises(RejectedByDatabase):
        lander.land(envelope, Delivery("default", None, "stored", 200))
