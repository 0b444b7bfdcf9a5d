"""One Stripe rate limit for the whole deployment: every thread, process and host.

Stripe allows 100 requests/s per account in live mode (25 in test mode) and, by
default, 25 requests/s per endpoint (docs.stripe.com/rate-limits: an endpoint is a
method and a path, whatever the ids in it, so ``GET /v1/customers/{id}`` is one), and
answers 429 beyond. Two Dagster runs (a backfill and a recovery, or several backfill
partitions) must therefore share one budget, or together they collect 429s.

The algorithm is GCRA (a token bucket with a burst of one): a bucket remembers its
theoretical arrival time ``tat``, the earliest moment its next request may go; a
request goes when ``now >= tat`` of both its account bucket and its endpoint bucket,
and moves each ``tat`` to ``max(tat, now) + 1/rate``. Requests are therefore spaced
at least ``1/rate`` apart, so no 1-second window holds more than ``rate`` of them. A
request is granted only when it may go *now* (no reservation into the future), so a
busy endpoint never holds back the account's budget for the other endpoints.

Lanes: ``Lane.PRIORITY`` (payment recovery's ``pay_invoice``/``confirm``) and
``Lane.BULK`` (listings, backfills, lookups). While a priority request waits, it marks
the account (``priority_until``) and bulk requests stand back until it has gone, so
a backfill saturating the budget delays a payment by at most about one request
interval; the bulk lane takes the whole budget when no payment waits.

429: the client reports it (``penalize``); the bucket it names (the account, or the
endpoint when ``Stripe-Rate-Limited-Reason`` says so) cools down for ``Retry-After``
seconds (1 s without one), for every process, before anyone's next request.

Stores: ``MemoryLimitStore`` (one process; the default when there is no database),
``SqliteLimitStore`` (one host: ``BEGIN IMMEDIATE`` on a table), ``PostgresLimitStore``
(any number of hosts: one statement per request, on the database's clock, so host
clocks need not agree). The shared stores keep one row per bucket in
``stripe_rate_limits``. Each process lets one thread per endpoint and lane ask the
store at a time; the others queue behind it locally.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Engine, create_engine, event, text

# pace at 95% of the limit: requests spaced exactly 1/N apart reach the server with
# jitter, and two that bunch up would put N + 1 into one second there
HEADROOM = 0.95
ENDPOINT_RATE = 25.0
DEFAULT_COOLDOWN = 1.0
MAX_COOLDOWN = 60.0
_ID_SEGMENT = re.compile(r"^[A-Za-z]+_[A-Za-z0-9_]*[0-9A-Z][A-Za-z0-9_]*$")


class Lane(StrEnum):
    PRIORITY = "priority"  # payment recovery: never starved by bulk work
    BULK = "bulk"  # listings, backfills, lookups


def default_rate_for_key(api_key: str) -> float:
    """Stripe's documented limits: 25 requests/s in test mode, 100 in live mode."""
    return 25.0 if api_key.startswith(("sk_test_", "rk_test_")) else 100.0


def endpoint_of(method: str, path: str) -> str:
    """``GET /v1/customers/cus_123/payment_methods`` -> ``GET /v1/customers/{id}/payment_methods``.

    A path segment is an id when it looks like one (``prefix_`` then letters and
    digits with at least a digit or a capital: ``cus_NffrFeUfNV2Hib``), never a
    resource name such as ``payment_methods``.
    """
    path = path.split("?", 1)[0]
    parts = ["{id}" if _ID_SEGMENT.match(p) else p for p in path.strip("/").split("/")]
    return f"{method.upper()} /{'/'.join(parts)}"


def account_bucket(api_key: str) -> str:
    """A bucket name for the key's account that does not reveal the key."""
    mode = "test" if "_test_" in api_key else "live"
    return f"account:{mode}:{hashlib.sha256(api_key.encode()).hexdigest()[:16]}"


# --- the decision (pure) -----------------------------------------------------------------


@dataclass(slots=True)
class BucketState:
    rate: float
    tat: float = 0.0
    cooldown_until: float = 0.0
    priority_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    wait: float  # seconds until it is worth asking again (0 when granted)


