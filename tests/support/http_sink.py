"""A local HTTP sink on 127.0.0.1 that records JSON POSTs (a stand-in notification target)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HttpSink:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.received: list[dict[str, Any]] = []
        self.url = f"http://127.0.0.1:{server.server_address[1]}/hook"


@contextmanager
def http_sink() -> Iterator[HttpSink]:
    sink: HttpSink

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            sink.received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink = HttpSink(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
