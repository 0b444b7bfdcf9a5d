"""Thresholds of the health checks and where their critical alerts go."""

from __future__ import annotations

from dataclasses import fields

from dagster import ConfigurableResource

from stripe_pipeline.config import load_check_overrides
from stripe_pipeline.monitoring.checks import Thresholds
from stripe_pipeline.support.notify import Notifier, build_notifier

_DEFAULTS = Thresholds()


class MonitoringResource(ConfigurableResource):
    """Check thresholds (see ``Thresholds``) and notification URLs for critical tickets.

    ``from_env()`` reads ``STRIPE_PIPELINE_CHECK_<FIELD>`` (e.g.
    ``STRIPE_PIPELINE_CHECK_PENDING_MAX_MINUTES=30``); empty ``notify_urls`` means
    ``STRIPE_PIPELINE_NOTIFY_URLS``, and log-only when that is unset too.
    """

    pending_max_minutes: float = _DEFAULTS.pending_max_minutes
    pending_critical_minutes: float = _DEFAULTS.pending_critical_minutes
    dead_letter_max: int = _DEFAULTS.dead_letter_max
    dispute_due_hours: float = _DEFAULTS.dispute_due_hours
    dispute_critical_hours: float = _DEFAULTS.dispute_critical_hours
    failure_ratio_max: float = _DEFAULTS.failure_ratio_max
    failure_ratio_window_hours: float = _DEFAULTS.failure_ratio_window_hours
    failure_ratio_min_payments: int = _DEFAULTS.failure_ratio_min_payments
    ticket_spike_window_hours: float = _DEFAULTS.ticket_spike_window_hours
    ticket_spike_baseline_days: float = _DEFAULTS.ticket_spike_baseline_days
    ticket_spike_factor: float = _DEFAULTS.ticket_spike_factor
    ticket_spike_min_count: int = _DEFAULTS.ticket_spike_min_count
    webhook_silence_hours: float = _DEFAULTS.webhook_silence_hours
    discrepancy_max: int = _DEFAULTS.discrepancy_max
    payout_failed_days: float = _DEFAULTS.payout_failed_days
    notify_urls: str = ""

    @classmethod
    def from_env(cls) -> MonitoringResource:
        values: dict[str, float | int] = {}
        overrides = load_check_overrides()
        for f in fields(Thresholds):
            raw = overrides.get(f.name)
            if raw:
                values[f.name] = (
                    int(raw) if isinstance(getattr(_DEFAULTS, f.name), int) else float(raw)
                )
        return cls(**values)

    def thresholds(self) -> Thresholds:
        return Thresholds(**{f.name: getattr(self, f.name) for f in fields(Thresholds)})

    def get_notifier(self) -> Notifier:
        urls = [u.strip() for u in self.notify_urls.split(",") if u.strip()]
        return build_notifier(urls or None)
