"""Jobs of the processing area: process the queue, act on a ticket, replay events."""

from datetime import UTC, datetime
from enum import Enum

from dagster import (
    AssetSelection,
    Config,
    OpExecutionContext,
    define_asset_job,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from stripe_pipeline.defs.common.resources import DatabaseResource
from stripe_pipeline.defs.processing.assets import DOMAIN_TABLE_KEYS
from stripe_pipeline.defs.processing.checks import queue_keeps_up
from stripe_pipeline.support.workflow import replay_events, requeue_ticket_events, resolve

PROCESSING_JOB_NAME = "process_stripe_events"
# the dagster.yaml run queue limits runs carrying this tag (see deploy/dagster.yaml)
CONCURRENCY_TAG = "stripe_pipeline/concurrency"

process_stripe_events_job = define_asset_job(
    name=PROCESSING_JOB_NAME,
    # the domain tables with their checks, plus the queue check that runs after them
    selection=AssetSelection.assets(*DOMAIN_TABLE_KEYS) | AssetSelection.checks(queue_keeps_up),
    description=(
        "Claim pending and due events from stripe_events in batches and apply them to "
        "the domain tables. Requested by stripe_events_sensor; safe to launch by hand."
    ),
    # one step: the in-process executor saves the seconds a step subprocess costs
    executor_def=in_process_executor,
    tags={CONCURRENCY_TAG: "processing"},
)


class TicketAction(Enum):
    """AutoRetry (re-queue the ticket's events) or ManualResolution (close with a note)."""

    retry = "retry"
    resolve = "resolve"


class TicketActionConfig(Config):
    ticket_id: int = Field(description="payment_support_tickets.id")
    action: TicketAction = Field(description="retry: re-queue its events; resolve: close it")
    note: str = Field(default="", description="Required to resolve: why it is closed.")
    actor: str = Field(default="dagster-ui", description="Who acts, for the audit log.")


@op(description="Re-queue a ticket's dead-lettered events, or resolve it with a note.")
def apply_ticket_action(
    context: OpExecutionContext, config: TicketActionConfig, database: DatabaseResource
) -> None:
    engine = database.get_engine()
    actor = f"{config.actor} (dagster run {context.run_id[:8]})"
    if config.action is TicketAction.retry:
        result = requeue_ticket_events(engine, config.ticket_id, actor=actor)
        context.log.info(
            "ticket %d: %d event(s) re-queued, ticket now %s",
            result.ticket_id,
            result.events_requeued,
            result.ticket_status,
        )
        context.add_output_metadata(
            {"events_requeued": result.events_requeued, "ticket_status": result.ticket_status}
        )
    else:
        resolve(engine, config.ticket_id, note=config.note, actor=actor)
        context.log.info("ticket %d resolved", config.ticket_id)


@job(
    name="support_ticket_action",
    description="Support workflow from the UI: retry or resolve a payment support ticket.",
    executor_def=in_process_executor,
)
def support_ticket_action_job() -> None:
    apply_ticket_action()


class ReplayConfig(Config):
    """Filters are ANDed; at least one is required (a typo never replays everything)."""

    ids: list[str] = Field(default=[], description="Row ids or Stripe event ids (evt_...).")
    event_type: str | None = Field(default=None, description="Exact type, or a prefix with *.")
    since: str | None = Field(default=None, description="ISO time or Unix seconds, inclusive.")
    until: str | None = Field(default=None, description="ISO time or Unix seconds, exclusive.")
    status: list[str] = Field(
        default=[], description="processed, ignored and/or dead_letter (default: all three)."
    )
    actor: str = "dagster-ui"
    dry_run: bool = Field(default=False, description="Only count what would be replayed.")


def parse_time(value: str | None) -> datetime | int | None:
    """Unix seconds or an ISO 8601 time (naive means UTC)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@op(description="Re-queue stored events by id, type, time range or status.")
def replay_selected_events(
    context: OpExecutionContext, config: ReplayConfig, database: DatabaseResource
) -> None:
    count = replay_events(
        database.get_engine(),
        ids=config.ids or None,
        event_type=config.event_type,
        since=parse_time(config.since),
        until=parse_time(config.until),
        status=config.status or None,
        actor=f"{config.actor} (dagster run {context.run_id[:8]})",
        dry_run=config.dry_run,
    )
    verb = "would replay" if config.dry_run else "re-queued"
    context.log.info("%s %d event(s); the sensor picks them up on its next tick", verb, count)
    context.add_output_metadata({"events": count, "dry_run": config.dry_run})


@job(
    name="replay_stripe_events",
    description="Replay stored events (idempotent: appliers are newest-event-wins).",
    executor_def=in_process_executor,
)
def replay_stripe_events_job() -> None:
    replay_selected_events()
