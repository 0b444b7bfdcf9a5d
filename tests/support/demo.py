"""One ``stripe-pipeline dev`` per test session, shared by the demo and browser tests.

The demo costs a Dagster webserver, a daemon and ~20 s to come up, so it starts once:
both test modules define a session fixture that returns :func:`shared_demo`, a
process-wide :class:`DemoManager`. The demo runs as a real subprocess on free ports
with a temporary data folder; stopping it sends SIGINT, exactly what Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, text

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.devtools.processes import descendants, group_alive, is_alive, post_json
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 120.0
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], timeout: float = 90.0, interval: float = 0.5) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@dataclass
class RunningDemo:
    """A ``stripe-pipeline dev`` subprocess and what it reports in its status file."""

    data_dir: Path
    ports: dict[str, int]
    process: subprocess.Popen[bytes]
    output: Path
    seen_pids: set[int] = field(default_factory=set)
    _engine: Engine | None = None

    @property
    def status_file(self) -> Path:
        return self.data_dir / "dev_status.json"

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    @property
    def dagster_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dagster']}"

    @property
    def localstripe_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['localstripe']}"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.status()["database_url"])
        return self._engine

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        answer = post_json(
            f"{self.dagster_url}/graphql", {"query": query, "variables": variables}, timeout=30
        )
        if answer.get("errors"):
            raise AssertionError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def output_text(self) -> str:
        return self.output.read_text(errors="replace")

    def remember_processes(self) -> None:
        """Snapshot the demo's process tree, to prove later that all of it is gone."""
        if self.process.poll() is None:
            self.seen_pids |= descendants(self.process.pid)

    def wait_stage(self, *stages: str, timeout: float = STARTUP_TIMEOUT) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"stripe-pipeline dev exited with {self.process.returncode}:\n"
                    + self.output_text()[-4000:]
                )
            status = self.status()
            if status.get("stage") in stages:
                self.remember_processes()
                return status
            return None

        return wait_for(f"demo stage {stages}", probe, timeout)

    def stop(self) -> int:
        """Ctrl-C (SIGINT to the demo process only); returns its exit code."""
        self.remember_processes()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:  # pragma: no cover - a bug: clean up anyway
                os.killpg(self.process.pid, signal.SIGKILL)
                for pid in self.seen_pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                raise
        return self.process.returncode

    def survivors(self) -> list[int]:
        """Processes of the demo still alive (after :meth:`stop`, this must be empty)."""
        groups = [pid for pid in self.status().get("children", {}).values() if group_alive(pid)]
        return sorted({pid for pid in self.seen_pids if is_alive(pid)} | set(groups))


class DemoManager:
    """Starts the demo on first use and again (same data folder) after a stop."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = {
            "receiver": free_port(),
            "dagster": free_port(),
            "localstripe": free_port(),
            "stripe-api": free_port(),
        }
        self.current: RunningDemo | None = None
        self.runs = 0

    def start(self, *extra: str) -> RunningDemo:
        self.runs += 1
        output = self.data_dir.parent / f"dev-output-{self.runs}.log"
        argv = [
            sys.executable, "-m", "stripe_pipeline.cli", "dev",
            "--data-dir", str(self.data_dir),
            "--receiver-port", str(self.ports["receiver"]),
            "--dagster-port", str(self.ports["dagster"]),
            "--localstripe-port", str(self.ports["localstripe"]),
            "--stripe-api-port", str(self.ports["stripe-api"]),
            "--traffic-interval", "0",
            *extra,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
        env.pop("DAGSTER_HOME", None)
        with output.open("wb") as sink:
            process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.current = RunningDemo(self.data_dir, self.ports, process, output)
        return self.current

    def running(self) -> RunningDemo:
        """The demo with its first burst of traffic sent (restarted if a test stopped it)."""
        if self.current is None or self.current.process.poll() is not None:
            self.start() if self.current is None else self.start("--no-traffic")
        assert self.current is not None
        self.current.wait_stage("traffic-sent", "running")
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()


_MANAGER: DemoManager | None = None


def shared_demo(base_dir: Path) -> DemoManager:
    """The session's one demo; ``base_dir`` is used by the first caller only."""
    global _MANAGER
    if _MANAGER is None:
        data_dir = base_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        _MANAGER = DemoManager(data_dir)
    return _MANAGER
