"""Dagster assets of payment recovery: due retries through the API, and fraud screening.

Thin wiring only: the work is in ``stripe_pipeline.recover``. Dunning of processed
events is a post-apply hook of the processing step (``stripe_pipeline.pipeline``).
"""

from datetime import timedelta

from dagster import (
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from stripe_pipeline.defs.common.resources import (
    DatabaseResource,
    NotifierResource,
    StripeApiResource,
)
from stripe_pipeline.recover import fraud
from stripe_pipeline.recover.limits import AttemptLimits
from stripe_pipeline.recover.retry import run_due_retries


class RecoveryRunConfig(Config):
    """Per-run knobs; limits default to card-network retry rules."""

    max_recoveries: int = 5000
    workers: int = 4
    card_per_30_days: int = 15
    card_per_day: int = 4
    customer_per_30_days: int = 45
    customer_per_day: int = 10


class FraudScanConfig(Config):
    lookback_hours: float = 24.0


@asset(
    group_name="recovery",
    description="Retries due failed payments (pay the invoice / confirm the PaymentIntent) "
    "within the per-card and per-customer attempt limits; each run is one pass.",
    kinds={"python", "stripe"},
)
def payment_recovery_retries(
    context: AssetExecutionContext,
    config: RecoveryRunConfig,
    database: DatabaseResource,
    stripe_api: StripeApiResource,
    notifier: NotifierResource,
) -> MaterializeResult:
    engine = database.get_engine()
    messages = notifier.get_notifier()
    api = stripe_api.get_client(audit_engine=engine, actor=f"dagster_run:{context.run.run_id}")
    summary = run_due_retries(
        engine,
        api,
        limits=AttemptLimits.configured(
            card_per_30_days=config.card_per_30_days,
            card_per_day=config.card_per_day,
            customer_per_30_days=config.customer_per_30_days,
            customer_per_day=config.customer_per_day,
        ),
        notifier=messages,
        max_recoveries=config.max_recoveries,
        workers=config.workers,
        actor=f"dagster_run:{context.run.run_id}",
    )
    context.log.info("recovery run: %s", summary.as_metadata())
    return MaterializeResult(metadata=summary.as_metadata())


@asset(
    group_name="recovery",
    description="Fraud rules (card testing, many cards, early fraud warnings, disputes on "
    "active customers) over recent events; new hits open high-priority tickets and flag "
    "the customer.",
    kinds={"python"},
)
def fraud_rule_hits(
    context: AssetExecutionContext, config: FraudScanConfig, database: DatabaseResource
) -> MaterializeResult:
    result = fraud.scan(
        database.get_engine(),
        lookback=timedelta(hours=config.lookback_hours),
        actor=f"dagster_run:{context.run.run_id}",
    )
    return MaterializeResult(
        metadata={
            "new_hits": result.new_hits,
            "hits_in_window": len(result.hits),
            "hits_by_rule": MetadataValue.json(result.by_rule()),
            "scanned_from": result.scanned_from,
            "scanned_to": result.scanned_to,
        }
    )
