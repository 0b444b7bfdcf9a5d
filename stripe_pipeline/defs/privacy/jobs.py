"""Jobs of the privacy area: ``erase_customer`` (a request, from the Launchpad) and
``daily_privacy`` (retention and due erasures, by schedule). Both run one at a time
(run tag ``stripe_pipeline/concurrency: privacy``) and only call the domain functions
in ``stripe_pipeline.privacy``; the run's metadata shows what was done."""

from typing import Any

from dagster import (
    Config,
    Failure,
    MetadataValue,
    OpExecutionContext,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from stripe_pipeline.config import load_privacy_options
from stripe_pipeline.defs.common.resources import DatabaseResource
from stripe_pipeline.privacy.daily import run_daily_privacy
from stripe_pipeline.privacy.erase import ErasureError, erase_customer

CONCURRENCY_TAG = "stripe_pipeline/concurrency"
TAGS = {CONCURRENCY_TAG: "privacy"}


class EraseCustomerConfig(Config):
    """One erasure request (GDPR art. 17, CCPA): who, and who asks."""

    customer_id: str = Field(description="The Stripe customer id (cus_...).")
    actor: str = Field(
        default="dagster-ui",
        description="Who asks, for the audit log (a name or the request's reference).",
    )
    dry_run: bool = Field(default=False, description="Only count what would be blanked.")


def _actor(actor: str, context: OpExecutionContext) -> str:
    return f"{actor} (dagster run {context.run_id[:8]})"


@op(description="Blank one customer's personal data in every table; keep ids and amounts.")
def erase_customer_data(
    context: OpExecutionContext, config: EraseCustomerConfig, database: DatabaseResource
) -> None:
    try:
        result = erase_customer(
            database.get_engine(),
            config.customer_id,
            actor=_actor(config.actor, context),
            reason="request",
            dry_run=config.dry_run,
        )
    except ErasureError as exc:
        raise Failure(description=str(exc)) from exc
    context.log.info(
        "%s %s: %d row(s) %s",
        "dry run for" if config.dry_run else "erased",
        result.customer_id,
        result.rows_changed,
        "would change" if config.dry_run else "changed",
    )
    context.add_output_metadata(
        {
            "customer_id": result.customer_id,
            "dry_run": result.dry_run,
            "first_erasure": result.first_erasure,
            "rows_changed": result.rows_changed,
            "counts": MetadataValue.json(result.counts),
        }
    )


@job(
    name="erase_customer",
    description="Erase a customer's personal data (email, name, phone, addresses, card "
    "digits, descriptions, dispute evidence) from every table and raw payload; ids, "
    "amounts, statuses and dates stay. Recorded in erasures and the audit log; safe to "
    "run again. See docs/privacy.md.",
    executor_def=in_process_executor,
    tags=TAGS,
)
def erase_customer_job() -> None:
    erase_customer_data()


class DailyPrivacyConfig(Config):
    dry_run: bool = Field(default=False, description="Only count; change nothing.")
    full: bool = Field(
        default=False, description="Rescan every event, not only those since the last run."
    )
    actor: str = Field(default="privacy_schedule", description="Who, for the records.")


def daily_metadata(summary: dict[str, Any]) -> dict[str, Any]:
    retention = summary["retention"] or {}
    sweep = summary["sweep"] or {}
    return {
        "dry_run": retention.get("dry_run", False),
        "payloads_dropped": retention.get("payloads_dropped", 0),
        "payloads_held_by_tickets": retention.get("payloads_held_by_tickets", 0),
        "deliveries_deleted": retention.get("deliveries_deleted", 0),
        "tickets_deleted": retention.get("tickets_deleted", 0),
        "retention_seconds": retention.get("seconds", 0.0),
        "retention_transactions": retention.get("transactions", 0),
        "deleted_customers_erased": len(summary["deleted_customers_erased"]),
        "erased_customers_events_blanked": sweep.get("events_redacted", 0),
        "settings": MetadataValue.json(retention.get("settings") or {}),
    }


@op(description="Due erasures of deleted customers, new events of erased ones, retention.")
def daily_privacy_run(
    context: OpExecutionContext, config: DailyPrivacyConfig, database: DatabaseResource
) -> None:
    result = run_daily_privacy(
        database.get_engine(),
        load_privacy_options(),
        actor=_actor(config.actor, context),
        dry_run=config.dry_run,
        full=config.full,
    )
    summary = result.as_dict()
    context.log.info("daily privacy run: %s", summary)
    context.add_output_metadata(daily_metadata(summary))


@job(
    name="daily_privacy",
    description="Retention (old raw payloads dropped to their envelope, old deliveries and "
    "resolved tickets deleted, in short batches), erasure of customers Stripe deleted "
    "more than STRIPE_PIPELINE_ERASE_AFTER_DELETE_DAYS ago, and blanking of new events "
    "about erased customers. Daily by schedule; dry_run in the config only counts.",
    executor_def=in_process_executor,
    tags=TAGS,
)
def daily_privacy_job() -> None:
    daily_privacy_run()
