"""The models area in Dagster: one asset per model, SQL in the UI, checks with tickets."""

from __future__ import annotations

from dagster import AssetKey, DagsterInstance, materialize
from sqlalchemy import select

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.db.models import metadata
from stripe_pipeline.defs.common.resources import DatabaseResource
from stripe_pipeline.defs.models.assets import MODEL_ASSETS, PROJECT
from stripe_pipeline.defs.models.checks import HEALTH_CHECKS
from stripe_pipeline.defs.models.definitions import defs
from stripe_pipeline.defs.models.resources import MonitoringResource
from tests.support.model_seed import seed_all


def test_every_model_is_an_asset_with_its_sql_and_deps() -> None:
    specs = {spec.key: spec for a in MODEL_ASSETS for spec in a.specs}
    assert set(specs) == {AssetKey(name) for name in PROJECT.models}
    for name, model in PROJECT.models.items():
        spec = specs[AssetKey(name)]
        assert spec.group_name == model.group
        assert spec.code_version == model.code_version
        assert "```sql" in (spec.description or "")
        assert {d.asset_key for d in spec.deps} == {
            AssetKey(k) for k in (*model.refs, *model.sources)
        }
    sources = {spec.key for a in MODEL_ASSETS for spec in a.specs for d in spec.deps}
    assert AssetKey("stripe_payments") not in sources  # only via deps, never redefined here
    assert [s.name for s in defs.sensors or []] == ["models_automation_sensor"]


def test_materializing_models_records_rows_and_runs_checks(fresh_sqlite_url: str) -> None:
    engine = make_engine(fresh_sqlite_url)
    seed_all(engine)
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [*MODEL_ASSETS, *HEALTH_CHECKS],
        instance=instance,
        resources={
            "database": DatabaseResource(url=fresh_sqlite_url),
            "monitoring": MonitoringResource(),
        },
        raise_on_error=False,
    )
    assert result.success
    materializations = {
        ev.asset_key.to_user_string(): ev.step_materialization_data.materialization
        for ev in result.get_asset_materialization_events()
    }
    assert set(materializations) == set(PROJECT.models)
    assert materializations["payments_daily"].metadata["dagster/row_count"].value > 0
    assert "```sql" in materializations["payments_daily"].metadata["rendered_sql"].value
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {c.check_name for c in evaluations.values()} >= {
        "events_dead_lettered",
        "disputes_evidence_due",
        "payments_missing_currency",
        "payouts_unbalanced",
        "payouts_failed",
        "payment_fees_missing",
    }
    # the seeded payouts balance to the cent; none failed
    assert evaluations["payouts_unbalanced"].passed
    assert evaluations["payouts_failed"].passed
    # seeded data has a dead letter and a dispute due in 48 h: both ticketed, once
    assert not evaluations["events_dead_lettered"].passed
    assert evaluations["payments_missing_currency"].passed
    tickets = metadata.tables["payment_support_tickets"]
    with engine.connect() as conn:
        keys = set(conn.execute(select(tickets.c.dedupe_key)).scalars())
    assert {"check:events_dead_lettered", "check:disputes_evidence_due"} <= keys
    engine.dispose()


def test_automation_builds_missing_models_then_waits_for_upstream_updates() -> None:
    from dagster import Definitions, evaluate_automation_conditions

    full = Definitions.merge(defs, Definitions(resources={"database": DatabaseResource()}))
    instance = DagsterInstance.ephemeral()
    # the first tick only records state; the second builds every model (and checks) once
    first = evaluate_automation_conditions(defs=full, instance=instance)
    second = evaluate_automation_conditions(defs=full, instance=instance, cursor=first.cursor)
    requested = {name for name in PROJECT.models if second.get_num_requested(AssetKey(name))}
    assert requested == set(PROJECT.models)
    third = evaluate_automation_conditions(defs=full, instance=instance, cursor=second.cursor)
    assert third.total_requested == 0  # requested once; nothing changed upstream since


def test_a_mart_waits_for_a_staging_model_held_back_by_its_source() -> None:
    """A staging view whose source table is being written is not requested; a mart
    reading that view must not be built on the same tick (it would fail with "no such
    table"), and both are built once the source is written."""
    from dagster import (
        AssetMaterialization,
        DagsterEventType,
        DagsterRun,
        DagsterRunStatus,
        Definitions,
        evaluate_automation_conditions,
    )

    # no public call plans a materialization without executing a job: the event a
    # run logs when it starts writing an asset is reported by hand
    from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent

    full = Definitions.merge(defs, Definitions(resources={"database": DatabaseResource()}))
    instance = DagsterInstance.ephemeral()
    writing = instance.add_run(
        DagsterRun(job_name="process_events", status=DagsterRunStatus.STARTED)
    )
    instance.report_dagster_event(
        DagsterEvent(
            event_type_value=DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value,
            job_name="process_events",
            event_specific_data=AssetMaterializationPlannedData(AssetKey("stripe_subscriptions")),
        ),
        run_id=writing.run_id,
    )
    first = evaluate_automation_conditions(defs=full, instance=instance)
    second = evaluate_automation_conditions(defs=full, instance=instance, cursor=first.cursor)
    built = {name for name in PROJECT.models if second.get_num_requested(AssetKey(name))}
    held = set(PROJECT.models) - built
    assert {"stg_stripe__subscription_items", "mrr_by_product_price"} <= held
    assert "payments_daily" in built  # nothing else waits
    for name in built:
        instance.report_runless_asset_event(AssetMaterialization(name))
    instance.report_runless_asset_event(AssetMaterialization("stripe_subscriptions"))
    instance.report_run_failed(instance.get_run_by_id(writing.run_id))
    third = evaluate_automation_conditions(defs=full, instance=instance, cursor=second.cursor)
    assert {name for name in PROJECT.models if third.get_num_requested(AssetKey(name))} == held


def test_model_runs_queue_in_their_own_lane() -> None:
    """Automation and manual rebuilds carry the models tag that deploy/dagster*.yaml limit,
    so a slow rebuild never takes the run slot event processing needs."""
    from stripe_pipeline.defs.models.definitions import (
        MODELS_RUN_TAGS,
        models_automation_sensor,
        refresh_models_job,
    )

    assert MODELS_RUN_TAGS == {"stripe_pipeline/concurrency": "models"}
    assert dict(models_automation_sensor.run_tags or {}) == MODELS_RUN_TAGS
    assert refresh_models_job.tags == MODELS_RUN_TAGS
