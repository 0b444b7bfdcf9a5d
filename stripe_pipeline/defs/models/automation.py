"""When models and checks run: after processing updates their tables, and nightly."""

from __future__ import annotations

from collections.abc import Iterable

from dagster import AssetSelection, AutomationCondition

NIGHTLY_CRON = "30 3 * * *"  # after nightly_reconciliation has backfilled missed events
CHECKS_CRON = "*/15 * * * *"


def model_refresh(models: Iterable[str]) -> AutomationCondition:
    """Like ``eager()``, plus a nightly tick, with the missing-dependency guard on models only.

    The domain tables are created by migrations, not by Dagster, so a table that was
    never materialized in Dagster is not missing and must not hold the models back.
    A model another model selects from is different: until Dagster has built it the
    view or table does not exist, so a mart waits while a staging model it reads is
    missing and not requested on the same tick (held back because its own source was
    being written, say). A model never built is requested once (``missing``, not
    ``newly_missing``, so a fresh deployment builds its marts); a failed build waits
    for the next trigger.
    """
    model_deps = AssetSelection.assets(*models)
    return (
        (
            AutomationCondition.missing()
            | AutomationCondition.any_deps_updated()
            | AutomationCondition.cron_tick_passed(NIGHTLY_CRON)
        ).since_last_handled()
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.any_deps_missing().allow(model_deps)
        & ~AutomationCondition.in_progress()
    ).with_label(f"after upstream updates and nightly ({NIGHTLY_CRON} UTC)")


def health_check_schedule() -> AutomationCondition:
    """Health checks also watch time passing (a silent webhook endpoint updates nothing)."""
    return (
        AutomationCondition.cron_tick_passed(CHECKS_CRON) | AutomationCondition.any_deps_updated()
    ).with_label(f"every 15 minutes and after the asset updates ({CHECKS_CRON})")


def with_asset() -> AutomationCondition:
    """Blocking checks run in the same run as their asset, before anything downstream."""
    return AutomationCondition.any_deps_updated().with_label("with its asset")
