"""The receiver when things break: database outage, kill -9, unmigrated database."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from stripe_pipeline.land.signature import sign
from tests.support.receiver_server import (
    ROOT,
    SECRET,
    Client,
    ReceiverServer,
    make_event,
    receiver_env,
    start_server,
    wait_for,
)

pytestmark = pytest.mark.slow


class Load:
    """Threads posting distinct signed events until stopped; remembers every answer."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.acked: list[str] = []
        self.statuses: Counter[int] = Counter()
        self.retry_after_on_503: list[str | None] = []
        self.after_503_ok = threading.Event()
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=20)

    def _run(self) -> None:
        client = Client(self.port)
        while not self._stop.is_set():
            event = make_event(f"evt_load_{uuid.uuid4().hex}")
            try:
                reply = client.post_event(event)
            except (OSError, http.client.HTTPException):
                with self._lock:
                    self.errors += 1
                time.sleep(0.01)
                continue
            with self._lock:
                self.statuses[reply.status] += 1
                if 200 <= reply.status < 300:
                    self.acked.append(event["id"])
                    if self.statuses[503]:
                        self.after_503_ok.set()
                elif reply.status == 503:
                    self.retry_after_on_503.append(reply.headers.get("retry-after"))

    def count(self, status: int) -> int:
        with self._lock:
            return self.statuses[status]


@pytest.mark.postgres
def test_database_outage_gives_503_then_recovers_without_losing_acks(
    pg_receiver: ReceiverServer,
):
    proxy = pg_receiver.proxy
    assert proxy is not None
    health = pg_receiver.client("127.0.0.1")
    with Load(pg_receiver.port) as load:
        assert wait_for(lambda: load.count(200) >= 50, timeout=10)
        proxy.cut()
        try:
            assert wait_for(lambda: load.count(503) >= 20, timeout=10), load.statuses
            down = health.request("GET", "/healthz")
            assert down.status == 503
            assert down.json()["database"] == "unreachable"
            assert int(down.headers["retry-after"]) > 0
        finally:
            proxy.restore()
        # no restart: the same workers reconnect by themselves
        assert load.after_503_ok.wait(timeout=15), load.statuses
        ok_before = load.count(200)
        assert wait_for(lambda: load.count(200) >= ok_before + 50, timeout=10)
    assert health.request("GET", "/healthz").status == 200
    assert set(load.statuses) <= {200, 503}, load.statuses
    assert load.retry_after_on_503 and all(
        v is not None and int(v) > 0 for v in load.retry_after_on_503
    )
    missing = set(load.acked) - pg_receiver.stored_ids(load.acked)
    assert not missing, f"{len(missing)} acknowledged events are not stored"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def crash_target(request: pytest.FixtureRequest, tmp_path: Path):
    """A receiver of its own (this test kills it) on a fresh database of each backend."""
    if request.param == "sqlite":
        db_url = f"sqlite:///{(tmp_path / 'data' / 'stripe_pipeline.db').resolve()}"
        server = start_server("sqlite", tmp_path, db_url=db_url, serve_url=None)
    else:
        url = request.getfixturevalue("fresh_pg_url")
        server = start_server("postgresql", tmp_path, db_url=url, serve_url=url)
    yield server
    server.stop(signal.SIGKILL)


def test_kill_9_mid_load_keeps_every_acknowledged_event(crash_target: ReceiverServer):
    with Load(crash_target.port, threads=6) as load:
        assert wait_for(lambda: load.count(200) >= 300, timeout=20), load.statuses
        os.killpg(crash_target.process.pid, signal.SIGKILL)  # master and workers at once
        crash_target.process.wait(timeout=10)
        time.sleep(0.3)
    assert load.errors > 0  # the load really was cut off mid-flight
    missing = set(load.acked) - crash_target.stored_ids(load.acked)
    assert not missing, f"{len(missing)} of {len(load.acked)} acknowledged events were lost"


def _serve(tmp_path: Path, database_url: str | None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "receiver", "--port", "1", "--workers", "1"],
        cwd=ROOT,
        env=receiver_env(tmp_path, database_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.postgres
def test_serve_refuses_an_unmigrated_postgresql(pg_admin, tmp_path: Path):
    name = f"sp_e_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = pg_admin.url.set(database=name).render_as_string(hide_password=False)
        result = _serve(tmp_path, url)
        assert result.returncode != 0
        assert "stripe-pipeline db upgrade" in result.stderr
        assert "Traceback" not in result.stderr
        engine_tables = pg_admin.url.set(database=name)
        from sqlalchemy import create_engine, inspect

        engine = create_engine(engine_tables)
        try:
            assert inspect(engine).get_table_names() == []  # it did not migrate by itself
        finally:
            engine.dispose()
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_serve_refuses_an_unmigrated_non_default_sqlite(tmp_path: Path):
    """Only the embedded default migrates itself; any other SQLite file is external."""
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    result = _serve(tmp_path, url)
    assert result.returncode != 0
    assert "stripe-pipeline db upgrade" in result.stderr


def test_serve_migrates_the_embedded_sqlite_by_itself(tmp_path: Path):
    server = start_server(
        "sqlite",
        tmp_path,
        db_url=f"sqlite:///{(tmp_path / 'data' / 'stripe_pipeline.db').resolve()}",
        serve_url=None,
        workers=1,
        threads=2,
    )
    try:
        event = make_event()
        body = json.dumps(event).encode()
        reply = server.client("127.0.0.1").post_event(body, signature=sign(body, SECRET))
        assert reply.status == 200
        assert server.stored_ids([event["id"]]) == {event["id"]}
    finally:
        server.stop(signal.SIGKILL)