def decide(
    account: BucketState, endpoint: BucketState, now: float, *, priority: bool, grace: float
) -> Decision:
    """GCRA over the account and the endpoint at once; updates the states it grants from.

    The SQL of ``PostgresLimitStore`` is this function in one statement.
    """
    ready = max(now, account.tat, endpoint.tat, account.cooldown_until, endpoint.cooldown_until)
    if not priority:
        ready = max(ready, account.priority_until)
    if ready <= now:
        for b in (account, endpoint):
            b.tat = max(b.tat, now) + 1.0 / b.rate
        return Decision(True, 0.0)
    if priority:
        account.priority_until = max(account.priority_until, ready + grace)
    return Decision(False, ready - now)


# --- stores ------------------------------------------------------------------------------


class LimitStore(Protocol):
    """Where buckets live; ``try_acquire`` is atomic across everyone sharing the store."""

    def ensure(self, bucket: str, rate: float) -> None: ...

    def try_acquire(
        self, account: str, endpoint: str, *, priority: bool, grace: float
    ) -> Decision: ...

    def cool_down(self, bucket: str, seconds: float) -> None: ...

    def close(self) -> None: ...


class MemoryLimitStore:
    """Buckets in this process only (tests, scripts, a deployment without a database)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, BucketState] = {}

    def ensure(self, bucket: str, rate: float) -> None:
        with self._lock:
            state = self._buckets.setdefault(bucket, BucketState(rate))
            state.rate = rate

    def try_acquire(self, account: str, endpoint: str, *, priority: bool, grace: float) -> Decision:
        with self._lock:
            return decide(
                self._buckets[account],
                self._buckets[endpoint],
                self._clock(),
                priority=priority,
                grace=grace,
            )

    def cool_down(self, bucket: str, seconds: float) -> None:
        with self._lock:
            state = self._buckets[bucket]
            state.cooldown_until = max(state.cooldown_until, self._clock() + seconds)

    def close(self) -> None:
        pass


def _own_engine(engine: Engine) -> Engine:
    """A small engine of the limiter's own on the app database's URL.

    Its own pool (the app's stays free for the app's work) and no flush to disk per
    grant (PostgreSQL ``synchronous_commit=off``, SQLite ``synchronous=NORMAL`` in
    WAL): a grant then costs ~0.2 ms instead of a WAL flush (~2 ms here), and a
    bucket's state is worth nothing after a crash anyway (at worst a few
    milliseconds of grants are forgotten).
    """
    from stripe_pipeline.db.engine import make_engine

    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name != "postgresql":
        own = make_engine(url)
        event.listen(own, "connect", _sqlite_no_fsync)
        return own
    return create_engine(
        url,
        pool_size=4,
        max_overflow=8,
        pool_recycle=1800,
        isolation_level="AUTOCOMMIT",
        connect_args={
            "connect_timeout": 3,
            "application_name": "stripe-pipeline-ratelimit",
            "options": "-c synchronous_commit=off",
        },
    )


_ENSURE = text(
    "INSERT INTO stripe_rate_limits (bucket, rate) VALUES (:bucket, :rate) "
    "ON CONFLICT (bucket) DO UPDATE SET rate = excluded.rate "
    "WHERE stripe_rate_limits.rate <> excluded.rate"
)


class SqliteLimitStore:
    """Buckets in the embedded SQLite database: every process of one host shares them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = _own_engine(engine)

    def _transaction(self, body: Callable[[Any, float], Any]) -> Any:
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                result = body(cur, time.time())
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            return result
        finally:
            raw.close()

    def ensure(self, bucket: str, rate: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(_ENSURE, {"bucket": bucket, "rate": rate})

    def try_acquire(self, account: str, endpoint: str, *, priority: bool, grace: float) -> Decision:
        def body(cur: Any, now: float) -> Decision:
            cur.execute(
                "SELECT bucket, rate, tat, cooldown_until, priority_until "
                "FROM stripe_rate_limits WHERE bucket IN (?, ?)",
                (account, endpoint),
            )
            states = {row[0]: BucketState(*row[1:]) for row in cur.fetchall()}
            a, e = states[account], states[endpoint]
            decision = decide(a, e, now, priority=priority, grace=grace)
            cur.executemany(
                "UPDATE stripe_rate_limits SET tat = ?, priority_until = ? WHERE bucket = ?",
                [(a.tat, a.priority_until, account), (e.tat, e.priority_until, endpoint)],
            )
            return decision

        return self._transaction(body)

    def cool_down(self, bucket: str, seconds: float) -> None:
        def body(cur: Any, now: float) -> None:
            cur.execute(
                "UPDATE stripe_rate_limits SET cooldown_until = max(cooldown_until, ?) "
                "WHERE bucket = ?",
                (now + seconds, bucket),
            )

        self._transaction(body)

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_no_fsync(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


# ``decide`` in one statement: lock both rows (in a fixed order: no deadlock), read the
# database's clock, grant or mark a waiting payment, and say when to ask again.
_PG_ACQUIRE = text(
    """
WITH cur AS (
    SELECT bucket, tat, cooldown_until, priority_until
    FROM stripe_rate_limits
    WHERE bucket IN (:account, :endpoint)
    ORDER BY bucket
    FOR UPDATE
), clock AS (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now
), decision AS (
    SELECT clock.now AS now,
           GREATEST(clock.now, max(cur.tat), max(cur.cooldown_until),
                    CASE WHEN :priority THEN 0 ELSE max(cur.priority_until) END) AS ready,
           count(*) AS found
    FROM cur CROSS JOIN clock
    GROUP BY clock.now
), changed AS (
    UPDATE stripe_rate_limits AS b
    SET tat = CASE WHEN d.ready <= d.now THEN GREATEST(b.tat, d.now) + 1.0 / b.rate
                   ELSE b.tat END,
        priority_until = CASE WHEN :priority AND d.ready > d.now AND b.bucket = :account
                              THEN GREATEST(b.priority_until, d.ready + :grace)
                              ELSE b.priority_until END
    FROM decision AS d
    WHERE b.bucket IN (:account, :endpoint) AND (d.ready <= d.now OR :priority)
    RETURNING 1
)
SELECT now, ready, found FROM decision
"""
)
_PG_COOL_DOWN = text(
    "UPDATE stripe_rate_limits SET cooldown_until = GREATEST(cooldown_until, "
    "extract(epoch FROM clock_timestamp())::float8 + :seconds) WHERE bucket = :bucket"
)


class PostgresLimitStore:
    """Buckets in PostgreSQL: every process on every host shares them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = _own_engine(engine)

    def ensure(self, bucket: str, rate: float) -> None:
        with self.engine.connect() as conn:
            conn.execute(_ENSURE, {"bucket": bucket, "rate": rate})

    def try_acquire(self, account: str, endpoint: str, *, priority: bool, grace: float) -> Decision:
        with self.engine.connect() as conn:
            now, ready, found = conn.execute(
                _PG_ACQUIRE,
                {"account": account, "endpoint": endpoint, "priority": priority, "grace": grace},
            ).one()
        if found != 2:
            raise LookupError(f"rate-limit buckets {account!r}/{endpoint!r} are not set up")
        return Decision(True, 0.0) if ready <= now else Decision(False, ready - now)

    def cool_down(self, bucket: str, seconds: float) -> None:
        with self.engine.connect() as conn:
            conn.execute(_PG_COOL_DOWN, {"bucket": bucket, "seconds": seconds})

    def close(self) -> None:
        self.engine.dispose()


def database_store(engine: Engine) -> LimitStore:
    """The shared store for the app database's backend."""
    if engine.dialect.name == "postgresql":
        return PostgresLimitStore(engine)
    if engine.dialect.name == "sqlite":
        return SqliteLimitStore(engine)
    raise ValueError(f"no shared rate-limit store for {engine.dialect.name}")


# --- the limiter callers use ---------------------------------------------------------------


@dataclass
class LimiterStats:
    grants: int = 0
    polls: int = 0  # store round trips (grants included)
    waited_seconds: float = 0.0
    cooldowns: int = 0


class RateLimiter:
    """``acquire(method, path, lane)`` blocks until a request may go; ``penalize`` on a 429.

    ``account_rate``/``endpoint_rate`` are Stripe's limits; requests are paced at
    ``headroom`` of them. ``endpoint_rates`` overrides single endpoints
    (``{"GET /v1/files": 20}``).
    """

    def __init__(
        self,
        store: LimitStore,
        *,
        account: str,
        account_rate: float,
        endpoint_rate: float = ENDPOINT_RATE,
        endpoint_rates: Mapping[str, float] | None = None,
        headroom: float = HEADROOM,
        max_poll_seconds: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if account_rate <= 0 or endpoint_rate <= 0 or not 0 < headroom <= 1:
            raise ValueError("rates must be positive and headroom in (0, 1]")
        self.store = store
        self.account = account
        self.account_rate = account_rate
        self.endpoint_rate = endpoint_rate
        self.endpoint_rates = dict(endpoint_rates or {})
        self.headroom = headroom
        self.max_poll_seconds = max_poll_seconds
        self._sleep = sleep
        # a waiting payment keeps bulk requests back this long after it could go
        self._grace = 2.0 / (account_rate * headroom)
        self._jitter = 0.25 / (account_rate * headroom)
        self._lock = threading.Lock()
        self._ready: set[str] = set()
        self._local: dict[tuple[str, Lane], threading.Lock] = {}
        self.stats = LimiterStats()
        store.ensure(account, account_rate * headroom)
        self._ready.add(account)

    @classmethod
    def in_process(
        cls, api_key: str, *, account_rate: float | None = None, **options: Any
    ) -> RateLimiter:
        """This process only: the limit of the key's mode unless ``account_rate`` says otherwise."""
        return cls(
            MemoryLimitStore(),
            account=account_bucket(api_key),
            account_rate=account_rate or default_rate_for_key(api_key),
            **options,
        )

    @classmethod
    def shared(
        cls, engine: Engine, api_key: str, *, account_rate: float | None = None, **options: Any
    ) -> RateLimiter:
        """Shared through the app database by every process that uses the same key."""
        return cls(
            database_store(engine),
            account=account_bucket(api_key),
            account_rate=account_rate or default_rate_for_key(api_key),
            **options,
        )

    def _endpoint_bucket(self, endpoint: str) -> str:
        bucket = f"{self.account}|{endpoint}"
        if bucket not in self._ready:
            rate = self.endpoint_rates.get(endpoint, self.endpoint_rate)
            self.store.ensure(bucket, rate * self.headroom)
            with self._lock:
                self._ready.add(bucket)
        return bucket

    def _local_lock(self, bucket: str, lane: Lane) -> threading.Lock:
        with self._lock:
            return self._local.setdefault((bucket, lane), threading.Lock())

    def acquire(self, method: str, path: str, lane: Lane = Lane.BULK) -> float:
        """Block until a request to ``method path`` may go; returns the seconds waited."""
        bucket = self._endpoint_bucket(endpoint_of(method, path))
        priority = lane is Lane.PRIORITY
        started = time.monotonic()
        polls = 0
        with self._local_lock(bucket, lane):
            while True:
                polls += 1
                decision = self.store.try_acquire(
                    self.account, bucket, priority=priority, grace=self._grace
                )
                if decision.granted:
                    break
                wait = min(decision.wait, self.max_poll_seconds)
                self._sleep(wait + random.uniform(0, self._jitter))
        waited = time.monotonic() - started
        with self._lock:
            self.stats.grants += 1
            self.stats.polls += polls
            self.stats.waited_seconds += waited
        return waited

    def penalize(
        self, method: str, path: str, *, retry_after: float | None, reason: str | None = None
    ) -> None:
        """A 429: every process holds back for ``retry_after`` seconds (1 s by default)."""
        seconds = DEFAULT_COOLDOWN if retry_after is None else retry_after
        seconds = min(max(seconds, 0.0), MAX_COOLDOWN)
        if reason and reason.startswith("endpoint"):
            bucket = self._endpoint_bucket(endpoint_of(method, path))
        else:
            bucket = self.account
        self.store.cool_down(bucket, seconds)
        with self._lock:
            self.stats.cooldowns += 1

    def close(self) -> None:
        self.store.close()


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (Stripe sends an integer); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
