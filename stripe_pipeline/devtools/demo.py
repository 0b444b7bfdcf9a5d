"""``stripe-pipeline dev``: the whole pipeline on one machine, against a fake Stripe.

Order of events: migrate the app database, start the Stripe front (a thread of this
process, see :mod:`stripe_pipeline.devtools.stripe_peer`), then localstripe (127.0.0.1
only), the receiver and ``dagster dev`` as supervised children, wait until each
answers, register the receiver as localstripe's webhook endpoint, drive traffic, then
report progress until Ctrl-C (or ``--exit-after``). The pipeline and the traffic talk
to the front, never to localstripe directly: it serves what localstripe lacks
(disputes, namespaced and missing collections, Stripe's list semantics) and keeps the
fixture-built objects the demo signs as events, so the Stripe the nightly
reconciliation reads agrees with the events it was sent. Everything lives under one
data folder, so a second run continues with the same SQLite database, the same
localstripe and front state and the same Dagster instance.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stripe_pipeline.devtools.dagster_api import DagsterAPI
from stripe_pipeline.devtools.processes import (
    StartupError,
    Supervisor,
    descendants_running,
    http_ready,
    install_signal_handlers,
    is_alive,
    orphans_of_dead_demos,
    wait_until,
)

if TYPE_CHECKING:
    from stripe_pipeline.devtools.stripe_peer import StripePeer
    from stripe_pipeline.devtools.traffic import TrafficDriver

API_KEY = "sk_test_stripe_pipeline_dev"
DEMO_PID_ENV = "STRIPE_PIPELINE_DEV_PID"  # marks every child, to find orphans later
# launched once the first traffic is processed, so their assets and checks show up too;
# reconciliation over the window since the last run (every object type, through the
# front): the nightly job reconciles yesterday's partition, and the demo's objects are
# today's
FOLLOW_UP_JOBS: dict[str, dict[str, Any]] = {
    "reconciliation_window": {},
    "payment_recovery": {},
    "fraud_screening": {},
}
SETTLE_TIMEOUT = 60.0
# on the way out: how long runs in flight may take to finish, then to cancel
RUN_DRAIN_SECONDS = 30.0
RUN_CANCEL_SECONDS = 15.0
DAGSTER_DAEMON_MODULE = "dagster._daemon"  # how `dagster dev` starts its daemon
WEBHOOK_ID = "stripe-pipeline-dev"
LOCALHOST = "127.0.0.1"

MINIMAL_DAGSTER_YAML = """\
# Written by `stripe-pipeline dev` (no deploy/dagster.dev.yaml was found).
storage:
  sqlite:
    base_dir:
      env: DAGSTER_HOME
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 1
    dequeue_interval_seconds: 1
telemetry:
  enabled: false
"""


_STARTED = time.monotonic()


def log(message: str) -> None:
    """One line of what the demo is doing, with seconds since start; flushed for pipes."""
    print(f"[dev +{time.monotonic() - _STARTED:5.1f}s] {message}", flush=True)


def repo_root() -> Path:
    """The source checkout holding ``workspace.yaml`` (the demo needs an editable install)."""
    return Path(__file__).resolve().parents[2]


@dataclass
class DemoConfig:
    """Everything ``stripe-pipeline dev`` can be told; defaults fit a laptop."""

    data_dir: Path = Path("data")
    receiver_port: int = 8000
    dagster_port: int = 3000
    localstripe_port: int = 8420
    stripe_api_port: int = 8421
    customers: int = 6
    traffic: bool = True
    traffic_interval: float = 30.0
    exit_after: float | None = None
    receiver_workers: int = 1
    receiver_threads: int = 4


@dataclass
class DemoPaths:
    """Where the demo keeps its state, all under the data folder."""

    data_dir: Path
    logs: Path = field(init=False)
    dagster_home: Path = field(init=False)
    localstripe_state: Path = field(init=False)
    stripe_peer_state: Path = field(init=False)
    settings_file: Path = field(init=False)
    status_file: Path = field(init=False)
    paused_sensors: Path = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.dagster_home = self.data_dir / "dagster_home"
        self.localstripe_state = self.data_dir / "localstripe.pickle"
        self.stripe_peer_state = self.data_dir / "stripe_peer.json"
        self.settings_file = self.data_dir / "dev.json"
        self.status_file = self.data_dir / "dev_status.json"
        self.paused_sensors = self.data_dir / "dagster_paused_sensors.json"


def webhook_secret(paths: DemoPaths) -> str:
    """The demo's signing secret: created once per data folder, so reruns agree with it."""
    try:
        return json.loads(paths.settings_file.read_text())["webhook_secret"]
    except (OSError, ValueError, KeyError):
        secret = "whsec_dev_" + secrets.token_hex(16)
        paths.settings_file.write_text(json.dumps({"webhook_secret": secret}, indent=2) + "\n")
        paths.settings_file.chmod(0o600)
        return secret


