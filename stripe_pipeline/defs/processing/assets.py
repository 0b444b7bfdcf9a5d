"""The domain tables as Dagster assets, materialized by one processing step.

The step is ``stripe_pipeline.process.runner.process_pending``; this module only
builds its arguments from config and resources (the ``Processor``, with the notifier
of this run's ``NotifierResource``) and publishes its report.
"""

import time
from collections.abc import Iterator, Mapping
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from pydantic import Field

from stripe_pipeline.config import load_settings
from stripe_pipeline.defs.common.resources import (
    DatabaseResource,
    NotifierResource,
    ProcessingSettings,
    StripeApiResource,
)
from stripe_pipeline.pipeline import build_processor
from stripe_pipeline.process.backoff import RetryPolicy
from stripe_pipeline.process.queue import has_due_events
from stripe_pipeline.process.runner import ProcessingReport, process_pending

DOMAIN_GROUP = "stripe_domain"
# products, prices, coupons, promotion codes, discounts: materialized by the same step,
# shown as their own group (the domain group's graph stays readable)
COMMERCE_GROUP = "stripe_commerce"
COMMERCE_TABLES = frozenset(
    {
        "stripe_products",
        "stripe_prices",
        "stripe_coupons",
        "stripe_promotion_codes",
        "stripe_discounts",
    }
)

# invoices' lines and totals, credit notes, tax, checkout, setup intents and Radar: their
# own group, so each lineage page stays readable
BILLING_GROUP = "stripe_billing"

stripe_events = AssetSpec(
    key="stripe_events",
    group_name="landing",
    description=(
        "Raw Stripe events landed by the webhook receiver (and by reconciliation "
        "backfills): the durable queue processing reads from."
    ),
    kinds={"sql"},
)

DOMAIN_TABLES: dict[str, str] = {
    "stripe_payments": "One row per PaymentIntent (or legacy charge): status, amounts, "
    "amount refunded, failure and decline codes.",
    "stripe_refunds": "Every refund, from refund events and charge.refunded refund lists.",
    "stripe_disputes": "Disputes through their lifecycle: status, reason, evidence, due_by.",
    "stripe_subscriptions": "Subscriptions: status, trial, current period, cancellation.",
    "stripe_invoices": "Invoices: status, amounts, attempts, paid and uncollectible times.",
    "stripe_customers": "Customers, including deleted ones (deleted_at).",
    "stripe_payment_methods": "Payment methods and whether they are attached to a customer.",
    "stripe_products": "Products, deleted ones marked (deleted_at).",
    "stripe_prices": "Prices and legacy plans (one row per id), deleted ones marked.",
    "stripe_coupons": "Coupons: percent or amount off, duration, redemptions; deleted marked.",
    "stripe_promotion_codes": "Promotion codes and the coupon each applies.",
    "stripe_discounts": "Discounts on customers, subscriptions, invoices and invoice items.",
    "payment_support_tickets": "Escalations a person must look at (dead-lettered events, "
    "failed checks), deduplicated per issue and object.",
}
# in BILLING_GROUP
BILLING_TABLES: dict[str, str] = {
    "stripe_invoice_line_items": "Invoice lines: subscription periods and invoice items, "
    "amounts, discounts and taxes per line.",
    "stripe_invoice_totals": "Invoice totals as Stripe computed them, with tax amounts per rate.",
    "stripe_credit_notes": "Credit notes: amounts given back on invoices, the refunds they made.",
    "stripe_credit_note_line_items": "Credit note lines, with their taxes.",
    "stripe_tax_rates": "Tax rates: percentage, country, state, jurisdiction.",
    "stripe_checkout_sessions": "Checkout sessions: opened, completed, expired, amounts.",
    "stripe_setup_intents": "Setup intents: saving payment methods, failures.",
    "stripe_early_fraud_warnings": "Radar early fraud warnings (read by the fraud rules).",
    "stripe_reviews": "Radar reviews, open and closed (read by the fraud rules).",
}
# payouts and the balance transactions they carry: their own group, where a finance
# user finds them beside nothing else
MONEY_GROUP = "stripe_money"
MONEY_TABLES: dict[str, str] = {
    "stripe_payouts": "Payouts to the bank: amount, status, arrival date, failure code and "
    "message, reconciliation status.",
    "stripe_balance_transactions": "Every movement of the Stripe balance: amount, Stripe's "
    "fee and net in the settlement currency, its source and the payout that carried it.",
}
_DESCRIPTIONS = {**DOMAIN_TABLES, **BILLING_TABLES, **MONEY_TABLES}


