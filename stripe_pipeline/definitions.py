"""The Dagster code location: ``stripe_pipeline.definitions:defs``.

Thin assembly only. Each area keeps its assets, checks, sensors, schedules and jobs
in ``stripe_pipeline/defs/<area>/`` and exposes them as one ``Definitions`` object in
``stripe_pipeline/defs/<area>/definitions.py``; this file merges the areas and binds
the shared resources.
"""

from __future__ import annotations

from dagster import Definitions

from stripe_pipeline.defs.common.resources import DatabaseResource
from stripe_pipeline.defs.models.definitions import defs as models_defs
from stripe_pipeline.defs.processing.definitions import defs as processing_defs
from stripe_pipeline.defs.reconciliation.definitions import defs as reconciliation_defs
from stripe_pipeline.defs.recovery.definitions import defs as recovery_defs

AREAS: list[Definitions] = [processing_defs, recovery_defs, reconciliation_defs, models_defs]

defs = Definitions.merge(
    Definitions(resources={"database": DatabaseResource()}),
    *AREAS,
)
