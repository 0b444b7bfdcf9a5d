"""Prometheus metrics of the receiver, correct under several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``receiver.server.serve`` always sets it),
every worker writes its samples to memory-mapped files in that folder and
``/metrics`` aggregates all of them, whichever worker answers the scrape; the
gunicorn ``child_exit`` hook marks dead workers (see ``receiver.gunicorn_conf``).
Without it (tests, ``flask run``) the metrics live in one in-process registry.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
NO_TYPE = "none"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


class ReceiverMetrics:
    """The receiver's counters and histogram, plus their text exposition."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        if self.multiprocess and values.ValueClass is values.MutexValue:
            # prometheus_client chose its value class when first imported; if that
            # happened before the folder was configured, choose again
            values.ValueClass = values.get_value_class()
        # in multiprocess mode samples go to files and are collected from there
        self.registry = CollectorRegistry()
        register = None if self.multiprocess else self.registry
        self.deliveries = Counter(
            "stripe_webhook_deliveries",
            "Webhook requests answered, by endpoint, outcome and Stripe event type.",
            ["endpoint", "outcome", "event_type"],
            registry=register,
        )
        self.latency = Histogram(
            "stripe_webhook_request_duration_seconds",
            "Time from request start to answer on the webhook endpoints, by outcome.",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=register,
        )
        # collectors computed at scrape time, e.g. the pipeline gauges (see add_collector)
        self.extra_collectors: list[Collector] = []
        self.audit_dropped = Counter(
            "stripe_webhook_audit_dropped",
            "Delivery-audit rows of invalid requests dropped (database down, buffer full).",
            registry=register,
        )
        self.client_timeouts = Counter(
            "stripe_webhook_client_timeouts",
            "Connections closed (408) because a request's headers and body did not arrive "
            "within STRIPE_WEBHOOK_READ_TIMEOUT: slow or stalled clients.",
            registry=register,
        )

    def observe(self, endpoint: str, outcome: str, event_type: str | None, seconds: float) -> None:
        self.deliveries.labels(endpoint, outcome, event_type or NO_TYPE).inc()
        self.latency.labels(outcome).observe(seconds)

    def add_collector(self, collector: Collector) -> None:
        """Expose another collector (stripe_pipeline.monitoring.collector.PipelineCollector)."""
        self.extra_collectors.append(collector)
        if not self.multiprocess:
            self.registry.register(collector)

    def render(self) -> tuple[bytes, str]:
        """Exposition text of every worker's samples, and its content type."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            for collector in self.extra_collectors:
                registry.register(collector)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live-gauge files (gunicorn ``child_exit`` hook)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)