def _group(table: str) -> str:
    if table in COMMERCE_TABLES:
        return COMMERCE_GROUP
    if table in MONEY_TABLES:
        return MONEY_GROUP
    return BILLING_GROUP if table in BILLING_TABLES else DOMAIN_GROUP


DOMAIN_TABLE_KEYS: list[AssetKey] = [AssetKey(name) for name in _DESCRIPTIONS]


class ProcessingConfig(Config):
    """Per-run overrides; unset fields take the ``ProcessingSettings`` resource's value."""

    batch_size: int | None = Field(default=None, description="Events claimed per batch.")
    max_batches: int | None = Field(
        default=None, description="Stop after this many batches (the sensor starts another run)."
    )
    lease_seconds: int | None = Field(
        default=None,
        description="Longest a batch may stall before it is taken from this run; must "
        "exceed the time one batch takes.",
    )
    linger_seconds: float | None = Field(
        default=None,
        description="Stay up this long after draining to take newly landed events "
        "(lower latency while events keep coming; 0 = end at once).",
    )
    retry_base_seconds: float | None = None
    retry_factor: float | None = None
    retry_cap_seconds: float | None = None
    retry_max_retries: int | None = None


def _pick(override: Any, default: Any) -> Any:
    return default if override is None else override


def retry_policy(config: ProcessingConfig, settings: ProcessingSettings) -> RetryPolicy:
    return RetryPolicy(
        base_seconds=_pick(config.retry_base_seconds, settings.retry_base_seconds),
        factor=_pick(config.retry_factor, settings.retry_factor),
        cap_seconds=_pick(config.retry_cap_seconds, settings.retry_cap_seconds),
        max_retries=_pick(config.retry_max_retries, settings.retry_max_retries),
        jitter=settings.retry_jitter,  # type: ignore[arg-type]
    )


class LazyStripePeer:
    """Processing's Stripe API peer, built only when a parser needs it: a
    ``charge.refunded`` without its refund list, an invoice or credit note whose lines
    say ``has_more``, a basil payment failure without its invoice
    (``GET /v1/invoice_payments`` by PaymentIntent), or an object a row names that is
    not stored yet (a subscription's price: ``ObjectSource``)."""

    def __init__(self, api: StripeApiResource, database: DatabaseResource) -> None:
        self.api = api
        self.database = database

    def _client(self) -> Any:
        engine = self.database.get_engine()
        # the call happens inside the apply transaction: on SQLite that transaction holds
        # the only write lock, so an audit row written on another connection would wait
        # for it (busy timeout) and fail; PostgreSQL audits the call as usual
        audit_engine = None if engine.dialect.name == "sqlite" else engine
        return self.api.get_client(audit_engine, actor="processor")

    def list_charge_refunds(self, charge_id: str) -> list[dict[str, Any]]:
        return self._client().list_charge_refunds(charge_id)

    def list_payment_intent_invoice_payments(
        self, payment_intent_id: str
    ) -> list[dict[str, Any]] | None:
        return self._client().list_payment_intent_invoice_payments(payment_intent_id)

    def fetch_object(self, path: str) -> dict[str, Any] | None:
        return self._client().fetch_object(path)

    def list_lines(self, path: str) -> list[dict[str, Any]]:
        return self._client().list_lines(path)


def refund_source(api: StripeApiResource, database: DatabaseResource) -> LazyStripePeer | None:
    """The API only when a key is configured; without one, refund rows come from the
    ``refund.*`` events alone and invoice links from ``invoice_payment.*`` events and
    reconciliation (the appliers note both) instead of those events retrying until
    they are dead-lettered."""
    if api.api_key or load_settings().stripe_api_key:
        return LazyStripePeer(api, database)
    return None


LINGER_POLL_SECONDS = 0.25


