"""A Stripe-shaped list API on 127.0.0.1, with Stripe's latency and rate limits.

Serves ``fake_stripe_data`` over HTTP (aiohttp): ``GET /v1/<resource>``,
``GET /v1/customers/{id}/payment_methods`` and, for the recovery lane,
``POST /v1/invoices/{id}/pay`` and ``POST /v1/payment_intents/{id}/confirm``. Each
answer waits ``latency`` seconds (default 0.3, what a Stripe list call takes). Beyond
``account_rate`` requests in any 1-second window (default 100, live mode) or
``endpoint_rate`` per endpoint (default 25; an endpoint is a method and a path with
ids replaced, as Stripe counts them) it answers 429 with ``Retry-After: 1`` at once.
Every request is logged with its wall-clock arrival time, endpoint, query and status.

Two ways to run it: ``FakeStripeServer(data).start()`` in a thread of the caller
(tests), or ``python -m tests.support.fake_stripe_server --spec '{...}' --port N``
as its own process (benchmarks: the fake's CPU is then not the client's), where
``GET /_log`` hands the request log over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from tests.support.fake_stripe_data import (
    DataSet,
    ListError,
    load_templates,
    render_page,
)
from tests.support.ports import free_port

WINDOW = 1.0


@dataclass(frozen=True, slots=True)
class LogEntry:
    at: float  # time.time() at arrival
    method: str
    endpoint: str  # "GET /v1/charges", "GET /v1/customers/{id}/payment_methods"
    query: str
    status: int

    @property
    def params(self) -> dict[str, str]:
        """The query as Stripe reads it: ``{"created[gte]": "1700000000", ...}``."""
        return dict(parse_qsl(self.query))


class SlidingWindow:
    """Requests accepted in the last second; refuses the one that would exceed ``limit``."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.times: deque[float] = deque()

    def full(self, now: float) -> bool:
        while self.times and self.times[0] <= now - WINDOW:
            self.times.popleft()
        return len(self.times) >= self.limit

    def add(self, now: float) -> None:
        self.times.append(now)


def max_in_any_window(times: Iterable[float], window: float = WINDOW) -> int:
    """The most requests inside any ``window``-second interval (half-open)."""
    ordered, best, start = sorted(times), 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class FakeStripeApp:
    """The request handling, independent of how the server is run."""

    def __init__(
        self,
        data: DataSet,
        *,
        latency: float = 0.3,
        account_rate: float = 100,
        endpoint_rate: float = 25,
    ) -> None:
        self.data = data
        self.latency = latency
        self.account = SlidingWindow(account_rate)
        self.endpoints: dict[str, SlidingWindow] = {}
        self.endpoint_rate = endpoint_rate
        self.log: list[LogEntry] = []
        self._fail: list[tuple[str, int]] = []  # (path prefix, status) of the next failures
        self._hold: tuple[str, int] | None = None  # (path prefix, requests answered first)
        self._gate: asyncio.Event | None = None

    def fail_next(self, count: int, *, status: int = 500, path_prefix: str = "/") -> None:
        """Answer the next ``count`` requests under ``path_prefix`` with ``status``."""
        self._fail.extend([(path_prefix, status)] * count)

    def hold_after(self, count: int, *, path_prefix: str = "/") -> None:
        """Answer ``count`` more requests under ``path_prefix``, then hold every later
        one until ``release``.

        Lets a test kill a client mid-listing at a point it chose, not one timing picked.
        """
        self._hold = (path_prefix, count)

    def release(self) -> None:
        """Answer the held requests and every later one (call on the server's loop)."""
        self._hold = None
        if self._gate is not None:
            self._gate.set()

    def _admit(self, endpoint: str, now: float) -> bool:
        window = self.endpoints.setdefault(endpoint, SlidingWindow(self.endpoint_rate))
        if self.account.full(now) or window.full(now):
            return False
        self.account.add(now)
        window.add(now)
        return True

    def _injected_failure(self, path: str) -> int | None:
        for n, (prefix, status) in enumerate(self._fail):
            if path.startswith(prefix):
                del self._fail[n]
                return status
        return None

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        now = time.time()
        path = request.path
        endpoint = f"{request.method} {_endpoint_path(path)}"
        status = 200
        if not self._admit(endpoint, now):
            status = 429
            body = _error("rate_limit_error", "Request rate limit exceeded.", "rate_limit")
            headers = {"Retry-After": "1", "Stripe-Rate-Limited-Reason": "global-rate"}
            self.log.append(LogEntry(now, request.method, endpoint, request.query_string, status))
            return web.Response(
                body=body, status=status, headers=headers, content_type="application/json"
            )
        if self._hold is not None and path.startswith(self._hold[0]):
            prefix, left = self._hold
            self._hold = (prefix, left - 1)
        if self._hold is not None and path.startswith(self._hold[0]) and self._hold[1] < 0:
            if self._gate is None or self._gate.is_set():
                self._gate = asyncio.Event()
            await self._gate.wait()
        injected = self._injected_failure(path)
        await asyncio.sleep(self.latency)
        if injected is not None:
            status, body = injected, _error("api_error", "Injected failure.", None)
        elif request.method == "POST":
            body = json.dumps({"id": path.split("/")[3], "object": "invoice", "status": "paid"})
            body = body.encode()
        else:
            try:
                body = render_page(self.data, path, request.query)
            except LookupError as exc:
                status, body = 404, _error("invalid_request_error", str(exc), "resource_missing")
            except ListError as exc:
                status, body = 400, _error("invalid_request_error", str(exc), None)
        self.log.append(LogEntry(now, request.method, endpoint, request.query_string, status))
        return web.Response(body=body, status=status, content_type="application/json")

    async def get_log(self, _request: Any) -> Any:
        from aiohttp import web

        return web.json_response(
            [[e.at, e.method, e.endpoint, e.query, e.status] for e in self.log]
        )

    async def clear_log(self, _request: Any) -> Any:
        from aiohttp import web

        self.log = []
        return web.json_response({"cleared": True})

    def application(self) -> Any:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/_log", self.get_log)
        app.router.add_delete("/_log", self.clear_log)
        app.router.add_route("*", "/v1/{tail:.*}", self.handle)
        return app


