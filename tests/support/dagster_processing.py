"""Run the real ``process_stripe_events`` job in process against a test database."""

from __future__ import annotations

from typing import Any

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from stripe_pipeline.defs.common.resources import (
    DatabaseResource,
    NotifierResource,
    ProcessingSettings,
    StripeApiResource,
)
from stripe_pipeline.defs.processing.assets import stripe_domain_tables, stripe_events
from stripe_pipeline.defs.processing.checks import every_dead_letter_has_a_ticket, queue_keeps_up
from stripe_pipeline.defs.processing.jobs import PROCESSING_JOB_NAME, process_stripe_events_job


def processing_definitions(
    database_url: str,
    *,
    stripe_api: StripeApiResource | None = None,
    settings: ProcessingSettings | None = None,
) -> Definitions:
    """The processing area's definitions with resources pointing at the test peers."""
    return Definitions(
        assets=[stripe_events, stripe_domain_tables],
        asset_checks=[queue_keeps_up, every_dead_letter_has_a_ticket],
        jobs=[process_stripe_events_job],
        resources={
            "database": DatabaseResource(url=database_url),
            "processing_settings": settings or ProcessingSettings(),
            "notifier": NotifierResource(),
            "stripe_api": stripe_api or StripeApiResource(),
        },
    )


def run_processing(
    database_url: str,
    *,
    config: dict[str, Any] | None = None,
    instance: DagsterInstance | None = None,
    stripe_api: StripeApiResource | None = None,
) -> ExecuteInProcessResult:
    """Execute the job in process (what a sensor-requested run does, minus the daemon)."""
    defs = processing_definitions(database_url, stripe_api=stripe_api)
    job = defs.resolve_job_def(PROCESSING_JOB_NAME)
    run_config = {"ops": {"stripe_domain_tables": {"config": config}}} if config else None
    return job.execute_in_process(run_config=run_config, instance=instance)


def materialization_metadata(result: ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    """Asset name -> its materialization metadata, as plain values."""
    out: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        out[mat.asset_key.path[-1]] = {k: v.value for k, v in mat.metadata.items()}
    return out