def reap_orphans(paths: DemoPaths) -> None:
    """Kill what an earlier demo on this data folder left running when it was SIGKILLed."""
    orphans = orphans_of_dead_demos("STRIPE_PIPELINE_DATA_DIR", str(paths.data_dir), DEMO_PID_ENV)
    if not orphans:
        return
    log(f"stopping {len(orphans)} process(es) left by an earlier demo that was killed")
    for pid in orphans:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(is_alive(pid) for pid in orphans):
        time.sleep(0.1)


def ensure_ports_free(ports: dict[str, int]) -> None:
    """Fail before starting anything when a port is taken (a demo from an earlier run?)."""
    for name, port in ports.items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOCALHOST, port))
            except OSError as exc:
                raise StartupError(
                    f"port {port} for {name} is in use ({exc.strerror}); "
                    f"choose another with --{name}-port"
                ) from None


def write_dagster_yaml(paths: DemoPaths) -> Path:
    """Give ``dagster dev`` its instance config: the repo's dev file, else a minimal one."""
    paths.dagster_home.mkdir(parents=True, exist_ok=True)
    target = paths.dagster_home / "dagster.yaml"
    source = repo_root() / "deploy" / "dagster.dev.yaml"
    if source.is_file():
        shutil.copyfile(source, target)
    else:
        target.write_text(MINIMAL_DAGSTER_YAML)
    return target


def localstripe_runner() -> Path:
    """The script that runs localstripe bound to 127.0.0.1; GPL code stays out of process."""
    runner = repo_root() / "tests" / "support" / "localstripe_runner.py"
    if not runner.is_file():
        raise StartupError(
            f"{runner} not found: `stripe-pipeline dev` needs a source checkout "
            "installed with `pip install -e '.[dev]'`"
        )
    return runner


def migrate_database(database_url: str) -> str:
    """Bring the app schema to head before any child touches it."""
    from stripe_pipeline.db import migrate
    from stripe_pipeline.db.engine import make_engine

    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        return migrate.current_revision(engine) or "base"
    finally:
        engine.dispose()


def child_environment(
    config: DemoConfig, paths: DemoPaths, database_url: str, secret: str
) -> dict[str, str]:
    """One environment for every child, so they agree on database, secret and API base
    (the Stripe front, not localstripe)."""
    env = dict(os.environ)
    env.update(
        {
            "STRIPE_PIPELINE_DATA_DIR": str(paths.data_dir),
            "STRIPE_PIPELINE_DATABASE_URL": database_url,
            "STRIPE_WEBHOOK_SECRET": secret,
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": f"http://{LOCALHOST}:{config.stripe_api_port}",
            "DAGSTER_HOME": str(paths.dagster_home),
            "PYTHONUNBUFFERED": "1",
            DEMO_PID_ENV: str(os.getpid()),
        }
    )
    # the demo's Dagster instance must not report usage home
    env.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    return env


