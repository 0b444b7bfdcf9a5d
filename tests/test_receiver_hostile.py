"""Hostile but well-formed requests at the live receiver (SQLite and PostgreSQL).

Validly signed events whose envelope cannot be stored as it is, signed timestamps
from the future, and clients inventing endpoint names.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.support.receiver_server import (
    INVALID_LIMIT,
    ReceiverServer,
    make_event,
    wait_for,
)

pytestmark = pytest.mark.slow


def stored(live_receiver: ReceiverServer, event_id: str) -> int:
    return live_receiver.scalar(
        "SELECT count(*) FROM stripe_events WHERE stripe_event_id = :id", id=event_id
    )


def test_envelope_values_that_cannot_be_stored_are_400_with_a_reason(
    live_receiver: ReceiverServer,
) -> None:
    client = live_receiver.client()
    base = f"evt_hostile_{uuid.uuid4().hex}"
    cases = {
        "id": make_event(base + "x" * 300),
        "type": make_event(type="payment_intent." + "s" * 250),
        "account": make_event(account="acct_" + "a" * 300),
        "api_version": make_event(api_version="2025-03-31." + "v" * 60),
        "data.object.id": make_event(
            data={"object": {"id": "pi_" + "p" * 300, "object": "payment_intent"}}
        ),
    }
    for field, event in cases.items():
        reply = client.post_event(event)
        assert reply.status == 400, (field, reply.body)
        assert reply.json() == {
            "error": "malformed",
            "reason": f"event field {field!r} is longer than "
            f"{64 if field == 'api_version' else 255} characters",
        }
        assert stored(live_receiver, event["id"]) == 0
    # the longest id that fits is stored
    longest = make_event("evt_" + uuid.uuid4().hex + "L" * 219)
    assert len(longest["id"]) == 255
    assert client.post_event(longest).status == 200
    assert stored(live_receiver, longest["id"]) == 1


@pytest.mark.parametrize("ahead", [301, 3600, 10**30])
def test_signed_timestamps_from_the_future_are_refused(
    live_receiver: ReceiverServer, ahead: int
) -> None:
    client = live_receiver.client()
    event = make_event()
    reply = client.post_event(event, timestamp=int(time.time()) + ahead)
    assert reply.status == 400
    assert reply.json() == {
        "error": "invalid_signature",
        "reason": "timestamp outside the tolerance zone",
    }
    assert stored(live_receiver, event["id"]) == 0
    # within the tolerance a clock a little ahead is fine
    assert client.post_event(event, timestamp=int(time.time()) + 60).status == 200


def test_invented_endpoint_names_are_rate_limited_and_counted_under_one_name(
    live_receiver: ReceiverServer,
) -> None:
    prober = live_receiver.client()
    names = [f"probe{uuid.uuid4().hex[:12]}" for _ in range(INVALID_LIMIT * 3)]
    statuses = [
        prober.post_event(make_event(), path=f"/webhooks/stripe/{name}").status for name in names
    ]
    # one limiter per worker (2 workers, 20 each): the first 20 cannot be over the limit
    assert statuses[:INVALID_LIMIT] == [404] * INVALID_LIMIT
    assert set(statuses) == {404, 429}

    def audited() -> int:
        return live_receiver.scalar(
            "SELECT coalesce(sum(repeat_count), 0) FROM webhook_deliveries WHERE remote_addr = :a",
            a=prober.source,
        )

    assert wait_for(lambda: audited() == len(names), timeout=5)
    rows = live_receiver.rows(
        "SELECT endpoint, outcome FROM webhook_deliveries WHERE remote_addr = :a",
        a=prober.source,
    )
    assert {r[0] for r in rows} == {"unknown"}
    assert len(rows) <= 8  # merged (per worker, outcome and flush), not one per name
    page = live_receiver.client("127.0.0.1").request("GET", "/metrics").body.decode()
    assert 'endpoint="unknown",event_type="none",outcome="unknown_endpoint"' in page
    assert not any(name in page for name in names)
    # the same address still gets its signed deliveries through
    event = make_event()
    assert prober.post_event(event).status == 200


def test_hostile_bodies_never_reach_the_logs(live_receiver: ReceiverServer) -> None:
    marker = f"cus_secretmarker{uuid.uuid4().hex}"
    client = live_receiver.client()
    event = make_event(account="acct_" + "a" * 300)
    event["data"]["object"]["customer"] = marker
    assert client.post_event(event).status == 400
    nul = make_event()
    nul["data"]["object"]["description"] = marker + "\x00"
    client.post_event(json.dumps(nul).encode())
    assert marker not in live_receiver.log_path.read_text(errors="replace")
