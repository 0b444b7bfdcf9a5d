"""A local HTTP sink on 127.0.0.1 that records JSON POSTs (a stand-in notification target)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HttpSink:
    def __init__(
        self, server: ThreadingHTTPServer, on_post: Callable[[dict[str, Any]], Any] | None = None
    ) -> None:
        self.server = server
        self.received: list[dict[str, Any]] = []
        # what ``on_post`` saw at the moment each message arrived (e.g. committed rows)
        self.observed: list[Any] = []
        self.on_post = on_post
        self.url = f"http://127.0.0.1:{server.server_address[1]}/hook"


@contextmanager
def http_sink(on_post: Callable[[dict[str, Any]], Any] | None = None) -> Iterator[HttpSink]:
    """``on_post`` runs for each message before it is acknowledged; its results are kept
    in ``observed``."""
    sink: HttpSink

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            message = json.loads(self.rfile.read(length))
            if sink.on_post is not None:
                sink.observed.append(sink.on_post(message))
            sink.received.append(message)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink = HttpSink(server, on_post)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
