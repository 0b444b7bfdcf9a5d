"""Gunicorn settings and hooks for the receiver (``receiver.worker.ReceiverWorker``).

Each worker is one process: an asyncio loop reads whole requests (so slow clients
never hold a thread) and a few threads run the app, so a request waiting for the
database commit does not block the next one; processes (not threads) give the CPU
parallelism. Hooks keep the Prometheus multiprocess files correct and flush each
worker's buffered delivery audit when it stops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from receiver.logging import gunicorn_logger_class
from receiver.metrics import mark_worker_dead


def child_exit(server: Any, worker: Any) -> None:
    """A worker died (or was replaced): drop its live Prometheus files."""
    mark_worker_dead(worker.pid)


def worker_exit(server: Any, worker: Any) -> None:
    """Write the worker's buffered audit rows before it goes away."""
    app = getattr(worker, "wsgi", None)
    extensions = getattr(app, "extensions", None) or {}
    ctx = extensions.get("stripe_receiver")
    if ctx is not None:
        ctx.audit.close()
        ctx.engine.dispose()


def gunicorn_options(
    host: str, port: int, workers: int, threads: int, log_level: str = "INFO"
) -> dict[str, Any]:
    """Settings for ``gunicorn.app.base.BaseApplication`` (names as in gunicorn's docs)."""
    options: dict[str, Any] = {
        "bind": [f"{host}:{port}"],
        "workers": workers,
        "threads": threads,
        "worker_class": "receiver.worker.ReceiverWorker",
        "preload_app": False,  # each worker builds its own app, engine and pool
        "keepalive": 30,  # longer than a typical reverse proxy's idle timeout
        "timeout": 30,
        "graceful_timeout": 20,
        "backlog": 2048,
        # one listening socket per worker (SO_REUSEPORT): the kernel spreads keep-alive
        # connections evenly instead of the busiest worker winning most accept() races
        "reuse_port": True,
        "accesslog": None,  # the receiver logs each delivery itself, as JSON
        "errorlog": "-",
        "loglevel": log_level.lower(),
        "logger_class": gunicorn_logger_class(),
        "proc_name": "stripe-pipeline-receiver",
        # gunicorn's control socket sits at one path per user: several receivers
        # (blue/green, tests, benchmarks) would fight over it
        "control_socket_disable": True,
        "child_exit": child_exit,
        "worker_exit": worker_exit,
    }
    if Path("/dev/shm").is_dir():
        options["worker_tmp_dir"] = "/dev/shm"  # heartbeat file off the disk
    return options
