"""``GET /healthz`` and ``GET /metrics``: what a load balancer and Prometheus poll.

Health is "can this worker land an event now": the database answers and its schema
is at the migration head the code expects. It is checked on every call (one short
query), never cached, so a load balancer sees an outage and the recovery at once.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response
from sqlalchemy.exc import SQLAlchemyError

from receiver.context import receiver_context
from stripe_pipeline.db.migrate import current_revision

bp = Blueprint("health", __name__)


def _json(doc: dict, status: int, retry_after: int | None = None) -> Response:
    resp = Response(json.dumps(doc), status=status, mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    if retry_after is not None:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


@bp.get("/healthz")
def healthz() -> Response:
    """200 when an event could be landed now, else 503 with the reason."""
    ctx = receiver_context()
    try:
        revision = current_revision(ctx.engine)
    except SQLAlchemyError as exc:
        return _json(
            {"status": "unavailable", "database": "unreachable", "error": type(exc).__name__},
            503,
            ctx.retry_after_seconds,
        )
    if revision != ctx.head_revision:
        return _json(
            {
                "status": "unavailable",
                "database": "reachable",
                "schema": revision,
                "expected_schema": ctx.head_revision,
                "hint": "run `stripe-pipeline db upgrade`",
            },
            503,
            ctx.retry_after_seconds,
        )
    return _json({"status": "ok", "database": "reachable", "schema": revision}, 200)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition, aggregated over every gunicorn worker."""
    body, content_type = receiver_context().metrics.render()
    return Response(body, status=200, content_type=content_type)
