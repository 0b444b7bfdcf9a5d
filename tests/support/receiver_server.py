"""Receiver servers and HTTP helpers for the receiver tests.

One real gunicorn receiver (2 workers) per backend per test session:
SQLite as the embedded default (it migrates itself), PostgreSQL on a database cloned
from the migrated template, reached through a ``TcpProxy`` so a test can take the
database away. Requests go over real loopback HTTP; each test gets its own source
address (127.0.x.y) so the per-address invalid-request limit of one test never
leaks into another.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.land.signature import sign
from tests.support.ports import free_port
from tests.support.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_test_current"
OLD_SECRET = "whsec_test_previous"
CONNECT_SECRET = "whsec_test_connect"
MAX_BYTES = 65_536
INVALID_LIMIT = 20

_addresses = itertools.count(2)


def fresh_source() -> str:
    """A loopback source address no other test uses (its own rate-limit bucket)."""
    n = next(_addresses)
    return f"127.0.{n // 250 + 1}.{n % 250 + 2}"


def make_event(event_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A minimal current-shape Stripe event."""
    event_id = event_id or f"evt_test_{uuid.uuid4().hex}"
    event = {
        "id": event_id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": f"pi_{uuid.uuid4().hex[:16]}", "object": "payment_intent"}},
    }
    event.update(overrides)
    return event


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Client:
    """HTTP/1.1 client for one receiver, from one source address."""

    port: int
    source: str = "127.0.0.1"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 15,
    ) -> Reply:
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=timeout, source_address=(self.source, 0)
        )
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def post_event(
        self,
        event: dict[str, Any] | bytes,
        *,
        secret: str = SECRET,
        path: str = "/webhooks/stripe",
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> Reply:
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        header = signature if signature is not None else sign(body, secret, timestamp)
        return self.request(
            "POST",
            path,
            body,
            {"Content-Type": "application/json", "Stripe-Signature": header},
        )


@dataclass
class ReceiverServer:
    """A running ``python -m receiver`` process group and its database."""

    backend: str
    port: int
    process: subprocess.Popen
    db_url: str  # direct URL (not through the proxy), for assertions
    log_path: Path
    metrics_dir: Path
    proxy: TcpProxy | None = None
    _engine: Engine | None = field(default=None, repr=False)

    def client(self, source: str | None = None) -> Client:
        return Client(self.port, source or fresh_source())

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.db_url)
        return self._engine

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def stored_ids(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found.update(
                r[0]
                for r in self.rows(
                    "SELECT stripe_event_id FROM stripe_events WHERE stripe_event_id IN "
                    f"({', '.join(f':p{i}' for i in range(len(chunk)))})",
                    **{f"p{i}": v for i, v in enumerate(chunk)},
                )
            )
        return found

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(p) for p in children.read_text().split()]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self._engine is not None:
            self._engine.dispose()
        if self.proxy is not None:
            self.proxy.close()


def receiver_env(tmp: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIPE_", "PROMETHEUS_")) and k != "prometheus_multiproc_dir"
    }
    env.update(
        STRIPE_WEBHOOK_SECRET=f"{SECRET},{OLD_SECRET}",
        STRIPE_WEBHOOK_SECRET_CONNECT=CONNECT_SECRET,
        STRIPE_WEBHOOK_MAX_BYTES=str(MAX_BYTES),
        STRIPE_WEBHOOK_LIVEMODE="test",
        STRIPE_WEBHOOK_INVALID_LIMIT=str(INVALID_LIMIT),
        STRIPE_PIPELINE_DATA_DIR=str(tmp / "data"),
        STRIPE_PIPELINE_LOG_LEVEL="INFO",
        PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics"),
        PYTHONPATH=str(ROOT),
    )
    if database_url:
        env["STRIPE_PIPELINE_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def start_server(
    backend: str,
    tmp: Path,
    *,
    db_url: str,
    serve_url: str | None,
    proxy: TcpProxy | None = None,
    workers: int = 2,
    threads: int = 4,
    timeout: float = 30,
    env: dict[str, str] | None = None,
) -> ReceiverServer:
    """Start the receiver and wait until /healthz says 200 (``env``: extra variables)."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = tmp / "live_receiver.log"
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps it open
    cmd = [sys.executable, "-m", "receiver", "--port", str(port)]
    cmd += ["--workers", str(workers), "--threads", str(threads)]
    process = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=receiver_env(tmp, serve_url, **(env or {})),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    server = ReceiverServer(backend, port, process, db_url, log_path, tmp / "metrics", proxy)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"receiver exited ({process.returncode}):\n{server.log_tail()}")
        try:
            if Client(port).request("GET", "/healthz", timeout=2).status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"receiver did not become healthy:\n{server.log_tail()}")


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def sqlite_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverServer]:
    """The receiver on the embedded SQLite default (no URL: it migrates itself)."""
    tmp = tmp_path_factory.mktemp("receiver_sqlite")
    db_url = f"sqlite:///{(tmp / 'data' / 'stripe_pipeline.db').resolve()}"
    server = start_server("sqlite", tmp, db_url=db_url, serve_url=None)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_receiver(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReceiverServer]:
    """The receiver on PostgreSQL, connected through a cuttable TCP proxy."""
    admin = request.getfixturevalue("pg_admin")
    template = request.getfixturevalue("pg_template")
    name = f"sp_rcv_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    base = admin.url.set(database=name)
    db_url = base.render_as_string(hide_password=False)
    proxy = TcpProxy((base.host or "127.0.0.1", base.port or 5432))
    serve_url = base.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    server = start_server(
        "postgresql",
        tmp_path_factory.mktemp("receiver_pg"),
        db_url=db_url,
        serve_url=serve_url,
        proxy=proxy,
    )
    yield server
    server.stop()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def live_receiver(request: pytest.FixtureRequest) -> ReceiverServer:
    """The session's receiver on each backend: the same test runs against both."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_receiver")
    return request.getfixturevalue("pg_receiver")


@pytest.fixture
def receiver_client(live_receiver: ReceiverServer) -> Client:
    """A client with a source address of its own."""
    return live_receiver.client()
