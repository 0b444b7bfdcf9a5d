"""Health checks beside the marts they watch; each opens or closes its support ticket.

Thin wrappers over ``stripe_pipeline.monitoring``: evaluate the check, record the
ticket (one per failing check, closed when it passes again), notify on a new critical
ticket, and report the numbers. Only the data-quality checks on staging models are
blocking: there a failure means the marts built from them would be wrong.
"""

from dataclasses import dataclass

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AutomationCondition,
    asset_check,
)

from stripe_pipeline.defs.common.resources import DatabaseResource
from stripe_pipeline.defs.models.automation import health_check_schedule, with_asset
from stripe_pipeline.defs.models.resources import MonitoringResource
from stripe_pipeline.monitoring import checks as health
from stripe_pipeline.monitoring.escalation import run_check


@dataclass(frozen=True)
class CheckWiring:
    asset: str
    check: health.CheckFunction
    blocking: bool = False


WIRING = (
    CheckWiring("webhook_health_hourly", health.events_pending_too_long),
    CheckWiring("webhook_health_hourly", health.events_dead_lettered),
    CheckWiring("webhook_health_hourly", health.webhook_silence),
    CheckWiring("disputes_summary", health.disputes_evidence_due),
    CheckWiring("payments_daily", health.payment_failure_ratio),
    CheckWiring("support_tickets_summary", health.ticket_volume_spike),
    CheckWiring("payout_reconciliation", health.payouts_unbalanced),
    CheckWiring("payout_reconciliation", health.payouts_failed),
    CheckWiring("balance_daily", health.payment_fees_missing),
    CheckWiring("stg_stripe__payments", health.payments_missing_currency, blocking=True),
    CheckWiring(
        "stg_stripe__subscription_items", health.subscription_items_unpriced, blocking=True
    ),
)
# Open reconciliation discrepancies are ticketed by the reconciliation area's own
# check (discrepancies_are_ticketed); health.open_discrepancies feeds the gauges only.


def health_asset_check(wiring: CheckWiring) -> AssetChecksDefinition:
    check = wiring.check
    condition: AutomationCondition = with_asset() if wiring.blocking else health_check_schedule()

    @asset_check(
        asset=wiring.asset,
        name=check.__name__,
        description=(check.__doc__ or "").strip().splitlines()[0]
        + " Opens a deduplicated support ticket while failing and closes it on pass.",
        blocking=wiring.blocking,
        automation_condition=condition,
    )
    def _check(database: DatabaseResource, monitoring: MonitoringResource) -> AssetCheckResult:
        outcome, action = run_check(
            database.get_engine(),
            check,
            monitoring.thresholds(),
            notifier=monitoring.get_notifier(),
        )
        severity = (
            AssetCheckSeverity.ERROR if outcome.severity == "error" else AssetCheckSeverity.WARN
        )
        return AssetCheckResult(
            passed=outcome.passed,
            severity=severity,
            description=outcome.summary,
            metadata={
                **outcome.metadata,
                "ticket_action": action.action,
                "ticket_id": action.ticket_id,
                "ticket_dedupe_key": outcome.dedupe_key,
            },
        )

    return _check


HEALTH_CHECKS: list[AssetChecksDefinition] = [health_asset_check(w) for w in WIRING]
