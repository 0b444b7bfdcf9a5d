"""Notifiers: a real local HTTP sink for the webhook, failures never raise, no secrets."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stripe_pipeline.support.notify import (
    LogNotifier,
    MultiNotifier,
    Notification,
    WebhookNotifier,
    build_notifier,
    scrub,
)


class Sink:
    def __init__(self) -> None:
        self.received: list[dict] = []
        self.status = 200
        self.delay = 0.0


@pytest.fixture
def sink() -> Iterator[tuple[Sink, str]]:
    state = Sink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state.delay:
                threading.Event().wait(state.delay)
            state.received.append(
                {"json": json.loads(body), "content_type": self.headers["Content-Type"]}
            )
            self.send_response(state.status)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token"
    server.shutdown()
    server.server_close()


def test_webhook_posts_json(sink: tuple[Sink, str]) -> None:
    state, url = sink
    WebhookNotifier(url).notify(
        Notification("Dispute dp_1 dead-lettered", "ticket #4", "critical", {"ticket_id": 4})
    )
    (message,) = state.received
    assert message["content_type"] == "application/json"
    assert message["json"] == {
        "title": "Dispute dp_1 dead-lettered",
        "body": "ticket #4",
        "priority": "critical",
        "details": {"ticket_id": 4},
    }


def test_webhook_failures_are_logged_not_raised(
    sink: tuple[Sink, str], caplog: pytest.LogCaptureFixture
) -> None:
    state, url = sink
    state.status = 500
    with caplog.at_level(logging.ERROR):
        WebhookNotifier(url).notify(Notification("t", "b", "critical"))
        state.status, state.delay = 200, 1.0
        WebhookNotifier(url, timeout=0.2).notify(Notification("t", "b", "critical"))
        unreachable = WebhookNotifier("http://127.0.0.1:1/nothing-listens", timeout=1)
        unreachable.notify(Notification("t", "b", "x"))
    assert len([r for r in caplog.records if "notification webhook" in r.message]) == 3
    assert "secret-token" not in caplog.text  # the URL path may hold a token


def test_card_numbers_and_keys_never_leave(sink: tuple[Sink, str]) -> None:
    state, url = sink
    WebhookNotifier(url).notify(
        Notification(
            "card 4242 4242 4242 4242 failed",
            "key sk_live_abc123 and whsec_zzz",
            "critical",
            {"nested": ["4000000000000002"], "amount": 1999},
        )
    )
    sent = json.dumps(state.received[0]["json"])
    for secret in ("4242 4242", "4000000000000002", "sk_live_abc123", "whsec_zzz"):
        assert secret not in sent
    assert state.received[0]["json"]["details"]["amount"] == 1999
    assert scrub({"id": "pi_123", "n": 5}) == {"id": "pi_123", "n": 5}


def test_build_notifier_from_env(
    sink: tuple[Sink, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state, url = sink
    monkeypatch.delenv("STRIPE_PIPELINE_NOTIFY_URLS", raising=False)
    assert isinstance(build_notifier(), LogNotifier)
    monkeypatch.setenv("STRIPE_PIPELINE_NOTIFY_URLS", f"{url}, mailto://ops@example.com")
    notifier = build_notifier()
    assert isinstance(notifier, MultiNotifier)
    with caplog.at_level(logging.WARNING):
        notifier.notify(Notification("title", "body", "critical", {"ticket_id": 1}))
    assert len(state.received) == 1
    assert "support notification [critical] title" in caplog.text


def test_runner_sends_critical_tickets_to_the_webhook(sink: tuple[Sink, str], engine) -> None:
    from stripe_pipeline.process.backoff import RetryPolicy
    from stripe_pipeline.process.errors import PermanentError
    from stripe_pipeline.process.processor import Processor
    from stripe_pipeline.process.runner import process_pending
    from tests.support.queue_events import MarkingApply, event_doc, load

    state, url = sink
    load(engine, [event_doc(1)])
    apply = MarkingApply(decide=lambda e: PermanentError("card 4242424242424242 broke it"))
    processor = Processor(notifier=WebhookNotifier(url))
    process_pending(engine, policy=RetryPolicy(), processor=processor, apply=apply)
    (message,) = state.received
    assert message["json"]["priority"] == "critical"
    assert message["json"]["details"]["stripe_event_id"] == "evt_000001"
    assert "4242424242424242" not in json.dumps(message)
