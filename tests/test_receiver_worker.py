"""HTTP/1.1 framing of the receiver's worker (``receiver.worker``), over raw sockets.

The worker parses requests itself (llhttp through httptools) before the app sees
them, so what gunicorn used to handle is checked here: pipelining, keep-alive and
close, half-closed clients, 100-continue, and malformed or oversized framing.
"""

from __future__ import annotations

import json
import socket

import pytest

from stripe_pipeline.land.signature import sign
from tests.support.receiver_server import SECRET, ReceiverServer, fresh_source, make_event

pytestmark = pytest.mark.slow


def _request(event: dict, *, extra: str = "", version: str = "1.1") -> tuple[bytes, str]:
    body = json.dumps(event).encode()
    head = (
        f"POST /webhooks/stripe HTTP/{version}\r\nHost: receiver\r\n"
        f"Content-Type: application/json\r\nStripe-Signature: {sign(body, SECRET)}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body, event["id"]


def _exchange(port: int, payload: bytes, *, half_close: bool = False) -> bytes:
    """Send ``payload``, read until the server closes (or 5 s of silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def _source_socket(port: int) -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", port), timeout=5, source_address=(fresh_source(), 0)
    )


def test_pipelined_requests_are_answered_in_order(live_receiver: ReceiverServer) -> None:
    first, first_id = _request(make_event())
    second, second_id = _request(make_event(), extra="Connection: close\r\n")
    reply = _exchange(live_receiver.port, first + second)
    assert reply.count(b"HTTP/1.1 200 OK") == 2, reply
    assert reply.index(b"Connection: keep-alive") < reply.index(b"Connection: close")
    assert live_receiver.stored_ids([first_id, second_id]) == {first_id, second_id}


def test_http_1_0_and_half_closed_clients_get_their_answer(live_receiver: ReceiverServer) -> None:
    old, old_id = _request(make_event(), version="1.0")
    assert _exchange(live_receiver.port, old).startswith(b"HTTP/1.1 200")
    half, half_id = _request(make_event())
    assert _exchange(live_receiver.port, half, half_close=True).startswith(b"HTTP/1.1 200")
    assert live_receiver.stored_ids([old_id, half_id]) == {old_id, half_id}


def test_expect_100_continue(live_receiver: ReceiverServer) -> None:
    event = make_event()
    body = json.dumps(event).encode()
    head = (
        "POST /webhooks/stripe HTTP/1.1\r\nHost: r\r\nExpect: 100-continue\r\n"
        f"Stripe-Signature: {sign(body, SECRET)}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with _source_socket(live_receiver.port) as sock:
        sock.sendall(head)
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    assert live_receiver.stored_ids([event["id"]]) == {event["id"]}


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        # both framings: a request-smuggling attempt
        (
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"400",
        ),
        (
            b"POST /webhooks/stripe HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"400",
        ),
        (b"BREW /webhooks/stripe HTTP/1.1\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 70_000 + b"\r\n\r\n", b"431"),
    ],
)
def test_malformed_framing_is_refused_and_closed(
    live_receiver: ReceiverServer, payload: bytes, status: bytes
) -> None:
    reply = _exchange(live_receiver.port, payload)
    assert reply.startswith(b"HTTP/1.1 " + status), reply[:200]
    assert b"Connection: close" in reply


def test_health_and_metrics_keep_working_over_one_connection(
    live_receiver: ReceiverServer,
) -> None:
    payload = (
        b"".join(
            f"GET /{path} HTTP/1.1\r\nHost: r\r\n\r\n".encode() for path in ("healthz", "metrics")
        )
        + b"HEAD /healthz HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n"
    )
    reply = _exchange(live_receiver.port, payload)
    assert reply.count(b"HTTP/1.1 200 OK") == 3
    assert b"stripe_webhook_deliveries" in reply


def test_upgrade_requests_get_plain_http_and_a_closed_connection(
    live_receiver: ReceiverServer,
) -> None:
    upgrade = b"GET /healthz HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    for trailing in (b"", b"GARBAGE FRAMES"):
        reply = _exchange(live_receiver.port, upgrade + trailing)
        # the app's answer (Werkzeug refuses a WebSocket request to a plain route), never 101
        assert reply.startswith(b"HTTP/1.1 400") and b"Connection: close" in reply, reply
        assert reply.count(b"HTTP/1.1") == 1
