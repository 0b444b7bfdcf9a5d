"""Structured JSON logs, one object per line, for the receiver and gunicorn.

Only the fields passed explicitly through ``extra={"fields": {...}}`` are written,
so a secret or a payload can only reach the log if a caller hands it over by name;
callers pass ids, types, outcomes and timings, never bodies or headers.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

LOGGER_NAME = "receiver"


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object (time, level, logger, message, fields)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # type and frames only: messages of database errors can quote parameters
            doc["exc_type"] = record.exc_info[0].__name__
            doc["exc_frames"] = [
                f"{frame.filename}:{frame.lineno} {frame.name}"
                for frame in traceback.extract_tb(record.exc_info[2])[-8:]
            ]
        return json.dumps(doc, default=str, separators=(",", ":"))


def configure_logging(level: str = "INFO") -> logging.Logger:
    """Send the receiver's records to stderr as JSON (idempotent, safe in every worker)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    if not any(getattr(h, "_receiver_json", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._receiver_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    return logger


def gunicorn_logger_class() -> type:
    """Gunicorn logger whose error log is JSON too, and that skips access-log work.

    Gunicorn builds every access-log line (about 5% of a worker's CPU here) as soon as
    any log configuration is given; the receiver logs deliveries itself, so the
    access log stays off unless ``accesslog`` is set explicitly.
    """
    from gunicorn import glogging

    class GunicornJsonLogger(glogging.Logger):
        def setup(self, cfg) -> None:
            super().setup(cfg)
            for handler in self.error_log.handlers:
                handler.setFormatter(JsonFormatter())

    return GunicornJsonLogger


def log_fields(**fields: Any) -> dict[str, Any]:
    """``extra=`` argument carrying structured fields (drops the ``None`` ones)."""
    return {"fields": {k: v for k, v in fields.items() if v is not None}}
