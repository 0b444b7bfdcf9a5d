"""The hot path's durable step: one transaction holding the event and its audit row.

``EventLander.land`` inserts the event (``ON CONFLICT DO NOTHING``, so copies arriving on
several workers at once still give one row) and its delivery-audit row atomically and
commits before returning; only then may the caller answer 2xx.

Two implementations with the same effect:

- PostgreSQL (psycopg 3): both inserts are one statement (a data-modifying CTE),
  prepared once per connection and run in autocommit mode on a connection owned by
  the request thread: one round trip and one commit per delivery, no pool checkout
  and no SQLAlchemy statement machinery on the hot path. At a few
  thousand deliveries per second the round trips and the Python overhead, not the
  database, are the cost (see ``docs/receiver.md``).
- Any other database (the embedded SQLite): ``store.insert_event`` and
  ``store.record_deliveries`` in one ``engine.begin()`` transaction.

Failures are sorted into the two answers Stripe understands: the payload itself is
refused (``RejectedByDatabase`` -> 400: a retry would fail the same way) or the
database is unavailable (``DatabaseUnavailable`` -> 503: Stripe retries, nothing is
lost). A broken connection is invalidated when its error surfaces, so no per-request
ping is needed and the first request after an outage reconnects by itself.
"""

from __future__ import annotations

import threading

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, SQLAlchemyError

from stripe_pipeline.db.statuses import EventSource
from stripe_pipeline.land.envelope import EventEnvelope
from stripe_pipeline.land.store import DELIVERIES, EVENTS, Delivery, insert_event, record_deliveries


class RejectedByDatabase(Exception):
    """The database refused the payload as data (e.g. ``\\u0000`` in a JSONB document)."""


class DatabaseUnavailable(Exception):
    """The database cannot take the write now; the caller answers 503 + Retry-After."""


# Both inserts in one statement: the delivery row says whether the event was new.
PG_LAND_SQL = f"""
WITH new_event AS (
    INSERT INTO {EVENTS.name} (stripe_event_id, event_type, api_version, livemode, account,
                               object_id, stripe_created, payload, source, endpoint)
    VALUES (%(stripe_event_id)s, %(event_type)s, %(api_version)s, %(livemode)s, %(account)s,
            %(object_id)s, %(stripe_created)s, %(payload)s::jsonb, 'webhook', %(endpoint)s)
    ON CONFLICT (stripe_event_id) DO NOTHING
    RETURNING id
)
INSERT INTO {DELIVERIES.name} (endpoint, remote_addr, outcome, status_code, stripe_event_id,
                               event_type, body_bytes, repeat_count)
SELECT %(endpoint)s, %(remote_addr)s,
       CASE WHEN EXISTS (SELECT 1 FROM new_event) THEN 'stored' ELSE 'duplicate' END,
       200, %(stripe_event_id)s, %(event_type)s, %(body_bytes)s, 1
RETURNING outcome
"""


class EventLander:
    """Lands events through ``engine``, on the fastest path its driver allows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.fast_path = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        self._local = threading.local()

    def land(self, envelope: EventEnvelope, delivery: Delivery) -> bool:
        """Store the event and its delivery row atomically; True when the event is new."""
        if self.fast_path:
            return self._land_postgresql(envelope, delivery)
        return self._land_portable(envelope, delivery)

    def _land_portable(self, envelope: EventEnvelope, delivery: Delivery) -> bool:
        try:
            with self.engine.begin() as conn:
                is_new = insert_event(
                    conn, envelope, source=EventSource.WEBHOOK.value, endpoint=delivery.endpoint
                )
                record_deliveries(conn, [_with_outcome(delivery, is_new)])
            return is_new
        except DataError as exc:
            raise RejectedByDatabase(_describe(exc.orig)) from exc
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(_describe(getattr(exc, "orig", None) or exc)) from exc
        except (ValueError, OverflowError) as exc:
            # raised by the driver before the statement is sent (a string that cannot be
            # encoded, an integer out of range): the payload's fault, not the server's
            raise RejectedByDatabase(type(exc).__name__) from exc

    def _land_postgresql(self, envelope: EventEnvelope, delivery: Delivery) -> bool:
        import psycopg

        params = {
            **envelope.columns(),
            "endpoint": delivery.endpoint,
            "remote_addr": delivery.remote_addr,
            "body_bytes": delivery.body_bytes,
        }
        cursor = self._thread_cursor()
        try:
            cursor.execute(PG_LAND_SQL, params, prepare=True)
            return cursor.fetchone()[0] == "stored"
        except psycopg.DataError as exc:
            raise RejectedByDatabase(_describe(exc)) from exc
        except psycopg.Error as exc:
            self._drop_thread_connection()  # reconnect on the next request
            raise DatabaseUnavailable(_describe(exc)) from exc
        except (ValueError, OverflowError) as exc:
            raise RejectedByDatabase(type(exc).__name__) from exc

    def _thread_cursor(self):
        """This thread's autocommit cursor, connecting on first use or after a failure.

        The worker runs the app on a fixed set of threads, so one connection per
        thread is a pool without checkout, reset-on-return or autocommit toggling.
        The connection comes from the engine (same URL, timeouts, connect events)
        and is detached from its pool.
        """
        cursor = getattr(self._local, "cursor", None)
        if cursor is not None and not cursor.closed:
            return cursor
        import psycopg

        try:
            # Engine.raw_connection() passes the driver's connect errors through unwrapped
            pooled = self.engine.raw_connection()
        except (SQLAlchemyError, psycopg.Error, OSError) as exc:
            raise DatabaseUnavailable(_describe(getattr(exc, "orig", None) or exc)) from exc
        conn = pooled.driver_connection
        pooled.detach()
        conn.autocommit = True  # one statement = one transaction: no BEGIN/COMMIT trips
        self._local.pooled = pooled
        self._local.cursor = cursor = conn.cursor()
        return cursor

    def _drop_thread_connection(self) -> None:
        pooled = getattr(self._local, "pooled", None)
        self._local.pooled = self._local.cursor = None
        if pooled is not None:
            pooled.invalidate()


def _with_outcome(delivery: Delivery, is_new: bool) -> Delivery:
    return Delivery(
        endpoint=delivery.endpoint,
        remote_addr=delivery.remote_addr,
        outcome="stored" if is_new else "duplicate",
        status_code=200,
        stripe_event_id=delivery.stripe_event_id,
        event_type=delivery.event_type,
        body_bytes=delivery.body_bytes,
    )


def _describe(error: object) -> str:
    """Driver class and SQLSTATE of a failure (never its message: it may quote parameters)."""
    code = getattr(error, "sqlstate", None)
    return f"{type(error).__name__} {code}" if code else type(error).__name__
