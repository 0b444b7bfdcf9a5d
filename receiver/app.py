"""Application factory: build the receiver from settings, connect lazily.

Nothing here touches the database: the engine connects on the first request, so
importing or creating the app is cheap and fork-safe (gunicorn calls the factory
in each worker).
"""

from __future__ import annotations

from flask import Flask
from sqlalchemy import Engine

from receiver.abuse import InvalidRequestLimiter
from receiver.audit import DeliveryAuditBuffer
from receiver.context import EXTENSION_KEY, ReceiverContext
from receiver.errors import register_error_handlers
from receiver.logging import configure_logging
from receiver.metrics import ReceiverMetrics
from stripe_pipeline.config import Settings, load_settings
from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.db.migrate import head_revision
from stripe_pipeline.land.lander import EventLander
from stripe_pipeline.monitoring.collector import PipelineCollector


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> Flask:
    """Build the receiver for ``settings`` (default: the environment)."""
    settings = settings or load_settings()
    logger = configure_logging(settings.log_level)
    engine = engine or make_engine(settings.database_url, pool_size=8)
    metrics = ReceiverMetrics()
    # pipeline gauges (queue, error rate, tickets, ratios) on the same /metrics scrape
    metrics.add_collector(PipelineCollector(engine))

    app = Flask("receiver")
    # Werkzeug refuses larger bodies itself, also chunked ones while they stream in
    app.config["MAX_CONTENT_LENGTH"] = settings.webhook_max_bytes
    app.extensions[EXTENSION_KEY] = ReceiverContext(
        settings=settings,
        engine=engine,
        lander=EventLander(engine),
        metrics=metrics,
        limiter=InvalidRequestLimiter(settings.invalid_requests_per_minute),
        audit=DeliveryAuditBuffer(engine, on_drop=metrics.audit_dropped.inc),
        log=logger,
        head_revision=head_revision(),
    )

    from receiver import health, webhooks

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    register_error_handlers(app)
    return app
