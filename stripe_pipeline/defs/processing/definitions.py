"""The processing area: domain-table assets, their checks, jobs and sensor."""

from __future__ import annotations

from dagster import Definitions

from stripe_pipeline.defs.common.resources import (
    STRIPE_API_RESOURCE_KEY,
    NotifierResource,
    ProcessingSettings,
    stripe_api_resource,
)
from stripe_pipeline.defs.processing.assets import stripe_domain_tables, stripe_events
from stripe_pipeline.defs.processing.checks import every_dead_letter_has_a_ticket, queue_keeps_up
from stripe_pipeline.defs.processing.jobs import (
    process_stripe_events_job,
    replay_stripe_events_job,
    support_ticket_action_job,
)
from stripe_pipeline.defs.processing.sensors import stripe_events_sensor

defs = Definitions(
    assets=[stripe_events, stripe_domain_tables],
    asset_checks=[queue_keeps_up, every_dead_letter_has_a_ticket],
    jobs=[process_stripe_events_job, support_ticket_action_job, replay_stripe_events_job],
    sensors=[stripe_events_sensor],
    resources={
        "processing_settings": ProcessingSettings.from_env(),
        "notifier": NotifierResource(),
        STRIPE_API_RESOURCE_KEY: stripe_api_resource,
    },
)
