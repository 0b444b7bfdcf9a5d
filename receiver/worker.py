"""The receiver's gunicorn worker: whole requests are read before a thread runs the app.

gthread hands a connection to a thread once its first byte arrives, and the thread
then blocks reading the rest: twenty clients trickling headers or bodies held every
thread, and valid deliveries waited. Here one asyncio loop per worker process reads
every connection as its bytes arrive (httptools: llhttp, the parser of uvicorn and
Node.js), under one deadline per request for its headers and body together
(``STRIPE_WEBHOOK_READ_TIMEOUT``); only a complete request is handed to the thread
pool that runs the WSGI app. A slow or idle client costs a socket and a buffer, never
a thread. The threads are the same few per process as before, so the lander's
per-thread database connections stay.

What a request may be: a request line up to ``limit_request_line`` bytes, headers up
to 64 KiB (431 beyond), a body up to ``STRIPE_WEBHOOK_MAX_BYTES`` (the app answers
413; a larger declared body is never read and the connection closes). Malformed
framing (smuggling attempts such as both Content-Length and Transfer-Encoding) gets
400 and a closed connection; a request that does not arrive in time gets 408. Past
``worker_connections`` connections the one waiting longest on an incomplete or idle
request is closed to make room.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools
from gunicorn.workers.base import Worker

DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_MAX_BODY = 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_PIPELINED = 8
REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class _Refuse(Exception):
    """Stop parsing and answer ``status`` (raised from a parser callback)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Request:
    __slots__ = (
        "body",
        "chunked",
        "declared",
        "header_bytes",
        "headers",
        "keep_alive",
        "method",
        "too_large",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.body = bytearray()
        self.method = "GET"
        self.version = "1.1"
        self.keep_alive = True
        self.declared: int | None = None
        self.chunked = False
        self.too_large = False


class ReceiverWorker(Worker):
    """A gunicorn worker: asyncio reads requests, ``threads`` threads run the WSGI app."""

    def init_process(self) -> None:
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is optional
            self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.executor = ThreadPoolExecutor(self.cfg.threads, thread_name_prefix="receiver")
        settings = getattr(self.app, "settings", None)
        self.read_timeout = float(getattr(settings, "webhook_read_timeout", DEFAULT_READ_TIMEOUT))
        self.max_body = int(getattr(settings, "webhook_max_bytes", DEFAULT_MAX_BODY))
        self.connections: set[_Connection] = set()
        self.on_timeout: Callable[[], None] = lambda: None
        self._date: tuple[int, str] = (0, "")
        super().init_process()  # loads the app, then calls run()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        context = getattr(self.wsgi, "extensions", {}).get("stripe_receiver")
        if context is not None:
            self.on_timeout = context.metrics.client_timeouts.inc

    def run(self) -> None:
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.loop.close()

    async def _serve(self) -> None:
        servers = [
            await self.loop.create_server(
                lambda: _Connection(self), sock=listener.sock, backlog=self.cfg.backlog
            )
            for listener in self.sockets
        ]
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            await asyncio.sleep(1.0)
        for server in servers:
            server.close()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        for conn in list(self.connections):
            conn.close_when_idle()
        while any(c.busy for c in self.connections) and time.monotonic() < deadline:
            self.notify()
            await asyncio.sleep(0.1)
        for conn in list(self.connections):
            conn.abort()

    def http_date(self) -> str:
        """The Date header's value, formatted once per second (called from any thread)."""
        now = int(time.time())
        second, text = self._date
        if second != now:
            text = formatdate(now, usegmt=True)
            self._date = (now, text)
        return text

    def call_app(
        self,
        request: _Request,
        peer: tuple[str, int],
        local: tuple[str, int],
        close: bool,
    ) -> bytes:
        """Run the WSGI app on one complete request (in a pool thread); the response bytes."""
        try:
            environ = _environ(request, peer, local)
        except (httptools.HttpParserInvalidURLError, ValueError):
            return _simple_response(400, self.http_date(), close=True)
        head_only = request.method == "HEAD"
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
            if exc_info is not None and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return lambda data: None  # the legacy write() callable; Flask never uses it

        try:
            result = self.wsgi(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception:
            self.log.exception("Error handling request %s", environ.get("PATH_INFO"))
            return _simple_response(500, self.http_date(), close=True)
        status, headers = started
        lines = [f"HTTP/1.1 {status}"]
        has_length = False
        for name, value in headers:
            lowered = name.lower()
            if lowered in ("connection", "transfer-encoding"):
                continue
            has_length = has_length or lowered == "content-length"
            lines.append(f"{name}: {value}")
        if not has_length:
            lines.append(f"Content-Length: {len(body)}")
        lines.append(f"Date: {self.http_date()}")
        lines.append("Connection: close" if close else "Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + body


class _Connection(asyncio.Protocol):
    """One client connection: parse, buffer, dispatch complete requests one at a time."""

    def __init__(self, worker: ReceiverWorker) -> None:
        self.worker = worker
        self.loop = worker.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.request: _Request | None = None  # being read
        self.ready: deque[_Request] = deque()  # complete, waiting for the app
        self.busy = False  # a request is in the app
        self.closing = False
        self.waiting_since = self.loop.time()  # idle or reading since
        self.timer: asyncio.TimerHandle | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.local: tuple[str, int] = ("", 0)

    # ---- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("", 0)
        self.local = (str(local[0]), int(local[1])) if isinstance(local, tuple) else ("", 0)
        self.worker.connections.add(self)
        if len(self.worker.connections) > self.worker.cfg.worker_connections:
            self._evict()
        self._arm(self.worker.cfg.keepalive, self._idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._disarm()
        self.worker.connections.discard(self)
        self.transport = None

    def eof_received(self) -> bool:
        """The client will send no more: answer what is complete, then close."""
        self.closing = True
        return self.busy or bool(self.ready)  # True keeps the socket open for the answer

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__ if isinstance(exc.__context__, _Refuse) else None
            self._refuse(refusal.status if refusal else 400)
        except httptools.HttpParserUpgrade:
            self._refuse(400)  # no upgrades (WebSocket, h2c) on a webhook receiver
        except httptools.HttpParserError:
            self._refuse(400)
        else:
            if len(self.ready) >= MAX_PIPELINED and self.transport is not None:
                self.transport.pause_reading()

    # ---- httptools callbacks

    def on_message_begin(self) -> None:
        self.request = _Request()
        self.waiting_since = self.loop.time()
        self._arm(self.worker.read_timeout, self._read_timeout)

    def on_url(self, url: bytes) -> None:
        assert self.request is not None
        self.request.url += url
        if len(self.request.url) > self.worker.cfg.limit_request_line:
            raise _Refuse(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.request
        assert request is not None
        request.header_bytes += len(name) + len(value) + 4
        if request.header_bytes > MAX_HEADER_BYTES:
            raise _Refuse(431)
        request.headers.append((name, value))

    def on_headers_complete(self) -> None:
        request = self.request
        assert request is not None
        request.method = self.parser.get_method().decode("ascii", "replace")
        request.version = self.parser.get_http_version()
        # no protocol switch (WebSocket, h2c): answered as plain HTTP, then closed
        request.keep_alive = self.parser.should_keep_alive() and not self.parser.should_upgrade()
        expect_continue = False
        for name, value in request.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                request.declared = int(value)  # llhttp has checked it is one number
            elif lowered == b"transfer-encoding":
                request.chunked = True
            elif lowered == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        if request.declared is not None and request.declared > self.worker.max_body:
            # the app refuses it from the declared length; the body is never read
            request.too_large = True
            self._complete(request)
        elif expect_continue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        request = self.request
        if request is None or request.too_large:
            return
        request.body += chunk
        if len(request.body) > self.worker.max_body:
            # a chunked body past the limit: one byte over is enough for the app's 413
            del request.body[self.worker.max_body + 1 :]
            request.too_large = True
            self._complete(request)

    def on_message_complete(self) -> None:
        request = self.request
        if request is not None and not request.too_large:
            self._complete(request)

    # ---- dispatch

    def _complete(self, request: _Request) -> None:
        self.request = None
        self._disarm()
        if request.too_large:
            # stop reading what is left of the body; answer, then close
            request.keep_alive = False
            self.closing = True
            if self.transport is not None:
                self.transport.pause_reading()
        self.ready.append(request)
        self._next()

    def _next(self) -> None:
        if self.busy or not self.ready or self.transport is None:
            return
        request = self.ready.popleft()
        close = not request.keep_alive or not self.worker.alive
        try:
            future: Future = self.worker.executor.submit(
                self.worker.call_app, request, self.peer, self.local, close
            )
        except RuntimeError:  # the pool is shut down: the worker is stopping
            self.abort()
            return
        self.busy = True
        future.add_done_callback(lambda f: self.loop.call_soon_threadsafe(self._respond, f, close))

    def _respond(self, future: Future, close: bool) -> None:
        self.busy = False
        if self.transport is None:
            return
        try:
            response = future.result()
        except Exception:  # the pool was shut down under us
            response = _simple_response(500, self.worker.http_date(), close=True)
            close = True
        self.transport.write(response)
        if close or self.closing:
            self.closing = True
            self.transport.close()
            return
        if self.ready:
            self.transport.resume_reading()
            self._next()
        elif self.request is None:
            self.waiting_since = self.loop.time()
            self._arm(self.worker.cfg.keepalive, self._idle_timeout)

    # ---- timers and closing

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _read_timeout(self) -> None:
        """The request did not arrive in time (a slow or stalled client): 408, close."""
        self.timer = None
        if self.request is not None:
            self.worker.on_timeout()
            self._refuse(408)

    def _idle_timeout(self) -> None:
        self.timer = None
        if not self.busy and self.request is None and not self.ready:
            self.abort()

    def _refuse(self, status: int) -> None:
        self.closing = True
        self.request = None
        self._disarm()
        if self.transport is not None and not self.busy:
            self.transport.write(_simple_response(status, self.worker.http_date(), close=True))
            self.transport.close()
        elif self.transport is not None:
            self.transport.pause_reading()  # answer the request in the app, then close

    def close_when_idle(self) -> None:
        """Worker shutdown: close now unless a request is in the app."""
        if not self.busy:
            self.abort()

    def abort(self) -> None:
        self.closing = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    def _evict(self) -> None:
        """Over the connection limit: close whoever waits longest without being served."""
        candidates = [c for c in self.worker.connections if not c.busy and c is not self]
        if candidates:
            min(candidates, key=lambda c: c.waiting_since).abort()


def _environ(request: _Request, peer: tuple[str, int], local: tuple[str, int]) -> dict[str, Any]:
    """The WSGI environ of a complete request (built in the pool thread, off the loop)."""
    url = httptools.parse_url(request.url)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(url.path or b"/").decode("latin-1"),
        "QUERY_STRING": (url.query or b"").decode("latin-1"),
        "RAW_URI": request.url.decode("latin-1"),
        "SERVER_NAME": local[0],
        "SERVER_PORT": str(local[1]),
        "SERVER_PROTOCOL": f"HTTP/{request.version}",
        "REMOTE_ADDR": peer[0],
        "REMOTE_PORT": str(peer[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(bytes(request.body)),
        "wsgi.input_terminated": True,  # the whole body is in wsgi.input
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in request.headers:
        key = name.decode("latin-1").upper()
        if "_" in key:
            continue  # HTTP_X_Y could be faked by X_Y: dropped, as gunicorn does
        key = key.replace("-", "_")
        if key == "CONTENT_LENGTH":
            if request.chunked:
                continue
        elif key != "CONTENT_TYPE":
            key = "HTTP_" + key
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ


def _simple_response(status: int, date: str, *, close: bool) -> bytes:
    reason = REASONS.get(status, "Error")
    body = f'{{"error": "{reason.lower().replace(" ", "_")}"}}'.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nDate: {date}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode("latin-1") + body