def localstripe_ready(base_url: str) -> bool:
    request = urllib.request.Request(
        f"{base_url}/v1/customers?limit=1", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def register_webhook(localstripe_url: str, receiver_url: str, secret: str) -> None:
    """Point localstripe's signed deliveries at the receiver (not persisted by localstripe)."""
    body = urllib.parse.urlencode({"url": receiver_url, "secret": secret}).encode()
    request = urllib.request.Request(
        f"{localstripe_url}/_config/webhooks/{WEBHOOK_ID}", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        if response.status >= 300:
            raise StartupError(f"localstripe refused the webhook registration: {response.status}")


@dataclass
class LocalStripeUpstream:
    """The demo's localstripe as the Stripe front sees it."""

    base_url: str
    api_key: str = API_KEY

    def flush(self) -> None:
        request = urllib.request.Request(f"{self.base_url}/_config/data", method="DELETE")
        with urllib.request.urlopen(request, timeout=5):
            pass


def start_stripe_front(config: DemoConfig, paths: DemoPaths) -> StripePeer:
    """The Stripe API the pipeline and the traffic talk to: the front over localstripe,
    serving on 127.0.0.1 from a thread of the demo process, its store in the data folder."""
    from stripe_pipeline.devtools.stripe_peer import StripePeer

    upstream = LocalStripeUpstream(f"http://{LOCALHOST}:{config.localstripe_port}")
    front = StripePeer(upstream, state_file=paths.stripe_peer_state)
    try:
        return front.start(config.stripe_api_port)
    except OSError as exc:  # taken since the ports were checked
        raise StartupError(
            f"port {config.stripe_api_port} for the Stripe front: {exc.strerror}; "
            "choose another with --stripe-api-port"
        ) from None


class Demo:
    """One run of the demo: owns the supervisor, the URLs and the status file."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.paths = DemoPaths(Path(config.data_dir))
        self.localstripe_url = f"http://{LOCALHOST}:{config.localstripe_port}"
        self.stripe_api_url = f"http://{LOCALHOST}:{config.stripe_api_port}"
        self.receiver_url = f"http://{LOCALHOST}:{config.receiver_port}"
        self.dagster_url = f"http://{LOCALHOST}:{config.dagster_port}"
        self.webhook_url = f"{self.receiver_url}/webhooks/stripe"
        self.dagster = DagsterAPI(self.dagster_url)
        self.supervisor: Supervisor | None = None
        self.stripe_front: StripePeer | None = None
        self.database_url = ""

    # -- status file: how tests (and curious people) see what is running ------------
    def write_status(self, stage: str, **extra: Any) -> None:
        status = {
            "stage": stage,
            "pid": os.getpid(),
            "children": self.supervisor.process_groups() if self.supervisor else {},
            "urls": {
                "localstripe": self.localstripe_url,
                "stripe_api": self.stripe_api_url,
                "receiver": self.receiver_url,
                "webhook": self.webhook_url,
                "dagster": self.dagster_url,
            },
            "database_url": self.database_url,
            "dagster_home": str(self.paths.dagster_home),
            "logs": str(self.paths.logs),
            **extra,
        }
        tmp = self.paths.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2, default=str) + "\n")
        tmp.replace(self.paths.status_file)

    def run(self) -> int:
        """Start everything, drive traffic, report; always stop every child on the way out."""
        config, paths = self.config, self.paths
        paths.data_dir.mkdir(parents=True, exist_ok=True)
        reap_orphans(paths)
        ensure_ports_free(
            {
                "localstripe": config.localstripe_port,
                "stripe-api": config.stripe_api_port,
                "receiver": config.receiver_port,
                "dagster": config.dagster_port,
            }
        )
        from stripe_pipeline.config import load_settings, redact_url

        settings = load_settings({**os.environ, "STRIPE_PIPELINE_DATA_DIR": str(paths.data_dir)})
        self.database_url = settings.database_url
        secret = webhook_secret(paths)
        log(f"data folder {paths.data_dir} (logs in {paths.logs})")
        revision = migrate_database(self.database_url)
        log(f"app database {redact_url(self.database_url)} migrated to {revision}")
        dagster_yaml = write_dagster_yaml(paths)
        log(f"Dagster instance DAGSTER_HOME={paths.dagster_home} ({dagster_yaml.name} ready)")

        env = child_environment(config, paths, self.database_url, secret)
        self.supervisor = Supervisor(paths.logs, env, cwd=repo_root())
        install_signal_handlers(lambda signum: log(f"{signal.Signals(signum).name}: stopping"))
        started = time.monotonic()
        dagster_up = False
        try:
            self.stripe_front = start_stripe_front(config, paths)
            log(f"Stripe front (what localstripe lacks, Stripe's lists) on {self.stripe_api_url}")
            self._start_children()
            self.write_status("starting")
            self._wait_ready()
            dagster_up = True
            self.resume_sensors()
            register_webhook(self.localstripe_url, self.webhook_url, secret)
            log(f"localstripe now delivers signed webhooks to {self.webhook_url}")
            self.write_status("ready")
            self._print_banner()
            return self._drive_and_watch(started)
        except KeyboardInterrupt:
            return 130
        except StartupError as exc:
            log(f"error: {exc}")
            return 1
        finally:
            self.write_status("stopping")
            if dagster_up:
                self.finish_dagster_runs()
            self.supervisor.stop()
            if self.stripe_front is not None:
                self.stripe_front.stop()
            self.write_status("stopped")
            log("every child process stopped")

    def _start_children(self) -> None:
        assert self.supervisor is not None
        config = self.config
        root = repo_root()
        workspace = root / "workspace.yaml"
        if workspace.is_file():
            target = ["-w", str(workspace)]
        else:
            target = ["-m", "stripe_pipeline.definitions"]
        # Dagster is the slowest to come up: start it first
        self.supervisor.start(
            "dagster",
            [sys.executable, "-m", "dagster", "dev", *target,
             "-h", LOCALHOST, "-p", str(config.dagster_port)],
        )  # fmt: skip
        log(f"starting Dagster (webserver + daemon) on {self.dagster_url}")
        self.supervisor.start(
            "localstripe",
            [sys.executable, str(localstripe_runner()), "--port", str(config.localstripe_port),
             "--state-file", str(self.paths.localstripe_state)],
        )  # fmt: skip
        log(f"starting localstripe (fake Stripe API) on {self.localstripe_url}")
        self.supervisor.start(
            "receiver",
            [sys.executable, "-m", "stripe_pipeline.cli", "serve", "--host", LOCALHOST,
             "--port", str(config.receiver_port), "--workers", str(config.receiver_workers),
             "--threads", str(config.receiver_threads)],
        )  # fmt: skip
        log(f"starting the receiver on {self.receiver_url}")

    def _wait_ready(self) -> None:
        assert self.supervisor is not None
        sup = self.supervisor
        wait_until("localstripe", lambda: localstripe_ready(self.localstripe_url), sup, 30)
        log("localstripe ready")
        wait_until("receiver", lambda: http_ready(f"{self.receiver_url}/healthz"), sup, 30)
        log("receiver ready")
        wait_until("Dagster webserver", lambda: http_ready(f"{self.dagster_url}/server_info"),
                   sup, 120)  # fmt: skip
        wait_until("Dagster code location", self.dagster.loaded, sup, 120, 0.5)
        for entry in self.dagster.locations():
            error = (entry.get("locationOrLoadError") or {}).get("message")
            if error:
                log(f"warning: code location {entry['name']} failed to load: {error.strip()}")
            else:
                log(f"Dagster ready: code location {entry['name']} loaded")

    def _print_banner(self) -> None:
        lines = [
            "",
            "  stripe-pipeline dev is running (Ctrl-C stops everything)",
            f"  Dagster UI        {self.dagster_url}/assets",
            f"  receiver          {self.webhook_url}   (metrics: {self.receiver_url}/metrics)",
            f"  fake Stripe API   {self.stripe_api_url}   (STRIPE_API_KEY={API_KEY}; "
            f"localstripe behind it on {self.localstripe_url})",
            f"  app database      {self.database_url}",
            f"  logs              {self.paths.logs}/{{dagster,receiver,localstripe}}.log",
            "",
        ]
        print("\n".join(lines), flush=True)

    def _drive_and_watch(self, started: float) -> int:
        """Send traffic, print pipeline progress, repeat a small round every interval."""
        assert self.supervisor is not None
        from stripe_pipeline.devtools.progress import PipelineProgress

        progress = PipelineProgress(self.database_url)
        traffic = None
        if self.config.traffic:
            from stripe_pipeline.devtools.traffic import TrafficDriver

            traffic = TrafficDriver(
                api_base=self.stripe_api_url,
                api_key=API_KEY,
                stripe_front=self.stripe_front,
                webhook_url=self.webhook_url,
                webhook_secret=webhook_secret(self.paths),
                say=log,
            )
            summary = self._traffic_round(traffic, customers=self.config.customers)
            self.write_status("traffic-sent", traffic=summary)
        next_round = time.monotonic() + self.config.traffic_interval
        follow_ups_due = time.monotonic() + SETTLE_TIMEOUT
        follow_ups_done = False
        last_line = ""
        try:
            while True:
                self.supervisor.check_alive()
                line = progress.summary_line()
                if line != last_line:
                    log(line)
                    last_line = line
                    self.write_status("running", progress=progress.last)
                now = time.monotonic()
                if not follow_ups_done and (progress.settled() or now >= follow_ups_due):
                    self.launch_follow_ups()
                    follow_ups_done = True
                if self.config.exit_after is not None and now - started >= self.config.exit_after:
                    log(f"--exit-after {self.config.exit_after:g} s reached")
                    return 0
                if traffic is not None and self.config.traffic_interval > 0 and now >= next_round:
                    self._traffic_round(traffic, customers=1, fixture_events=False)
                    next_round = now + self.config.traffic_interval
                time.sleep(2)
        finally:
            progress.close()

    def _traffic_round(self, traffic: TrafficDriver, **kwargs: Any) -> dict[str, int]:
        """One round of traffic; a fake-Stripe hiccup is reported, and the demo goes on."""
        import stripe

        try:
            return traffic.run_round(**kwargs)
        except (stripe.StripeError, OSError) as exc:
            log(f"warning: traffic stopped early: {type(exc).__name__}: {exc}")
            return {}

    def finish_dagster_runs(self, timeout: float = RUN_DRAIN_SECONDS) -> None:
        """Before stopping: pause the sensors, let the runs in flight finish, cancel what
        is left, and stop the daemon so that it launches nothing more.

        A run whose worker is killed ends FAILURE (Dagster's run monitoring marks it so
        on the next start), which would greet the user with a red run that only says the
        demo stopped. The sensors would keep submitting runs (a model rebuild after each
        processing run) while the others drain, so they pause first; the next start
        resumes them (:meth:`resume_sensors`). A second Ctrl-C skips the wait.
        """
        try:
            self._pause_sensors()
            deadline = time.monotonic() + timeout
            active = self.dagster.active_runs()
            if active:
                log(
                    f"waiting up to {timeout:g} s for {len(active)} Dagster run(s) to finish "
                    "(Ctrl-C again to stop at once)"
                )
            while active and time.monotonic() < deadline:
                time.sleep(0.25)
                active = self.dagster.active_runs()
            if active:
                ids = [run["runId"] for run in active]
                log(f"canceling {len(ids)} Dagster run(s) still in flight")
                self.dagster.terminate(ids)
                deadline = time.monotonic() + RUN_CANCEL_SECONDS
                while self.dagster.active_runs() and time.monotonic() < deadline:
                    time.sleep(0.25)
        except KeyboardInterrupt:
            log("stopping at once")
        except (OSError, ValueError) as exc:
            log(f"warning: could not wait for Dagster runs: {exc}")
        finally:
            self._stop_dagster_daemon()

    def _pause_sensors(self) -> None:
        """Stop the running sensors, noting them first so the next start resumes them."""
        sensors = self.dagster.running_sensors()
        if not sensors:
            return
        noted = {s["name"]: s for s in self._paused_sensors()}
        noted.update({s["name"]: s for s in sensors})
        self.paths.paused_sensors.write_text(json.dumps(list(noted.values()), indent=2) + "\n")
        for sensor in sensors:
            self.dagster.stop_sensor(sensor["id"])

    def _paused_sensors(self) -> list[dict[str, str]]:
        try:
            return list(json.loads(self.paths.paused_sensors.read_text()))
        except (OSError, ValueError):
            return []

    def resume_sensors(self) -> None:
        """Start the sensors the last run paused on its way out (and only those: a sensor
        the user stopped in the UI stays stopped)."""
        sensors = self._paused_sensors()
        for sensor in sensors:
            try:
                self.dagster.start_sensor(sensor["name"], sensor["repository"], sensor["location"])
            except (OSError, ValueError) as exc:
                log(f"warning: could not resume sensor {sensor['name']}: {exc}")
                return
        if sensors:
            log(f"resumed {len(sensors)} sensor(s) paused when the demo last stopped")
        self.paths.paused_sensors.unlink(missing_ok=True)

    def _stop_dagster_daemon(self) -> None:
        dagster = self.supervisor.child("dagster") if self.supervisor else None
        if dagster is None:
            return
        dagster.remember_descendants()  # the daemon's children are still to be stopped
        for pid in descendants_running(dagster.pid, DAGSTER_DAEMON_MODULE):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def launch_follow_ups(self) -> None:
        """Run reconciliation and recovery once now rather than at their nightly schedule."""
        try:
            jobs = self.dagster.jobs()
        except (OSError, ValueError) as exc:
            log(f"warning: cannot list Dagster jobs: {exc}")
            return
        for job, run_config in FOLLOW_UP_JOBS.items():
            if job not in jobs:
                continue
            try:
                run_id = self.dagster.launch(job, *jobs[job], run_config=run_config)
            except (OSError, ValueError, RuntimeError) as exc:
                log(f"warning: {exc}")
                continue
            log(f"launched Dagster job {job}: {self.dagster_url}/runs/{run_id}")


def run_demo(config: DemoConfig) -> int:
    """Entry point of ``stripe-pipeline dev``; returns the process exit code."""
    try:
        return Demo(config).run()
    except StartupError as exc:  # raised before any child started (a busy port)
        print(f"error: {exc}", file=sys.stderr)
        return 1
