"""One asset per SQL model in ``dbt_like_sql/``, with its SQL shown in the UI.

Keys are model names, groups the model folders (``staging``, ``marts``); refs become
asset dependencies and ``source('t')`` a dependency on the domain-table asset ``t``.
Tables owned by no other area (``payment_recovery_attempts``, ``webhook_deliveries``)
are declared here as external assets so the lineage is complete.
"""

# no `from __future__ import annotations`: Dagster reads the context and resource
# annotations of the decorated functions at definition time
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)

from stripe_pipeline.defs.common.resources import DatabaseResource
from stripe_pipeline.defs.models.automation import model_refresh
from stripe_pipeline.model import Model, Project, load_project, materialize

# written by processing (failed payments) and the recovery area's dunning runs
payment_recovery_attempts = AssetSpec(
    key="payment_recovery_attempts",
    group_name="landing",
    description="Dunning state of each failed payment (written by processing and recovery).",
    kinds={"sql"},
)
# written by the receiver for every request it answers
webhook_deliveries = AssetSpec(
    key="webhook_deliveries",
    group_name="landing",
    description="Every request the webhook receiver answered, valid or not.",
    kinds={"sql"},
)
SOURCE_SPECS = [payment_recovery_attempts, webhook_deliveries]


def sql_markdown(sql: str) -> str:
    return f"```sql\n{sql.strip()}\n```"


def describe(model: Model) -> str:
    text = model.description or f"SQL model {model.name}."
    return f"{text}\n\n`{model.path.name}` ({model.materialized}):\n\n{sql_markdown(model.sql)}"


def model_asset(model: Model, project: Project) -> AssetsDefinition:
    """The asset that builds ``model`` as a table or view in the app database."""
    schema = TableSchema(
        columns=[TableColumn(name, "", description=doc) for name, doc in model.columns.items()]
    )

    @asset(
        name=model.name,
        group_name=model.group,
        deps=[AssetKey(name) for name in (*model.refs, *model.sources)],
        code_version=model.code_version,
        description=describe(model),
        kinds={"sql"},
        metadata={
            "sql": MetadataValue.md(sql_markdown(model.sql)),
            "path": MetadataValue.path(str(model.path.relative_to(project.root.parent))),
            "materialized": model.materialized,
            "dagster/column_schema": schema,
        },
        automation_condition=model_refresh(project.models),
    )
    def build(context: AssetExecutionContext, database: DatabaseResource) -> MaterializeResult:
        result = materialize(database.get_engine(), project, model)
        context.log.info("built %s %s: %d rows", result.materialized, model.name, result.row_count)
        return MaterializeResult(
            metadata={
                "dagster/row_count": result.row_count,
                "row_count": result.row_count,
                "materialized": result.materialized,
                "rendered_sql": MetadataValue.md(sql_markdown(result.sql)),
            },
        )

    return build


PROJECT = load_project()
MODEL_ASSETS: list[AssetsDefinition] = [model_asset(m, PROJECT) for m in PROJECT.order()]
MODEL_KEYS: list[AssetKey] = [AssetKey(m.name) for m in PROJECT.order()]
