"""Every error answer in one place: JSON bodies, never a 500 for a client's mistake.

Routing errors (404, 405), oversized bodies caught by Werkzeug (413) and any other
``HTTPException`` keep their status. A 405 on a webhook path is also counted and
audited, because every request to the webhook endpoints is. An unexpected exception
is a bug: it is logged (type only, no request data) and answered 500.
"""

from __future__ import annotations

import json
import time

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from receiver.context import receiver_context
from receiver.logging import log_fields

WEBHOOK_PREFIX = "/webhooks/stripe"


def _json(doc: dict, status: int) -> Response:
    return Response(json.dumps(doc), status=status, mimetype="application/json")


def register_error_handlers(app: Flask) -> None:
    """Install the handlers on ``app``."""

    @app.errorhandler(MethodNotAllowed)
    def method_not_allowed(exc: MethodNotAllowed) -> Response:
        if request.path.startswith(WEBHOOK_PREFIX):
            from receiver.webhooks import Answer, finish

            endpoint = request.path[len(WEBHOOK_PREFIX) :].strip("/") or "default"
            answer = Answer(405, "method_not_allowed")
            finish(receiver_context(), endpoint, answer, time.perf_counter())
        resp = _json({"error": "method_not_allowed"}, 405)
        resp.headers["Allow"] = ", ".join(sorted(exc.valid_methods or ()))
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        name = (exc.name or "error").lower().replace(" ", "_")
        return _json({"error": name}, exc.code or 400)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        receiver_context().log.error(
            "unexpected error",
            exc_info=exc,
            extra=log_fields(path=request.path, method=request.method),
        )
        return _json({"error": "internal_error"}, 500)
