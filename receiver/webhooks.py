"""``POST /webhooks/stripe[/<endpoint>]``: verify, parse, land, then answer.

Order matters for speed and for abuse resistance: the size is checked from the
headers before the body is read; the signature is verified (microseconds) before the
rate limiter is consulted, so a correctly signed delivery is never refused; the one
database transaction comes last and the 2xx only after its commit.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from flask import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from receiver.context import ReceiverContext, receiver_context
from receiver.logging import log_fields
from stripe_pipeline.config import DEFAULT_ENDPOINT, UNKNOWN_ENDPOINT
from stripe_pipeline.land.envelope import MalformedEvent, parse_envelope
from stripe_pipeline.land.lander import DatabaseUnavailable, RejectedByDatabase
from stripe_pipeline.land.signature import InvalidSignature, verify_signature
from stripe_pipeline.land.store import Delivery

bp = Blueprint("webhooks", __name__)

SIGNATURE_HEADER = "Stripe-Signature"


@dataclass(slots=True)
class Answer:
    """What the receiver decided about one request (status, audit and metric labels)."""

    status: int
    outcome: str
    reason: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    body_bytes: int | None = None
    audited: bool = False  # True when the audit row was written with the event

    def response(self, retry_after: int) -> Response:
        if self.status == 200:
            doc: dict = {"received": True, "duplicate": self.outcome == "duplicate"}
        else:
            doc = {"error": self.outcome}
            if self.reason:
                doc["reason"] = self.reason
        resp = Response(json.dumps(doc), status=self.status, mimetype="application/json")
        if self.status in (429, 503):
            resp.headers["Retry-After"] = str(retry_after)
        return resp


@bp.route(
    "/webhooks/stripe",
    methods=["POST"],
    defaults={"endpoint": DEFAULT_ENDPOINT},
    provide_automatic_options=False,
)
@bp.route("/webhooks/stripe/<endpoint>", methods=["POST"], provide_automatic_options=False)
def receive_webhook(endpoint: str) -> Response:
    """Land one Stripe event durably and acknowledge it."""
    ctx = receiver_context()
    started = time.perf_counter()
    answer = handle_delivery(ctx, endpoint)
    finish(ctx, endpoint, answer, started)
    return answer.response(ctx.retry_after_seconds)


def handle_delivery(ctx: ReceiverContext, endpoint: str) -> Answer:
    """Decide one delivery; the only step with side effects is ``land_event``."""
    settings = ctx.settings
    remote = request.remote_addr
    secrets = settings.webhook_secrets.get(endpoint)
    if secrets is None:
        # counted like any invalid request, so probing for endpoint names is rate limited
        return _refuse_invalid(
            ctx, remote, "unknown_endpoint", "no such webhook endpoint", None, 404
        )

    header = request.headers.get(SIGNATURE_HEADER)
    declared = request.content_length
    if declared is not None and declared > settings.webhook_max_bytes:
        return Answer(413, "too_large", "body over the size limit", body_bytes=declared)
    if not header and ctx.limiter.is_blocked(remote):
        # cannot be valid, and this address is flooding: answer without reading the body
        ctx.limiter.record_invalid(remote)
        return Answer(429, "rate_limited", "missing Stripe-Signature header", body_bytes=declared)

    try:
        body = read_body(settings.webhook_max_bytes)
    except RequestEntityTooLarge:
        return Answer(413, "too_large", "body over the size limit")
    except Exception:  # truncated or malformed framing: the client's fault
        return _refuse_invalid(ctx, remote, "unreadable_body", "body could not be read", None)
    size = len(body)
    if size > settings.webhook_max_bytes:
        return Answer(413, "too_large", "body over the size limit", body_bytes=size)

    try:
        verify_signature(body, header, secrets, settings.webhook_tolerance)
    except InvalidSignature as exc:
        return _refuse_invalid(ctx, remote, "invalid_signature", str(exc), size)

    # from here on the sender holds our secret: never rate limited
    try:
        envelope = parse_envelope(body)
    except MalformedEvent as exc:
        return Answer(400, "malformed", str(exc), body_bytes=size)
    if settings.webhook_livemode is not None and envelope.livemode != settings.webhook_livemode:
        return Answer(
            400,
            "livemode_mismatch",
            "event is from the other Stripe mode",
            envelope.stripe_event_id,
            envelope.event_type,
            size,
        )

    delivery = Delivery(
        endpoint=endpoint,
        remote_addr=remote,
        outcome="stored",
        status_code=200,
        stripe_event_id=envelope.stripe_event_id,
        event_type=envelope.event_type,
        body_bytes=size,
    )
    try:
        is_new = ctx.lander.land(envelope, delivery)
    except RejectedByDatabase as exc:
        return Answer(
            400,
            "rejected_by_database",
            f"payload refused by the database ({exc})",
            envelope.stripe_event_id,
            envelope.event_type,
            size,
        )
    except DatabaseUnavailable as exc:
        return Answer(
            503,
            "unavailable",
            f"database unavailable ({exc})",
            envelope.stripe_event_id,
            envelope.event_type,
            size,
        )
    return Answer(
        200,
        "stored" if is_new else "duplicate",
        None,
        envelope.stripe_event_id,
        envelope.event_type,
        size,
        audited=True,
    )


def read_body(max_bytes: int) -> bytes:
    """The request body, reading at most ``max_bytes + 1`` bytes of a chunked one.

    With a Content-Length (already checked against the limit) Werkzeug reads exactly
    that much. A chunked body has no length up front: it is read up to one byte past
    the limit, and a longer one is refused without reading the rest.
    """
    if request.content_length is not None:
        return request.get_data(cache=False)
    environ = request.environ
    if not environ.get("wsgi.input_terminated"):
        return b""  # the server cannot tell where such a body ends: treat it as empty
    stream = environ["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while size <= max_bytes:
        chunk = stream.read(min(65536, max_bytes + 1 - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    if size > max_bytes:
        raise RequestEntityTooLarge()
    return b"".join(parts)


def _refuse_invalid(
    ctx: ReceiverContext,
    remote: str | None,
    outcome: str,
    reason: str,
    size: int | None,
    status: int = 400,
) -> Answer:
    """``status`` (400), or 429 once this address has sent too many invalid requests."""
    if ctx.limiter.record_invalid(remote):
        return Answer(429, "rate_limited", reason, body_bytes=size)
    return Answer(status, outcome, reason, body_bytes=size)


def finish(ctx: ReceiverContext, endpoint: str, answer: Answer, started: float) -> None:
    """Metrics, the buffered audit row and the log line of one answered request.

    Endpoint names nobody configured are recorded as ``unknown``: a client inventing a
    new name per request adds no metric series and no audit row of its own.
    """
    label = endpoint if endpoint in ctx.settings.webhook_secrets else UNKNOWN_ENDPOINT
    ctx.metrics.observe(label, answer.outcome, answer.event_type, time.perf_counter() - started)
    if not answer.audited:
        ctx.audit.add(
            Delivery(
                endpoint=label,
                remote_addr=request.remote_addr,
                outcome=answer.outcome,
                status_code=answer.status,
                reason=answer.reason,
                stripe_event_id=answer.event_id,
                event_type=answer.event_type,
                body_bytes=answer.body_bytes,
            )
        )
    if answer.outcome == "rate_limited":
        return  # a flood is visible in metrics and the merged audit rows, not line by line
    # accepted deliveries are already recorded twice (event row, audit row): DEBUG
    level = logging.DEBUG if answer.status == 200 else logging.INFO
    if answer.status >= 500:
        level = logging.WARNING
    if not ctx.log.isEnabledFor(level):
        return
    ctx.log.log(
        level,
        "webhook delivery",
        extra=log_fields(
            endpoint=label,
            outcome=answer.outcome,
            status=answer.status,
            reason=answer.reason,
            event_id=answer.event_id,
            event_type=answer.event_type,
            remote_addr=request.remote_addr,
            bytes=answer.body_bytes,
            ms=round((time.perf_counter() - started) * 1000, 2),
        ),
    )
