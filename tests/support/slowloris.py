"""Slow clients for receiver tests: connections that trickle headers or bodies, or idle.

One thread keeps ``count`` such connections open against a receiver, sending one
byte per connection every ``interval`` seconds, and opens a new one whenever the
server closes one (as a real slowloris attack does), counting the status codes the
server answered them with before closing.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

HEAD = b"POST /webhooks/stripe HTTP/1.1\r\nHost: receiver\r\nContent-Type: application/json\r\n"


@dataclass
class _Slow:
    sock: socket.socket
    pending: bytes  # what is still to trickle


@dataclass
class Slowloris:
    """``count`` slow connections to ``port``: a third each trickling headers, trickling a
    body, and idle after the request line."""

    port: int
    count: int = 50
    interval: float = 0.2
    source: str = "127.0.0.1"
    answered: Counter[int] = field(default_factory=Counter)
    opened: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _open: list[_Slow] = field(default_factory=list)

    def __enter__(self) -> Slowloris:
        for n in range(self.count):
            self._open.append(self._connect(n))
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for slow in self._open:
            slow.sock.close()

    @property
    def live(self) -> int:
        return len(self._open)

    def _connect(self, n: int) -> _Slow:
        sock = socket.create_connection(("127.0.0.1", self.port), source_address=(self.source, 0))
        sock.setblocking(False)
        self.opened += 1
        kind = n % 3
        if kind == 0:  # headers that never end
            first, rest = HEAD, b"X-Slow: " + b"a" * 100_000
        elif kind == 1:  # a body that never ends
            first = HEAD + b"Stripe-Signature: t=1,v1=00\r\nContent-Length: 20000\r\n\r\n"
            rest = b"{" * 20_000  # under the receiver's body limit
        else:  # the request line, then nothing
            first, rest = b"POST /webhooks/stripe HTTP/1.1\r\n", b""
        sock.sendall(first)
        return _Slow(sock, rest)

    def _run(self) -> None:
        n = self.count
        while not self._stop.wait(self.interval):
            for index, slow in enumerate(self._open):
                if self._closed_by_server(slow):
                    slow.sock.close()
                    try:
                        self._open[index] = self._connect(n)
                        n += 1
                    except OSError:
                        continue
                    continue
                if slow.pending:
                    try:
                        slow.sock.send(slow.pending[:1])
                        slow.pending = slow.pending[1:]
                    except (BlockingIOError, OSError):
                        pass

    def _closed_by_server(self, slow: _Slow) -> bool:
        readable, _, _ = select.select([slow.sock], [], [], 0)
        if not readable:
            return False
        try:
            data = slow.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        if data.startswith(b"HTTP/1.1 "):
            self.answered[int(data[9:12])] += 1
        return True  # an answer or EOF: the server is done with this connection


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed_deliveries(
    send: Callable[[], int], threads: int, seconds: float
) -> tuple[list[float], Counter[int | str]]:
    """Call ``send()`` (returns a status) back to back on ``threads`` threads for ``seconds``."""
    latencies: list[float] = []
    statuses: Counter[int | str] = Counter()
    lock = threading.Lock()
    until = time.monotonic() + seconds

    def run() -> None:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                status: int | str = send()
            except OSError as exc:
                status = type(exc).__name__
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                statuses[status] += 1

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies, statuses
