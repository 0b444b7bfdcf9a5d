"""A localstripe process for tests: started once per session, always on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.ports import free_port

RUNNER = Path(__file__).with_name("localstripe_runner.py")
API_KEY = "sk_test_localstripe"


@dataclass
class LocalStripe:
    base_url: str
    process: subprocess.Popen
    api_key: str = API_KEY

    def register_webhook(
        self, hook_id: str, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        """Point localstripe's signed webhook deliveries at a receiver."""
        data: dict = {"url": url, "secret": secret}
        if events:
            data["events[]"] = events
        r = requests.post(f"{self.base_url}/_config/webhooks/{hook_id}", data=data, timeout=5)
        r.raise_for_status()

    def flush(self) -> None:
        requests.delete(f"{self.base_url}/_config/data", timeout=5).raise_for_status()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def start_localstripe(port: int | None = None, state_file: str | None = None) -> LocalStripe:
    port = port or free_port()
    cmd = [sys.executable, str(RUNNER), "--port", str(port)]
    if state_file:
        cmd += ["--state-file", state_file]
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"localstripe exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            requests.get(
                f"{base}/v1/customers", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=1
            )
            return LocalStripe(base, proc)
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("localstripe did not start within 20 s")


def localstripe_session() -> Iterator[LocalStripe]:
    """Body of a session fixture: ``yield from localstripe_session()``."""
    ls = start_localstripe()
    try:
        yield ls
    finally:
        ls.stop()
