"""Everything a request handler needs, built once per app by ``create_app``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine

from receiver.abuse import InvalidRequestLimiter
from receiver.audit import DeliveryAuditBuffer
from receiver.metrics import ReceiverMetrics
from stripe_pipeline.config import Settings
from stripe_pipeline.land.lander import EventLander

EXTENSION_KEY = "stripe_receiver"


@dataclass
class ReceiverContext:
    settings: Settings
    engine: Engine
    lander: EventLander
    metrics: ReceiverMetrics
    limiter: InvalidRequestLimiter
    audit: DeliveryAuditBuffer
    log: logging.Logger
    head_revision: str
    retry_after_seconds: int = 5


def receiver_context() -> ReceiverContext:
    """The context of the app serving the current request."""
    return current_app.extensions[EXTENSION_KEY]
