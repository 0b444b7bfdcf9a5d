"""``stripe_events_sensor``: request a processing run while the queue has due work.

The database is the queue and the source of truth; the sensor only asks it whether
anything is pending or due for retry. Hence:

* no run storms: it skips while ``STRIPE_PIPELINE_MAX_PROCESSING_RUNS`` (default 1)
  runs of the job are queued or in progress, and requests at most one run per tick;
* run keys never repeat (tick time plus a uuid), because Dagster remembers a run key
  forever and would silently drop a later reprocessing that reused one;
* the cursor carries diagnostics only, so resetting it can strand nothing.
"""

import json
import uuid
from datetime import UTC, datetime

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from stripe_pipeline.config import load_orchestration_options
from stripe_pipeline.defs.common.resources import DatabaseResource
from stripe_pipeline.defs.processing.jobs import PROCESSING_JOB_NAME, process_stripe_events_job

SENSOR_NAME = "stripe_events_sensor"
IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def sensor_interval_seconds() -> int:
    """Tick interval; Dagster's daemon evaluates sensors at best every few seconds."""
    return load_orchestration_options().sensor_interval_seconds


def max_processing_runs() -> int:
    """How many processing runs may be queued or running at once (claims are disjoint)."""
    return load_orchestration_options().max_processing_runs


def has_due_events_in(database: DatabaseResource) -> bool:
    """Imported lazily so a missing queue module shows as a sensor error, not a load error."""
    from stripe_pipeline.process.queue import has_due_events

    return has_due_events(database.get_engine())


@sensor(
    name=SENSOR_NAME,
    job=process_stripe_events_job,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=sensor_interval_seconds(),
    description="Requests process_stripe_events when stripe_events has pending or due events.",
)
def stripe_events_sensor(
    context: SensorEvaluationContext, database: DatabaseResource
) -> RunRequest | SkipReason:
    in_flight = context.instance.get_runs_count(
        RunsFilter(job_name=PROCESSING_JOB_NAME, statuses=IN_FLIGHT)
    )
    limit = max_processing_runs()
    if in_flight >= limit:
        return SkipReason(f"{in_flight} processing run(s) queued or running (limit {limit})")
    if not has_due_events_in(database):
        return SkipReason("no pending or due events in stripe_events")
    now = datetime.now(UTC)
    run_key = f"{now:%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:12]}"
    # diagnostics only: processing never depends on it, so a reset strands nothing
    context.update_cursor(json.dumps({"last_run_key": run_key, "last_request_at": now.isoformat()}))
    return RunRequest(run_key=run_key, tags={"stripe_pipeline/requested_by": SENSOR_NAME})