def _endpoint_path(path: str) -> str:
    """Stripe counts ``GET /v1/customers/{id}`` as one endpoint whatever the id."""
    parts = path.strip("/").split("/")
    return "/" + "/".join(
        "{id}" if any(c.isdigit() for c in p) and n else p for n, p in enumerate(parts)
    )


def _error(kind: str, message: str, code: str | None) -> bytes:
    return json.dumps({"error": {"type": kind, "message": message, "code": code}}).encode()


class FakeStripeServer:
    """The fake in a background thread of this process; a context manager."""

    def __init__(self, data: DataSet, *, port: int | None = None, **options: Any) -> None:
        self.app = FakeStripeApp(data, **options)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._runner: Any = None

    def _run(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self.app.application(), access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> FakeStripeServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake Stripe server did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def release(self) -> None:
        """Answer the requests ``app.hold_after`` held back."""
        self._loop.call_soon_threadsafe(self.app.release)

    @property
    def log(self) -> list[LogEntry]:
        return list(self.app.log)

    def __enter__(self) -> FakeStripeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fetch_log(base_url: str) -> list[LogEntry]:
    """The request log of a fake running in another process."""
    import requests

    rows = requests.get(f"{base_url}/_log", timeout=60).json()
    return [LogEntry(*row) for row in rows]


def dataset_from_spec(spec: Mapping[str, Any]) -> DataSet:
    """``{"counts": {...}, "kind": "uniform", "seed": 0, "templates": true, ...}``."""
    return DataSet.generate(
        spec["counts"],
        kind=spec.get("kind", "uniform"),
        start=spec.get("start", 1_700_000_000),
        end=spec.get("end", 1_700_000_000 + 90 * 86_400),
        seed=spec.get("seed", 0),
        templates=load_templates() if spec.get("templates", True) else None,
        customers=spec.get("customers", 1000),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Stripe-shaped fake list API on 127.0.0.1")
    parser.add_argument("--spec", required=True, help="data set, as JSON (see dataset_from_spec)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--account-rate", type=float, default=100)
    parser.add_argument("--endpoint-rate", type=float, default=25)
    args = parser.parse_args()
    from aiohttp import web

    app = FakeStripeApp(
        dataset_from_spec(json.loads(args.spec)),
        latency=args.latency,
        account_rate=args.account_rate,
        endpoint_rate=args.endpoint_rate,
    )
    web.run_app(app.application(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
