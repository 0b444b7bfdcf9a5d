"""The real receiver under gunicorn as its own process group, on 127.0.0.1.

For end-to-end tests and benchmarks: it runs exactly as in production
(``python -m receiver``: gunicorn master + receiver workers), configured through the
documented environment variables.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.support.localstripe_peer import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ReceiverProcess:
    base_url: str
    secret: str
    process: subprocess.Popen
    log_path: Path

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/webhooks/stripe"

    def post_event(self, event: dict[str, Any], *, timeout: float = 10) -> requests.Response:
        """POST one event signed like Stripe does (``t=<now>,v1=<hmac>``)."""
        body = json.dumps(event).encode()
        return requests.post(
            self.webhook_url,
            data=body,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign(body, self.secret),
            },
            timeout=timeout,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def start_receiver(
    database_url: str,
    secret: str,
    *,
    workers: int = 2,
    threads: int = 4,
    env: dict[str, str] | None = None,
    startup_timeout: float = 30,
) -> ReceiverProcess:
    """Start the receiver on a free loopback port and wait until /healthz answers 200."""
    port = free_port()
    child_env = {
        **os.environ,
        "STRIPE_PIPELINE_DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": secret,
        "STRIPE_PIPELINE_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "receiver", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", str(workers), "--threads", str(threads)]
    # a file, not a pipe: nobody reads a pipe once the server runs, and a full one blocks
    fd, log_name = tempfile.mkstemp(prefix="receiver-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=child_env,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    log_path = Path(log_name)
    base = f"http://127.0.0.1:{port}"
    receiver = ReceiverProcess(base, secret, proc, log_path)
    try:
        _wait_healthy(receiver, startup_timeout)
    except BaseException:
        receiver.stop()  # never leave a server behind
        raise
    return receiver


def _wait_healthy(receiver: ReceiverProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if receiver.process.poll() is not None:
            raise RuntimeError(f"receiver exited: {receiver.log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{receiver.base_url}/healthz", timeout=3).status_code == 200:
                return
        except requests.RequestException:  # not bound yet, or workers still booting
            pass
        time.sleep(0.1)
    raise RuntimeError("receiver did not become healthy in time")