def _linger(
    engine: Any,
    report: ProcessingReport,
    seconds: float,
    max_batches: int | None,
    options: dict[str, Any],
) -> None:
    """Stay up to ``seconds`` after draining and take events that arrive meanwhile.

    A new run costs seconds (sensor tick, queue, process start); a run that is already
    up picks a new event within a quarter second. Bounded by the linger window and by
    ``max_batches`` in total, so the sensor stays in charge of pacing.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        budget = None if max_batches is None else max_batches - report.batches
        if budget is not None and budget <= 0:
            return
        if not has_due_events(engine):
            time.sleep(LINGER_POLL_SECONDS)
            continue
        part = process_pending(engine, max_batches=budget, **options)
        report.merge(part)
        report.duration_seconds += part.duration_seconds


def events_table_markdown(by_type: Mapping[str, Mapping[str, int]]) -> str:
    """Events by type and outcome as a markdown table (one column per outcome)."""
    outcomes = sorted({o for counts in by_type.values() for o in counts})
    if not by_type:
        return "_no events processed in this run_"
    lines = [
        "| event type | " + " | ".join(outcomes) + " | total |",
        "|---|" + "---:|" * (len(outcomes) + 1),
    ]
    for event_type, counts in sorted(by_type.items()):
        cells = [str(counts.get(o, 0)) for o in outcomes]
        lines.append(f"| {event_type} | " + " | ".join(cells) + f" | {sum(counts.values())} |")
    return "\n".join(lines)


def run_metadata(report: ProcessingReport) -> dict[str, Any]:
    """The run summary every domain asset carries (the step materializes them together)."""
    age = report.oldest_pending_age_seconds
    return {
        "events_by_type_and_outcome": MetadataValue.md(
            events_table_markdown(report.events_by_type_and_outcome())
        ),
        "events_claimed": report.claimed,
        "processed": report.processed,
        "ignored": report.ignored,
        "retries_scheduled": report.retries_scheduled,
        "dead_lettered": report.dead_lettered,
        "tickets_opened": report.tickets_opened,
        "oldest_pending_age_seconds": MetadataValue.float(float(age) if age is not None else 0.0),
        "remaining_due": report.remaining_due,
        "batches": report.batches,
        "duration_seconds": MetadataValue.float(round(report.duration_seconds, 3)),
        "worker_id": report.worker_id,
    }


@multi_asset(
    name="stripe_domain_tables",
    specs=[
        AssetSpec(
            key=key,
            deps=[stripe_events],
            group_name=_group(key.path[-1]),
            description=_DESCRIPTIONS[key.path[-1]],
            kinds={"sql"},
            skippable=False,
        )
        for key in DOMAIN_TABLE_KEYS
    ],
    description="Claim due events from stripe_events and apply them to the domain tables.",
)
def stripe_domain_tables(
    context: AssetExecutionContext,
    config: ProcessingConfig,
    database: DatabaseResource,
    processing_settings: ProcessingSettings,
    notifier: NotifierResource,
    stripe_api: StripeApiResource,
) -> Iterator[MaterializeResult]:
    settings = processing_settings
    engine = database.get_engine()
    options: dict[str, Any] = {
        "policy": retry_policy(config, settings),
        "batch_size": _pick(config.batch_size, settings.batch_size),
        "workers": settings.workers,
        "worker_id": f"dagster:{context.run.run_id}",
        "lease_seconds": _pick(config.lease_seconds, settings.lease_seconds),
        "processor": build_processor(
            notifier.get_notifier(), peer=refund_source(stripe_api, database)
        ),
    }
    max_batches = _pick(config.max_batches, settings.max_batches)
    report = process_pending(engine, max_batches=max_batches, **options)
    linger = float(_pick(config.linger_seconds, settings.linger_seconds))
    if linger > 0:
        _linger(engine, report, linger, max_batches, options)
    context.log.info(
        "processed %d events in %d batch(es): %d processed, %d ignored, %d retries, "
        "%d dead-lettered, %d ticket(s) opened",
        report.claimed,
        report.batches,
        report.processed,
        report.ignored,
        report.retries_scheduled,
        report.dead_lettered,
        report.tickets_opened,
    )
    summary = run_metadata(report)
    for key in DOMAIN_TABLE_KEYS:
        table = key.path[-1]
        rows = report.rows_written.get(table, 0)
        if table == "payment_support_tickets":
            rows += report.tickets_opened
        yield MaterializeResult(asset_key=key, metadata={"rows_written": rows, **summary})
