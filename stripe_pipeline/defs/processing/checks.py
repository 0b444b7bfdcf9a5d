"""Asset checks of processing: the queue keeps up, and no dead letter goes unticketed."""

from dagster import AssetCheckResult, AssetCheckSeverity, asset_check
from sqlalchemy import exists, func, select

from stripe_pipeline.config import load_orchestration_options
from stripe_pipeline.db.models import PaymentSupportTicket, StripeEvent
from stripe_pipeline.db.statuses import EventStatus
from stripe_pipeline.defs.common.resources import DatabaseResource
from stripe_pipeline.defs.processing.assets import DOMAIN_TABLE_KEYS
from stripe_pipeline.process.queue import queue_stats


def max_queue_age_seconds() -> float:
    """Oldest due event age that still counts as keeping up (default 15 minutes)."""
    return load_orchestration_options().max_queue_age_seconds


@asset_check(
    asset="stripe_events",
    name="queue_keeps_up",
    # runs after the processing step of the same run, so it judges what is left over
    additional_deps=DOMAIN_TABLE_KEYS,
    description="The oldest due event in stripe_events is younger than the allowed lag.",
)
def queue_keeps_up(database: DatabaseResource) -> AssetCheckResult:
    stats = queue_stats(database.get_engine())
    limit = max_queue_age_seconds()
    age = stats.oldest_due_age_seconds or 0.0
    return AssetCheckResult(
        passed=age <= limit,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "oldest_due_age_seconds": age,
            "max_age_seconds": limit,
            "due": stats.due,
            "pending": stats.pending,
            "retry_due": stats.retry_due,
            "retry_waiting": stats.retry_waiting,
            "processing": stats.processing,
            "lease_expired": stats.lease_expired,
            "dead_letter": stats.dead_letter,
        },
    )


@asset_check(
    asset="payment_support_tickets",
    name="every_dead_letter_has_a_ticket",
    description="Each dead-lettered event is escalated: a support ticket names it.",
)
def every_dead_letter_has_a_ticket(database: DatabaseResource) -> AssetCheckResult:
    events, tickets = StripeEvent.__table__.c, PaymentSupportTicket.__table__.c
    unticketed = (
        select(func.count())
        .select_from(StripeEvent.__table__)
        .where(
            events.status == EventStatus.DEAD_LETTER,
            ~exists().where(tickets.stripe_event_id == events.stripe_event_id),
        )
    )
    with database.get_engine().connect() as conn:
        missing = conn.execute(unticketed).scalar_one()
    return AssetCheckResult(passed=missing == 0, metadata={"dead_letters_without_ticket": missing})
