"""The few Dagster GraphQL calls the demo needs, over plain HTTP.

The demo talks to ``dagster dev`` like the UI does instead of importing Dagster, so
``stripe-pipeline dev`` starts fast and the CLI never loads Dagster at import time.
"""

from __future__ import annotations

from typing import Any

from stripe_pipeline.devtools.processes import post_json

REQUESTED_BY_TAG = "stripe_pipeline/requested_by"

LOCATIONS_QUERY = """
query DemoLocations {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""

JOBS_QUERY = """
query DemoJobs {
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { name location { name } jobs { name } }
    }
  }
}
"""

LAUNCH_MUTATION = """
mutation DemoLaunch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

# runs that are not finished yet (a run killed in one of these states ends FAILURE)
ACTIVE_RUNS_QUERY = """
query DemoActiveRuns {
  runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) {
    ... on Runs { results { runId jobName status } }
  }
}
"""

TERMINATE_MUTATION = """
mutation DemoTerminate($runIds: [String!]!) {
  terminateRuns(runIds: $runIds) { __typename }
}
"""

SENSORS_QUERY = """
query DemoSensors {
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { name location { name } sensors { id name sensorState { status } } }
    }
  }
}
"""

STOP_SENSOR_MUTATION = """
mutation DemoStopSensor($id: String!) { stopSensor(id: $id) { __typename } }
"""

START_SENSOR_MUTATION = """
mutation DemoStartSensor($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) { __typename }
}
"""


class DagsterAPI:
    """A client of one ``dagster dev`` webserver's ``/graphql`` endpoint."""

    def __init__(self, base_url: str) -> None:
        self.graphql_url = f"{base_url}/graphql"

    def query(self, query: str, **variables: Any) -> dict[str, Any]:
        answer = post_json(self.graphql_url, {"query": query, "variables": variables}, timeout=30)
        return answer.get("data") or {}

    def locations(self) -> list[dict[str, Any]]:
        try:
            data = self.query(LOCATIONS_QUERY)
        except (OSError, ValueError):
            return []
        workspace = data.get("workspaceOrError") or {}
        return list(workspace.get("locationEntries") or [])

    def loaded(self) -> bool:
        """True once every code location finished loading (successfully or not)."""
        entries = self.locations()
        return bool(entries) and all(e.get("loadStatus") == "LOADED" for e in entries)

    def jobs(self) -> dict[str, tuple[str, str]]:
        """Job name -> (repository, location) for every loaded repository."""
        found: dict[str, tuple[str, str]] = {}
        nodes = (self.query(JOBS_QUERY).get("repositoriesOrError") or {}).get("nodes") or []
        for repo in nodes:
            for job in repo["jobs"]:
                found.setdefault(job["name"], (repo["name"], repo["location"]["name"]))
        return found

    def launch(
        self, job: str, repository: str, location: str, run_config: dict | None = None
    ) -> str:
        """Launch ``job``; returns the run id or raises with the reason."""
        params = {
            "selector": {
                "repositoryLocationName": location,
                "repositoryName": repository,
                "jobName": job,
            },
            "runConfigData": run_config or {},
            "executionMetadata": {
                "tags": [{"key": "stripe_pipeline/requested_by", "value": "dev"}]
            },
        }
        result = self.query(LAUNCH_MUTATION, executionParams=params).get("launchRun") or {}
        if result.get("__typename") == "LaunchRunSuccess":
            return result["run"]["runId"]
        reason = result.get("message") or result.get("errors") or result.get("__typename")
        raise RuntimeError(f"could not launch {job}: {reason}")

    def active_runs(self) -> list[dict[str, Any]]:
        """Runs queued, starting, running or being canceled."""
        runs = self.query(ACTIVE_RUNS_QUERY).get("runsOrError") or {}
        return list(runs.get("results") or [])

    def terminate(self, run_ids: list[str]) -> None:
        """Ask Dagster to cancel these runs (they end CANCELED, not FAILURE)."""
        self.query(TERMINATE_MUTATION, runIds=run_ids)

    def running_sensors(self) -> list[dict[str, str]]:
        """Sensors now running: id, name, repository and location of each."""
        nodes = (self.query(SENSORS_QUERY).get("repositoriesOrError") or {}).get("nodes") or []
        return [
            {
                "id": sensor["id"],
                "name": sensor["name"],
                "repository": repo["name"],
                "location": repo["location"]["name"],
            }
            for repo in nodes
            for sensor in repo["sensors"]
            if (sensor.get("sensorState") or {}).get("status") == "RUNNING"
        ]

    def stop_sensor(self, sensor_id: str) -> None:
        self.query(STOP_SENSOR_MUTATION, id=sensor_id)

    def start_sensor(self, name: str, repository: str, location: str) -> None:
        selector = {
            "repositoryLocationName": location,
            "repositoryName": repository,
            "sensorName": name,
        }
        self.query(START_SENSOR_MUTATION, selector=selector)
