"""The Dagster code location: ``stripe_pipeline.definitions:defs``.

Thin assembly only. Each area keeps its assets, checks, sensors, schedules and jobs
in ``stripe_pipeline/defs/<area>/`` and exposes them as one ``Definitions`` object in
``stripe_pipeline/defs/<area>/definitions.py``; this file merges the areas and binds
the shared resources. Only ``defs`` is a ``Definitions`` at module scope, so
``dagster ... -m stripe_pipeline.definitions`` finds it without ``-a``.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from stripe_pipeline.defs.common.resources import DatabaseResource
from stripe_pipeline.defs.models import definitions as models
from stripe_pipeline.defs.privacy import definitions as privacy
from stripe_pipeline.defs.processing import definitions as processing
from stripe_pipeline.defs.reconciliation import definitions as reconciliation
from stripe_pipeline.defs.recovery import definitions as recovery

AREAS = (processing, recovery, reconciliation, models, privacy)

defs = Definitions.merge(
    # the default of asset jobs (model rebuilds started by automation): one process per
    # run, not per step; a step subprocess costs seconds (8-25 s each on a busy 2-core
    # machine: a rebuild of every model took minutes), and SQLite has one writer anyway
    Definitions(resources={"database": DatabaseResource()}, executor=in_process_executor),
    *(area.defs for area in AREAS),
)
