"""``stripe-pipeline serve``: check the schema, then run the receiver under gunicorn."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from stripe_pipeline.config import Settings, load_settings, redact_url
from stripe_pipeline.db.engine import make_engine
from stripe_pipeline.db.migrate import SchemaNotReady, ensure_schema

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ReceiverApplication(BaseApplication):
    """Gunicorn run from code, so ``serve`` needs no config file or import string."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from receiver.app import create_app

        return create_app(self.settings)


def prepare_database(settings: Settings) -> None:
    """Migrate the embedded SQLite file; refuse an unmigrated external database.

    Raises ``SystemExit`` with a message naming the command to run, so the CLI
    prints it instead of a traceback.
    """
    engine = make_engine(settings.database_url)
    try:
        ensure_schema(engine, auto_migrate=settings.is_embedded_sqlite)
    except SchemaNotReady as exc:
        raise SystemExit(f"stripe-pipeline serve: {exc}") from None
    except Exception as exc:
        raise SystemExit(
            f"stripe-pipeline serve: cannot reach the database "
            f"{redact_url(settings.database_url)} ({type(exc).__name__})"
        ) from None
    finally:
        engine.dispose()  # no connection may cross the fork into the workers


def prepare_metrics_dir() -> Path:
    """Give the workers an empty Prometheus multiprocess folder.

    Must run before any worker records a sample; an existing folder (from the
    environment) is emptied, since samples of a previous run would be summed in.
    """
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path
    path = Path(tempfile.mkdtemp(prefix="stripe-pipeline-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    master = os.getpid()
    # workers inherit atexit handlers: only the master removes the folder
    atexit.register(lambda: os.getpid() == master and shutil.rmtree(path, ignore_errors=True))
    return path


def serve(
    host: str, port: int, workers: int, threads: int, settings: Settings | None = None
) -> None:
    """Run the receiver until SIGTERM/SIGINT (gunicorn master, ``receiver.worker`` workers)."""
    from receiver.gunicorn_conf import gunicorn_options

    prepare_metrics_dir()
    settings = settings or load_settings()
    prepare_database(settings)
    if not settings.webhook_secrets:
        print(
            "stripe-pipeline serve: warning: no STRIPE_WEBHOOK_SECRET set, "
            "every webhook will be refused",
            file=sys.stderr,
        )
    options = gunicorn_options(host, port, workers, threads, settings.log_level)
    ReceiverApplication(settings, options).run()
