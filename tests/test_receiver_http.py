"""The receiver over real HTTP, on SQLite and PostgreSQL (one gunicorn per backend)."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
import uuid

import pytest

from stripe_pipeline.land.signature import sign
from tests.support.receiver_server import (
    CONNECT_SECRET,
    INVALID_LIMIT,
    MAX_BYTES,
    OLD_SECRET,
    SECRET,
    Client,
    ReceiverServer,
    fresh_source,
    make_event,
    wait_for,
)

pytestmark = pytest.mark.slow


def count_events(live_receiver: ReceiverServer, event_id: str) -> int:
    return live_receiver.scalar(
        "SELECT count(*) FROM stripe_events WHERE stripe_event_id = :id", id=event_id
    )


def test_signed_event_is_stored_then_acknowledged(
    live_receiver: ReceiverServer, receiver_client: Client
):
    event = make_event()
    reply = receiver_client.post_event(event)
    assert reply.status == 200
    assert reply.json() == {"received": True, "duplicate": False}
    row = live_receiver.rows(
        "SELECT event_type, api_version, livemode, object_id, stripe_created, status, "
        "retry_count, source, endpoint FROM stripe_events WHERE stripe_event_id = :id",
        id=event["id"],
    )
    assert [tuple(row[0])] == [
        (
            "payment_intent.succeeded",
            "2025-03-31.basil",
            False,
            event["data"]["object"]["id"],
            event["created"],
            "pending",
            0,
            "webhook",
            "default",
        )
    ]
    audit = live_receiver.rows(
        "SELECT outcome, status_code, remote_addr, body_bytes FROM webhook_deliveries "
        "WHERE stripe_event_id = :id",
        id=event["id"],
    )
    assert [tuple(a) for a in audit] == [
        ("stored", 200, receiver_client.source, len(json.dumps(event).encode()))
    ]


def test_duplicate_delivery_is_acknowledged_and_stores_nothing_new(
    live_receiver: ReceiverServer, receiver_client: Client
):
    event = make_event()
    assert receiver_client.post_event(event).json()["duplicate"] is False
    # Stripe's retry carries a new timestamp and signature
    second = receiver_client.post_event(event, timestamp=int(time.time()) - 5)
    assert second.status == 200 and second.json() == {"received": True, "duplicate": True}
    assert count_events(live_receiver, event["id"]) == 1
    outcomes = live_receiver.rows(
        "SELECT outcome FROM webhook_deliveries WHERE stripe_event_id = :id ORDER BY id",
        id=event["id"],
    )
    assert [o[0] for o in outcomes] == ["stored", "duplicate"]


def test_rolled_secret_and_any_v1_signature_are_accepted(
    live_receiver: ReceiverServer, receiver_client: Client
):
    old = make_event()
    assert receiver_client.post_event(old, secret=OLD_SECRET).status == 200
    body = json.dumps(make_event()).encode()
    t = int(time.time())
    good = sign(body, SECRET, t).split("v1=")[1]
    header = f"t={t},v1={'0' * 64},v0={'1' * 64},v1={good}"
    assert receiver_client.post_event(body, signature=header).status == 200
    assert count_events(live_receiver, old["id"]) == 1


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "missing Stripe-Signature header"),
        ("garbled", "malformed Stripe-Signature header"),
        ("forged", "no signature matches"),
        ("stale", "timestamp outside the tolerance zone"),
        ("v0_only", "no v1 signature in header"),
        ("non_ascii", "malformed Stripe-Signature header"),
    ],
)
def test_bad_signatures_are_400_and_store_nothing(
    live_receiver: ReceiverServer, receiver_client: Client, case: str, reason: str
):
    event = make_event()
    body = json.dumps(event).encode()
    t = int(time.time())
    headers = {
        "missing": None,
        "garbled": "this is not a signature",
        "forged": sign(body, "whsec_attacker", t),
        "stale": sign(body, SECRET, t - 301),
        "v0_only": sign(body, SECRET, t).replace("v1=", "v0="),
        "non_ascii": f"t={t},v1=\u00e9\u00e9",
    }
    header = headers[case]
    sent = {"Content-Type": "application/json"}
    if header is not None:
        sent["Stripe-Signature"] = header
    reply = receiver_client.request("POST", "/webhooks/stripe", body, sent)
    assert reply.status == 400
    assert reply.json() == {"error": "invalid_signature", "reason": reason}
    assert count_events(live_receiver, event["id"]) == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json at all", "body is not JSON"),
        (b"[1, 2, 3]", "body is not a JSON object"),
        (b'{"object": "charge", "id": "ch_1"}', "body is not a Stripe event (object != 'event')"),
        (
            b'{"object": "event", "id": "evt_x", "type": "a.b", "created": 1}',
            "event has no data.object",
        ),
        (
            b'{"object": "event", "id": "evt_x", "type": "a.b", "created": true,'
            b' "data": {"object": {}}}',
            "event field 'created' must be a Unix timestamp",
        ),
    ],
)
def test_signed_bodies_that_are_not_events_are_400(
    live_receiver: ReceiverServer, receiver_client: Client, body: bytes, reason: str
):
    reply = receiver_client.post_event(body)
    assert reply.status == 400
    assert reply.json() == {"error": "malformed", "reason": reason}


def test_non_utf8_body_is_400(receiver_client: Client):
    body = b'{"id": "evt_\xff\xfe", "object": "event"}'
    header = f"t={int(time.time())},v1={'a' * 64}"
    reply = receiver_client.request("POST", "/webhooks/stripe", body, {"Stripe-Signature": header})
    assert reply.status == 400
    assert reply.json()["reason"] == "body is not UTF-8"


def test_livemode_guard_rejects_events_of_the_other_mode(
    live_receiver: ReceiverServer, receiver_client: Client
):
    event = make_event(livemode=True)
    reply = receiver_client.post_event(event)
    assert reply.status == 400 and reply.json()["error"] == "livemode_mismatch"
    assert count_events(live_receiver, event["id"]) == 0


def test_nul_in_payload(live_receiver: ReceiverServer, receiver_client: Client):
    """PostgreSQL's JSONB refuses \\u0000 as data: 400, not 5xx; SQLite keeps the text."""
    event = make_event()
    event["data"]["object"]["description"] = "nul \u0000 here"
    reply = receiver_client.post_event(event)
    if live_receiver.backend == "postgresql":
        assert reply.status == 400
        assert reply.json()["error"] == "rejected_by_database"
        assert count_events(live_receiver, event["id"]) == 0
    else:
        assert reply.status == 200
        assert count_events(live_receiver, event["id"]) == 1


