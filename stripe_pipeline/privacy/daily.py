"""The daily privacy run: what the schedule and ``stripe-pipeline retention`` execute.

In order: erase customers Stripe deleted more than the configured delay ago; blank
the raw payloads of events that arrived about erased customers since the last run;
then retention (old payloads, deliveries, resolved tickets).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from stripe_pipeline.config import PrivacyOptions
from stripe_pipeline.privacy.erase import (
    ErasureResult,
    SweepResult,
    erase_deleted_customers,
    sweep_erased_events,
)
from stripe_pipeline.privacy.retention import RetentionResult, run_retention


@dataclass
class DailyResult:
    erasures: list[ErasureResult] = field(default_factory=list)
    sweep: SweepResult | None = None
    retention: RetentionResult | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "deleted_customers_erased": [e.customer_id for e in self.erasures],
            "sweep": asdict(self.sweep) if self.sweep else None,
            "retention": self.retention.as_dict() if self.retention else None,
        }


def run_daily_privacy(
    engine: Engine,
    options: PrivacyOptions,
    *,
    actor: str,
    dry_run: bool = False,
    full: bool = False,
    now: datetime | None = None,
) -> DailyResult:
    """Due erasures, the sweep of erased customers' new events, then retention."""
    now = now or datetime.now(UTC)
    result = DailyResult()
    result.erasures = erase_deleted_customers(
        engine, options, actor=actor, now=now, dry_run=dry_run
    )
    result.sweep = sweep_erased_events(engine, now=now, dry_run=dry_run)
    result.retention = run_retention(
        engine, options, dry_run=dry_run, full=full, triggered_by=actor, now=now
    )
    return result
