"""The models area: SQL model assets, their health checks, and the automation running them."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    define_asset_job,
)

from stripe_pipeline.defs.models.assets import MODEL_ASSETS, MODEL_KEYS, SOURCE_SPECS
from stripe_pipeline.defs.models.checks import HEALTH_CHECKS
from stripe_pipeline.defs.models.resources import MonitoringResource

MODEL_SELECTION = AssetSelection.assets(*MODEL_KEYS)

# model runs queue in their own lane (deploy/dagster*.yaml): a slow rebuild never takes
# the run slot that event processing needs
MODELS_RUN_TAGS = {"stripe_pipeline/concurrency": "models"}

# manual rebuild of every model and its checks (also handy after editing SQL)
refresh_models_job = define_asset_job(
    name="refresh_models",
    selection=MODEL_SELECTION,
    description="Rebuild every dbt_like_sql model (staging views, then marts) and its checks.",
    tags=MODELS_RUN_TAGS,
)

models_automation_sensor = AutomationConditionSensorDefinition(
    name="models_automation_sensor",
    target=MODEL_SELECTION,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    run_tags=MODELS_RUN_TAGS,
    description=(
        "Refreshes the models after processing updates their tables and nightly, and runs "
        "the health checks every 15 minutes."
    ),
)

defs = Definitions(
    assets=[*SOURCE_SPECS, *MODEL_ASSETS],
    asset_checks=HEALTH_CHECKS,
    jobs=[refresh_models_job],
    sensors=[models_automation_sensor],
    resources={"monitoring": MonitoringResource.from_env()},
)
