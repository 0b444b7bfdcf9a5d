"""Notifications: one message type, one notifier protocol; log by default, webhook or Apprise.

Work that wants a message sent (a dead-letter ticket, a dunning decision, a failed
check) returns a ``Notification``; the caller sends it with ``send_notifications``
after its transaction commits. A notifier must never break processing: every
implementation catches and logs its own errors. Messages are scrubbed of anything
shaped like a card number or a Stripe secret, and callers pass ids and classes only,
never payloads.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from stripe_pipeline.config import load_notify_urls

log = logging.getLogger(__name__)


# 13-19 digits, optionally grouped by spaces or dashes: a possible card number (PAN)
_PAN = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_SECRET = re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]+|\bwhsec_[A-Za-z0-9]+")


def scrub(value: Any) -> Any:
    """Redact possible card numbers and Stripe keys in strings, recursively."""
    if isinstance(value, str):
        return _SECRET.sub("[redacted-key]", _PAN.sub("[redacted-number]", value))
    if isinstance(value, Mapping):
        return {str(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub(str(value))


@dataclass(frozen=True)
class Notification:
    """One message for people: a title, a body, a priority and ids (never payloads)."""

    title: str
    body: str
    priority: str
    details: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Notifier(Protocol):
    """Sends one notification; must not raise."""

    def notify(self, notification: Notification) -> None: ...


def send_notifications(notifier: Notifier, notifications: Iterable[Notification]) -> int:
    """Send committed work's notifications; returns how many left. A notifier that
    raises anyway is logged and the rest still go."""
    sent = 0
    for note in notifications:
        try:
            notifier.notify(note)
            sent += 1
        except Exception as exc:  # notifiers should not raise; be sure anyway
            log.error("notifier %r failed on %r: %s", notifier, scrub(note.title), exc)
    return sent


class LogNotifier:
    """Default: a WARNING log line (critical tickets also show in the ticket table)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    def notify(self, notification: Notification) -> None:
        self.logger.warning(
            "support notification [%s] %s: %s %s",
            notification.priority,
            scrub(notification.title),
            scrub(notification.body),
            json.dumps(scrub(dict(notification.details)), default=str, sort_keys=True),
        )


class WebhookNotifier:
    """POSTs ``{"title", "body", "priority", "details"}`` as JSON to a URL.

    Failures (timeouts, refused connections, non-2xx) are logged, never raised.
    """

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("webhook notifier needs an http(s) URL")
        self.url = url
        self.timeout = timeout

    def notify(self, notification: Notification) -> None:
        message = {
            "title": scrub(notification.title),
            "body": scrub(notification.body),
            "priority": notification.priority,
            "details": scrub(dict(notification.details)),
        }
        data = json.dumps(message, default=str).encode()
        request = urllib.request.Request(
            self.url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "stripe-pipeline"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except Exception as exc:  # a notifier must never break processing
            log.error("notification webhook %s failed: %s", _safe_url(self.url), exc)

    def __repr__(self) -> str:
        return f"WebhookNotifier({_safe_url(self.url)!r})"


class AppriseNotifier:
    """Apprise URLs (Slack, email, PagerDuty, ...); needs the optional ``apprise``."""

    def __init__(self, urls: Sequence[str]) -> None:
        import apprise  # optional dependency, imported only when configured

        self._apprise = apprise.Apprise()
        for url in urls:
            if not self._apprise.add(url):
                log.error("apprise rejected a notification URL (scheme %s)", url.split(":")[0])

    def notify(self, notification: Notification) -> None:
        details = json.dumps(scrub(dict(notification.details)), default=str, indent=1)
        text = scrub(notification.body) + "\n\n" + details
        title = f"[{notification.priority}] {scrub(notification.title)}"
        try:
            ok = self._apprise.notify(title=title, body=text)
            if not ok:
                log.error("apprise notification failed")
        except Exception as exc:
            log.error("apprise notification failed: %s", exc)


class MultiNotifier:
    """Fan out to several notifiers; one failing target does not stop the others."""

    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        self.notifiers = list(notifiers)

    def notify(self, notification: Notification) -> None:
        for notifier in self.notifiers:
            try:
                notifier.notify(notification)
            except Exception as exc:
                log.error("notifier %r failed: %s", notifier, exc)


def apprise_available() -> bool:
    try:
        import apprise  # noqa: F401
    except ImportError:
        return False
    return True


def build_notifier(urls: Sequence[str] | None = None) -> Notifier:
    """Notifier for URLs (default: ``STRIPE_PIPELINE_NOTIFY_URLS``, comma-separated).

    ``http(s)://`` URLs become plain JSON webhooks, other schemes go to Apprise when it
    is installed (otherwise they are logged and skipped). Always logs as well.
    """
    if urls is None:
        urls = load_notify_urls()
    notifiers: list[Notifier] = [LogNotifier()]
    webhooks = [u for u in urls if u.startswith(("http://", "https://"))]
    others = [u for u in urls if u not in webhooks]
    notifiers.extend(WebhookNotifier(u) for u in webhooks)
    if others:
        if apprise_available():
            notifiers.append(AppriseNotifier(others))
        else:
            log.error(
                "%d notification URL(s) need the optional 'apprise' package; skipped",
                len(others),
            )
    return notifiers[0] if len(notifiers) == 1 else MultiNotifier(notifiers)


def _safe_url(url: str) -> str:
    # webhook URLs often embed a token in the path (Slack, Teams): log the host only
    match = re.match(r"^(https?://[^/?#]+)", url)
    return (match.group(1) + "/...") if match else "<url>"
