"""A run's listings in a process of their own (see ``prelist``): the other end of the pipe.

Why a process: at the API's limit a run receives ~100 pages a second, and fetching,
decoding and spooling them costs most of a core of Python; in the process that
compares, they would share one interpreter lock with the comparison and hold both
back. Here they run beside it, on another core.

Reads one JSON job on stdin (the client's spec with the API key, the database URL, the
listings and the spool files as ``prelist.prepare_spool`` left them), lists into the
files through the same shared rate limit and progress store, and writes one JSON line
per event on stdout: ``{"flushed": name, "length": n}`` (with ``"covered": [gte, lte]``
when the page ended a slice), ``{"finished": name}``, ``{"failed": "Type: message"}``,
then ``{"listed": stats}``. The end of stdin asks it
to stop (the run failed elsewhere, or its process died): it stops at the next page,
its progress recorded for a resume.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.reconcile.prelist import (
    PlannedListing,
    SpoolSetup,
    describe,
    list_into_files,
    request_from_doc,
)
from stripe_pipeline.reconcile.window import Window
from stripe_pipeline.stripe_api.client import ClientSpec, StripeApi

log = logging.getLogger(__name__)

# asked to stop (or left alone by its run's process), it exits after this at the latest
STOP_GRACE_SECONDS = 2.0


class PipeSink:
    """Reports to the run's process, one JSON line each; stops when its stdin ends."""

    def __init__(self, out: BinaryIO, stdin_fd: int) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._watch, args=(stdin_fd,), daemon=True).start()

    def _watch(self, fd: int) -> None:
        # the raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered
        # reader would hold its lock while the interpreter shuts down
        while os.read(fd, 4096):
            pass
        self._stop.set()  # stops at the next page, its progress recorded
        # a listing held up (a request waiting on a slow answer) is not waited for:
        # what it had recorded is what a resume takes over
        time.sleep(STOP_GRACE_SECONDS)
        os._exit(3)

    def _send(self, message: dict[str, Any]) -> None:
        with self._lock:
            try:
                self._out.write(orjson.dumps(message) + b"\n")
                self._out.flush()
            except OSError:  # the run's process is gone: nobody reads the files any more
                self._stop.set()

    def flushed(self, name: str, length: int, covered: tuple[int, int] | None = None) -> None:
        message: dict[str, Any] = {"flushed": name, "length": length}
        if covered is not None:
            message["covered"] = covered
        self._send(message)

    def finished(self, name: str) -> None:
        self._send({"finished": name})

    def failed(self, exc: BaseException) -> None:
        self._send({"failed": described(exc)})

    def stopping(self) -> bool:
        return self._stop.is_set()

    def listed(self, stats: dict[str, Any]) -> None:
        self._send({"listed": stats})


def described(exc: BaseException) -> str:
    """The failure and what caused it (the run's process sees only this text)."""
    cause = exc.__cause__
    return describe(exc) + (f" (caused by {describe(cause)})" if cause is not None else "")


def run(job: dict[str, Any], out: BinaryIO, stdin_fd: int) -> None:
    sink = PipeSink(out, stdin_fd)
    api = StripeApi.from_spec(ClientSpec.from_json(job["client"]))
    engine = make_engine(job["database_url"])
    # what is alive now (modules, the client) lives as long as the process: out of the
    # collector's sight. Each page allocates thousands of objects, and a full
    # collection over ~100k imported ones stalled every thread for 60-180 ms, the rate
    # limiter's included, so endpoints lost their slots (measured: 20-21 requests/s of
    # 23 paced; 23 with this)
    gc.collect()
    gc.freeze()
    try:
        planned = [
            PlannedListing(doc["name"], request_from_doc(doc["request"]), Window(None, 0))
            for doc in job["listings"]
        ]
        s = job["setup"]
        setup = SpoolSetup(
            s["run_key"],
            [Path(f) for f in s["files"]],
            s["lengths"],
            s["observed_at"],
            s["complete"],
        )
        list_into_files(engine, api.list_page, planned, setup, sink, job["options"])
    finally:
        api.close()
        engine.dispose()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # the protocol owns stdout: anything else printed here goes to stderr
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    fd = sys.stdin.fileno()
    line = b""
    while not line.endswith(b"\n"):  # the job, read raw: nothing is left in a buffer
        chunk = os.read(fd, 65536)
        if not chunk:
            return  # the run's process went away before sending it
        line += chunk
    run(orjson.loads(line), out, fd)


if __name__ == "__main__":
    main()
