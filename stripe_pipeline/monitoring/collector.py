"""A prometheus-client Collector exposing the pipeline gauges on any registry.

The receiver registers it on the registry its ``/metrics`` renders (in multiprocess
mode: the per-scrape registry), so one scrape carries both the receiver's counters
and the pipeline's state. Results are cached for a few seconds: several Prometheus
servers or a fast scrape interval must not turn into a query storm. A database error
never fails the scrape: ``stripe_pipeline_gauges_up`` drops to 0 instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from stripe_pipeline.monitoring.gauges import PREFIX, Gauge, GaugeWindows, compute_gauges

log = logging.getLogger(__name__)


class PipelineCollector(Collector):
    """Collects ``compute_gauges`` from the app database on each (uncached) scrape."""

    def __init__(
        self,
        engine: Engine | Callable[[], Engine],
        *,
        cache_seconds: float = 10.0,
        windows: GaugeWindows | None = None,
    ) -> None:
        self._engine = engine
        self.cache_seconds = cache_seconds
        self.windows = windows or GaugeWindows()
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Gauge], float] | None = None

    def engine(self) -> Engine:
        return self._engine if isinstance(self._engine, Engine) else self._engine()

    def _gauges(self) -> tuple[list[Gauge], float, bool]:
        with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self.cache_seconds:
                return self._cached[1], self._cached[2], True
            started = time.perf_counter()
            try:
                with self.engine().connect() as conn:
                    gauges = compute_gauges(conn, windows=self.windows)
            except Exception as exc:  # a broken database must not break the scrape
                log.warning("pipeline gauges unavailable: %s", exc)
                return [], time.perf_counter() - started, False
            elapsed = time.perf_counter() - started
            self._cached = (now, gauges, elapsed)
            return gauges, elapsed, True

    def collect(self) -> Iterator[Metric]:
        gauges, elapsed, up = self._gauges()
        yield from to_metric_families(gauges)
        yield GaugeMetricFamily(
            f"{PREFIX}gauges_up", "1 when the pipeline gauges could be read.", value=int(up)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}gauges_query_seconds", "Time to compute the pipeline gauges.", value=elapsed
        )

    def describe(self) -> Iterator[Metric]:
        # no describe-time queries: registering must not touch the database
        return iter(())


def to_metric_families(gauges: list[Gauge]) -> list[GaugeMetricFamily]:
    """Group gauges by name into families (one HELP/TYPE each, labelled samples)."""
    families: dict[str, GaugeMetricFamily] = {}
    for gauge in gauges:
        labels = sorted(gauge.labels)
        family = families.get(gauge.name)
        if family is None:
            family = GaugeMetricFamily(gauge.name, gauge.help, labels=labels)
            families[gauge.name] = family
        family.add_metric([gauge.labels[k] for k in labels], gauge.value)
    return list(families.values())


def exposition_text(engine: Engine, *, cache_seconds: float = 0.0) -> str:
    """The pipeline gauges alone in Prometheus text format (CLI, tests, cron exporters)."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector(engine, cache_seconds=cache_seconds))
    return generate_latest(registry).decode()
