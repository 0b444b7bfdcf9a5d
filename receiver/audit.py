"""Buffered delivery audit for requests that did not land an event.

Valid deliveries write their audit row inside the event's own transaction
(``stripe_pipeline.land.lander``). Everything else (bad signatures, malformed bodies, 413s,
429s, 503s) is added here and written by a background thread every second, with
identical rows of one interval merged into one row with ``repeat_count``: a flood of
garbage costs one dict update per request, not one database write. Bodies are
never buffered. The buffer is bounded; what cannot be written (database down for
long, buffer full) is dropped and counted in a metric.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, insert
from sqlalchemy.exc import SQLAlchemyError

from stripe_pipeline.land.store import DELIVERIES, Delivery

log = logging.getLogger("receiver.audit")


@dataclass
class _Pending:
    delivery: Delivery
    first_seen: datetime
    count: int
    max_bytes: int | None


class DeliveryAuditBuffer:
    """Collects audit rows in memory and writes them in batches from one thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        flush_interval: float = 1.0,
        max_rows: int = 10_000,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.flush_interval = flush_interval
        self.max_rows = max_rows
        self._on_drop = on_drop or (lambda n: None)
        self._pending: dict[tuple, _Pending] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._thread_pid: int | None = None

    def add(self, delivery: Delivery) -> None:
        """Queue one row (merged with identical ones); never touches the database."""
        key = (
            delivery.endpoint,
            delivery.remote_addr,
            delivery.outcome,
            delivery.status_code,
            delivery.reason,
            delivery.stripe_event_id,
            delivery.event_type,
        )
        with self._lock:
            entry = self._pending.get(key)
            if entry is not None:
                entry.count += delivery.repeat_count
                if delivery.body_bytes is not None:
                    entry.max_bytes = max(entry.max_bytes or 0, delivery.body_bytes)
            elif len(self._pending) >= self.max_rows:
                self._on_drop(1)
                return
            else:
                self._pending[key] = _Pending(
                    delivery, datetime.now(UTC), delivery.repeat_count, delivery.body_bytes
                )
        self._ensure_thread()

    def flush(self) -> int:
        """Write what is buffered now; returns the number of rows written."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            rows = [
                {
                    **entry.delivery.row(),
                    "repeat_count": entry.count,
                    "body_bytes": entry.max_bytes,
                    "received_at": entry.first_seen,
                }
                for entry in batch.values()
            ]
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(DELIVERIES), rows)
            except SQLAlchemyError as exc:
                self._requeue(batch)
                log.warning(
                    "delivery audit write failed; rows kept for the next attempt",
                    extra={"fields": {"rows": len(rows), "error": type(exc).__name__}},
                )
                return 0
            return len(rows)

    def close(self) -> None:
        """Stop the thread and write the rest (worker exit)."""
        self._stopped = True
        self._wake.set()
        if self._thread is not None and self._thread_pid == os.getpid():
            self._thread.join(timeout=5)
        self.flush()

    def _requeue(self, batch: dict[tuple, _Pending]) -> None:
        with self._lock:
            for key, entry in batch.items():
                current = self._pending.get(key)
                if current is not None:
                    current.count += entry.count
                    current.first_seen = min(current.first_seen, entry.first_seen)
                elif len(self._pending) < self.max_rows:
                    self._pending[key] = entry
                else:
                    self._on_drop(entry.count)

    def _ensure_thread(self) -> None:
        # started lazily and per process: a thread does not survive fork()
        if self._thread_pid == os.getpid() or self._stopped:
            return
        with self._lock:
            if self._thread_pid == os.getpid():
                return
            self._thread_pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="delivery-audit-writer", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.flush_interval)
            try:
                self.flush()
            except Exception:  # the writer must outlive any single failure
                log.exception("delivery audit writer failed")