def test_connect_endpoint_uses_its_own_secret(
    live_receiver: ReceiverServer, receiver_client: Client
):
    event = make_event(account="acct_123")
    assert receiver_client.post_event(event, path="/webhooks/stripe/connect").status == 400
    reply = receiver_client.post_event(
        event, path="/webhooks/stripe/connect", secret=CONNECT_SECRET
    )
    assert reply.status == 200
    row = live_receiver.rows(
        "SELECT endpoint, account FROM stripe_events WHERE stripe_event_id = :id", id=event["id"]
    )
    assert [tuple(r) for r in row] == [("connect", "acct_123")]
    unknown = receiver_client.post_event(make_event(), path="/webhooks/stripe/nope")
    assert unknown.status == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(receiver_client: Client, method: str):
    reply = receiver_client.request(method, "/webhooks/stripe")
    assert reply.status == 405
    assert "POST" in reply.headers["allow"]


def _raw_exchange(port: int, payload: bytes, source: str, send_all: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        if send_all:
            s.sendall(payload)
        else:
            s.sendall(payload[:2048])
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


def test_declared_oversized_body_is_413_before_it_is_read(live_receiver: ReceiverServer):
    """Only 2 KiB of a declared 10 MB body is ever sent: the answer cannot wait for it."""
    head = (
        "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Stripe-Signature: t=1,v1={'a' * 64}\r\nContent-Length: 10000000\r\n\r\n"
    ).encode()
    started = time.monotonic()
    reply = _raw_exchange(live_receiver.port, head + b"{" * 4096, fresh_source(), send_all=False)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert time.monotonic() - started < 5


def _chunked(body: bytes, signature: str, size: int = 8192) -> bytes:
    head = (
        "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Stripe-Signature: {signature}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    parts = [head]
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        parts.append(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


def test_chunked_body_over_the_limit_is_413(live_receiver: ReceiverServer):
    body = json.dumps(make_event(padding="x" * (MAX_BYTES + 10_000))).encode()
    reply = _raw_exchange(live_receiver.port, _chunked(body, sign(body, SECRET)), fresh_source())
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


def test_chunked_body_under_the_limit_is_stored(live_receiver: ReceiverServer):
    event = make_event()
    body = json.dumps(event).encode()
    reply = _raw_exchange(
        live_receiver.port, _chunked(body, sign(body, SECRET), 64), fresh_source()
    )
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert count_events(live_receiver, event["id"]) == 1


def test_flood_of_invalid_requests_is_429_but_signed_deliveries_pass(
    live_receiver: ReceiverServer,
):
    flooder = live_receiver.client(fresh_source())
    statuses = []
    for _ in range(INVALID_LIMIT * 3):  # the window is per worker: 2 workers, 20 each
        reply = flooder.request(
            "POST", "/webhooks/stripe", b"{}", {"Stripe-Signature": "t=1,v1=00"}
        )
        statuses.append(reply.status)
        if reply.status == 429:
            assert int(reply.headers["retry-after"]) > 0
    assert set(statuses) == {400, 429}
    assert statuses[:INVALID_LIMIT] == [400] * INVALID_LIMIT
    # a correctly signed delivery from the same address is never refused
    event = make_event()
    assert flooder.post_event(event).status == 200
    # the audit holds every request (merged rows), never a body
    assert wait_for(
        lambda: (
            live_receiver.scalar(
                "SELECT coalesce(sum(repeat_count), 0) FROM webhook_deliveries "
                "WHERE remote_addr = :a AND status_code IN (400, 429)",
                a=flooder.source,
            )
            == len(statuses)
        ),
        timeout=5,
    )
    reasons = live_receiver.rows(
        "SELECT DISTINCT reason FROM webhook_deliveries WHERE remote_addr = :a",
        a=flooder.source,
    )
    assert {r[0] for r in reasons} <= {"no signature matches", None}


def test_invalid_requests_are_audited_without_their_body(live_receiver: ReceiverServer):
    sender = live_receiver.client()
    secret_looking = "card_4242424242424242"
    sender.request(
        "POST", "/webhooks/stripe", secret_looking.encode(), {"Stripe-Signature": "t=1,v1=ab"}
    )
    assert wait_for(
        lambda: live_receiver.rows(
            "SELECT outcome, status_code, reason, body_bytes, endpoint FROM webhook_deliveries "
            "WHERE remote_addr = :a",
            a=sender.source,
        ),
        timeout=5,
    )
    rows = live_receiver.rows(
        "SELECT * FROM webhook_deliveries WHERE remote_addr = :a", a=sender.source
    )
    assert len(rows) == 1
    row = rows[0]._mapping
    assert (row["outcome"], row["status_code"], row["body_bytes"], row["endpoint"]) == (
        "invalid_signature",
        400,
        len(secret_looking),
        "default",
    )
    assert all(secret_looking not in str(v) for v in row.values())
    assert secret_looking not in live_receiver.log_path.read_text(errors="replace")


def test_same_event_from_20_threads_across_workers_gives_one_row(live_receiver: ReceiverServer):
    assert len(live_receiver.worker_pids()) >= 2
    for _ in range(3):
        event = make_event()
        body = json.dumps(event).encode()
        barrier = threading.Barrier(20)
        replies: list[int] = []

        def deliver(body=body, barrier=barrier, replies=replies) -> None:
            header = sign(body, SECRET)
            conn_client = live_receiver.client("127.0.0.1")
            barrier.wait()
            replies.append(conn_client.post_event(body, signature=header).status)

        threads = [threading.Thread(target=deliver) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert replies == [200] * 20
        assert count_events(live_receiver, event["id"]) == 1
        outcomes = live_receiver.rows(
            "SELECT outcome, count(*) FROM webhook_deliveries WHERE stripe_event_id = :id "
            "GROUP BY outcome ORDER BY outcome",
            id=event["id"],
        )
        assert [tuple(o) for o in outcomes] == [("duplicate", 19), ("stored", 1)]


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = line[len(name) + 1 : line.index("}")]
            if ",".join(sorted(got.split(","))) == want:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _count_in_file(path, event_type: str) -> float:
    """Deliveries of ``event_type`` recorded by one worker (one multiprocess file)."""
    from prometheus_client import CollectorRegistry, multiprocess

    with tempfile.TemporaryDirectory() as one:
        shutil.copy(path, one)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=one)
        return sum(
            sample.value
            for metric in registry.collect()
            for sample in metric.samples
            if sample.name == "stripe_webhook_deliveries_total"
            and sample.labels.get("event_type") == event_type
        )


def test_metrics_count_deliveries_across_workers(live_receiver: ReceiverServer):
    event_type = f"metrics.test_{uuid.uuid4().hex[:8]}"
    sent = 0
    for _ in range(5):
        threads = [
            threading.Thread(
                target=lambda: live_receiver.client("127.0.0.1").post_event(
                    make_event(type=event_type)
                )
            )
            for _ in range(12)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent += 12
        per_worker = [
            _count_in_file(path, event_type)
            for path in live_receiver.metrics_dir.glob("counter_*.db")
        ]
        if sum(1 for v in per_worker if v) >= 2:
            break
    assert sum(1 for v in per_worker if v) >= 2, "deliveries did not reach two workers"
    labels = {"endpoint": "default", "outcome": "stored", "event_type": event_type}
    for _ in range(4):  # whichever worker answers the scrape sees every worker's samples
        page = live_receiver.client("127.0.0.1").request("GET", "/metrics")
        assert page.status == 200
        assert page.headers["content-type"].startswith("text/plain")
        text = page.body.decode()
        assert _metric(text, "stripe_webhook_deliveries_total", **labels) == sent
        assert (
            _metric(
                text, "stripe_webhook_request_duration_seconds_bucket", outcome="stored", le="+Inf"
            )
            >= sent
        )


def test_healthz_reports_database_and_schema(
    live_receiver: ReceiverServer, receiver_client: Client
):
    reply = receiver_client.request("GET", "/healthz")
    assert reply.status == 200
    doc = reply.json()
    assert doc["status"] == "ok"
    assert doc["schema"] == live_receiver.scalar("SELECT version_num FROM alembic_version")
    assert receiver_client.request("POST", "/healthz").status == 405


def test_embedded_sqlite_migrated_itself(sqlite_receiver: ReceiverServer):
    from stripe_pipeline.db.migrate import current_revision, head_revision

    assert current_revision(sqlite_receiver.engine) == head_revision()
