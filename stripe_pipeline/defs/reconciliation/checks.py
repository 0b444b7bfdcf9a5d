"""The discrepancy check: one deduplicated ticket per open discrepancy, and tickets
closed once a later run no longer finds (or has repaired) their discrepancy."""

from collections import Counter

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check
from sqlalchemy import func, select

from stripe_pipeline.db.engine import begin_write
from stripe_pipeline.db.models import ReconciliationDiscrepancy
from stripe_pipeline.defs.common.resources import DatabaseResource
from stripe_pipeline.defs.reconciliation.assets import DAILY_KEY
from stripe_pipeline.reconcile.heal import (
    UNRESOLVED,
    close_tickets_of_resolved,
    ticket_open_discrepancies,
)


@asset_check(
    asset="reconciliation_discrepancies",
    name="discrepancies_are_ticketed",
    description="Raises a support ticket per unresolved discrepancy (deduplicated by object, "
    "kind and field) and closes tickets whose discrepancy is gone. Warns while any is open.",
)
def discrepancies_are_ticketed(database: DatabaseResource) -> AssetCheckResult:
    return ticket_discrepancies(database)


@asset_check(
    asset=DAILY_KEY,
    name="daily_discrepancies_are_ticketed",
    description="After a day's reconciliation: a support ticket per unresolved discrepancy "
    "(deduplicated), tickets closed whose discrepancy is gone. Warns while any is open.",
)
def daily_discrepancies_are_ticketed(database: DatabaseResource) -> AssetCheckResult:
    return ticket_discrepancies(database)


def ticket_discrepancies(database: DatabaseResource) -> AssetCheckResult:
    """Every unresolved discrepancy ticketed (any run's, any day's), resolved ones closed."""
    d = ReconciliationDiscrepancy.__table__.c
    with begin_write(database.get_engine()) as conn:  # reads, then writes
        closed = close_tickets_of_resolved(conn, actor="reconciliation-check")
        opened = ticket_open_discrepancies(conn, actor="reconciliation-check")
        rows = conn.execute(
            select(d.object_type, d.kind, func.count())
            .where(d.status.in_(UNRESOLVED))
            .group_by(d.object_type, d.kind)
        ).all()
    unresolved = Counter({f"{t}/{k}": n for t, k, n in rows})
    total = sum(unresolved.values())
    return AssetCheckResult(
        passed=total == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "unresolved": total,
            "unresolved_by_type_and_kind": MetadataValue.json(dict(unresolved)),
            "tickets_opened_or_seen_again": len(opened),
            "tickets_closed": len(closed),
        },
    )
