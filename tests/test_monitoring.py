"""Pipeline gauges: values from the database, valid Prometheus text, a safe Collector."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, insert

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.db.models import metadata
from stripe_pipeline.monitoring.collector import PipelineCollector, exposition_text
from stripe_pipeline.monitoring.gauges import compute_gauges
from tests.support.model_seed import seed_all

ROOT = Path(__file__).resolve().parents[1]
T = metadata.tables


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_gauges_from_seeded_data_parse_as_prometheus_text(engine: Engine) -> None:
    now = seed_all(engine)
    with engine.begin() as conn:
        # fresh activity inside the windows: one pending event, two payments (one failed)
        conn.execute(
            insert(T["stripe_events"]).values(
                stripe_event_id="evt_now",
                event_type="charge.succeeded",
                stripe_created=int(now.timestamp()),
                received_at=now - timedelta(minutes=10),
                status="pending",
                payload={},
            )
        )
        for pi, status, code in (("pi_a", "succeeded", None), ("pi_b", "failed", "card_declined")):
            conn.execute(
                insert(T["stripe_payments"]).values(
                    payment_intent_id=pi,
                    status=status,
                    failure_code=code,
                    amount_minor=100,
                    currency="usd",
                    stripe_created=int(now.timestamp()) - 60,
                )
            )
    values = samples(exposition_text(engine))
    assert values[("stripe_pipeline_events_pending", ())] == 2  # + the seeded retry
    assert values[("stripe_pipeline_events_open", (("status", "pending"),))] == 1
    assert values[("stripe_pipeline_events_dead_letter", ())] == 1
    assert values[("stripe_pipeline_oldest_pending_event_age_seconds", ())] > 86400
    assert values[("stripe_pipeline_event_error_ratio", ())] == 0  # 1 event in the hour, no error
    assert values[("stripe_pipeline_payment_success_ratio", ())] == 0.5
    assert values[("stripe_pipeline_recovery_success_ratio", ())] == 0.5
    assert values[("stripe_pipeline_support_tickets_open", (("priority", "high"),))] == 2
    assert values[("stripe_pipeline_support_tickets_open", (("priority", "critical"),))] == 0
    assert values[("stripe_pipeline_disputes_evidence_due", ())] == 1
    assert values[("stripe_pipeline_reconciliation_discrepancies_open", ())] == 0
    assert values[("stripe_pipeline_gauges_up", ())] == 1


def test_idle_ratios_are_nan_not_zero(engine: Engine) -> None:
    with engine.connect() as conn:
        gauges = {g.name: g.value for g in compute_gauges(conn) if not g.labels}
    assert math.isnan(gauges["stripe_pipeline_payment_success_ratio"])
    assert math.isnan(gauges["stripe_pipeline_recovery_success_ratio"])
    assert gauges["stripe_pipeline_oldest_pending_event_age_seconds"] == 0


def test_collector_reports_down_instead_of_failing_the_scrape(tmp_path: Path) -> None:
    broken = make_engine(f"sqlite:///{tmp_path / 'not-migrated.db'}")
    registry = CollectorRegistry()
    registry.register(PipelineCollector(broken))
    values = samples(generate_latest(registry).decode())
    assert values[("stripe_pipeline_gauges_up", ())] == 0
    broken.dispose()


def test_collector_caches_between_scrapes(engine: Engine) -> None:
    calls = []

    def engine_factory() -> Engine:
        calls.append(datetime.now(UTC))
        return engine

    collector = PipelineCollector(engine_factory, cache_seconds=60)
    registry = CollectorRegistry()
    registry.register(collector)
    generate_latest(registry)
    generate_latest(registry)
    assert len(calls) == 1


def test_collector_sits_beside_the_receiver_metrics(engine: Engine) -> None:
    """What the receiver's /metrics does: its own counters plus the pipeline collector."""
    from receiver.metrics import ReceiverMetrics

    metrics = ReceiverMetrics()
    metrics.add_collector(PipelineCollector(engine))
    metrics.observe("default", "stored", "charge.succeeded", 0.002)
    body, _ = metrics.render()
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"stripe_webhook_deliveries", "stripe_pipeline_events_pending"} <= names


def test_alert_rules_reference_exported_gauges() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert exprs
    exported = {
        "stripe_pipeline_events_pending",
        "stripe_pipeline_oldest_pending_event_age_seconds",
        "stripe_pipeline_event_error_ratio",
        "stripe_pipeline_payment_success_ratio",
        "stripe_pipeline_recovery_success_ratio",
        "stripe_pipeline_support_tickets_open",
        "stripe_pipeline_events_dead_letter",
        "stripe_pipeline_last_webhook_received_timestamp_seconds",
        "stripe_pipeline_disputes_evidence_due",
        "stripe_pipeline_gauges_up",
        "stripe_webhook_deliveries_total",
        "stripe_webhook_request_duration_seconds_bucket",
        "up",
    }
    for expr in exprs:
        used = {w for w in _metric_names(expr)}
        assert used <= exported, f"unknown metric in {expr!r}: {used - exported}"


def _metric_names(expr: str) -> set[str]:
    import re

    return {m for m in re.findall(r"\b(stripe_\w+|up)\b", expr)}
