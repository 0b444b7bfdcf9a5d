"""The Dagster code location: ``stripe_pipeline.definitions:defs``.

Thin assembly only; each area's assets, checks, sensors, schedules and jobs live in
``stripe_pipeline/defs/<area>/``.
"""

from __future__ import annotations

from dagster import Definitions

from stripe_pipeline.defs.common.resources import DatabaseResource

defs = Definitions(
    resources={"database": DatabaseResource()},
)
