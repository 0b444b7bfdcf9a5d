"""Asset checks of recovery: unreviewed fraud hits and recoveries stuck past their due time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dagster import AssetCheckResult, AssetCheckSeverity, asset_check
from sqlalchemy import func, select

from stripe_pipeline.db.models import FraudRuleHit, PaymentRecoveryAttempt, PaymentSupportTicket
from stripe_pipeline.defs.common.resources import DatabaseResource

HITS = FraudRuleHit.__table__
TICKETS = PaymentSupportTicket.__table__
RECOVERIES = PaymentRecoveryAttempt.__table__


@asset_check(asset="fraud_rule_hits", description="Fraud hits whose ticket is still open.")
def fraud_hits_reviewed(database: DatabaseResource) -> AssetCheckResult:
    with database.get_engine().connect() as conn:
        rows = conn.execute(
            select(HITS.c.rule, func.count())
            .select_from(HITS.join(TICKETS, HITS.c.support_ticket_id == TICKETS.c.id))
            .where(TICKETS.c.status != "resolved")
            .group_by(HITS.c.rule)
        ).all()
    open_by_rule = {rule: count for rule, count in rows}
    return AssetCheckResult(
        passed=not open_by_rule,
        severity=AssetCheckSeverity.WARN,
        metadata={"open_hits": sum(open_by_rule.values()), **open_by_rule},
    )


@asset_check(
    asset="payment_recovery_retries",
    description="Open recoveries overdue by more than an hour mean retries are not running.",
)
def recoveries_not_overdue(database: DatabaseResource) -> AssetCheckResult:
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    with database.get_engine().connect() as conn:
        overdue, oldest = conn.execute(
            select(func.count(), func.min(RECOVERIES.c.next_attempt_at)).where(
                RECOVERIES.c.status == "open", RECOVERIES.c.next_attempt_at < cutoff
            )
        ).one()
    return AssetCheckResult(
        passed=overdue == 0,
        metadata={"overdue": overdue, "oldest_due": str(oldest) if oldest else "none"},
    )
