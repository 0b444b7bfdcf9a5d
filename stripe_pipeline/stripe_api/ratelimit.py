"""One Stripe rate limit for the whole deployment: every thread, process and host.

Stripe allows 100 requests/s per account in live mode (25 in test mode) and, by
default, 25 requests/s per endpoint (docs.stripe.com/rate-limits: an endpoint is a
method and a path, whatever the ids in it, so ``GET /v1/customers/{id}`` is one), and
answers 429 beyond. Two Dagster runs (a backfill and a recovery, or several backfill
partitions) must therefore share one budget, or together they collect 429s.

The algorithm is GCRA (a token bucket with a small burst) over two buckets per
request, its account and its endpoint. A bucket remembers its theoretical arrival
time ``tat``; a request may go at any ``t >= tat - burst`` of both buckets, and moves
each ``tat`` to ``max(tat, t) + 1/rate``. So the send slots of any window of ``W``
seconds number at most ``ceil((W + burst) * rate)``, and with sends at most 20 ms
after their slots (a request that wakes later gives its slot up), a second holds at
most ``ceil(1.03 * rate)`` of them: 98 for the account (paced at 95 % of 100), 24 for
an endpoint (paced at 92 % of 25).

Slots are reserved in small batches: one store round trip plans the next ``horizon``
(50 ms) of the account for the requests waiting in this process, in order; each gets
a slot time and sleeps until it. A request whose endpoint is at its own limit is left
waiting (it is not given a later slot that would hold the account's time back from
the other endpoints). Measured here, a round trip to a loaded PostgreSQL takes 1 ms
(median) to 35 ms (p99); asking once per request capped one process near 70
requests/s, batches reach the limit.

Lanes: ``Lane.PRIORITY`` (payment recovery's ``pay_invoice``/``confirm``) and
``Lane.BULK`` (listings, backfills, lookups). Payments are planned first; one that
cannot go within the horizon marks the account (``priority_until``) and every
process's bulk requests stand back until it has gone, so a backfill saturating the
budget delays a payment by about one horizon; bulk takes the whole budget otherwise.

429: the client reports it (``penalize``); the bucket it names (the account, or the
endpoint when ``Stripe-Rate-Limited-Reason`` says so) cools down for ``Retry-After``
seconds (1 s without one), for every process, before anyone's next request.

Stores: ``MemoryLimitStore`` (one process; the default when there is no database),
``SqliteLimitStore`` (one host: ``BEGIN IMMEDIATE`` on a table), ``PostgresLimitStore``
(any number of hosts: the rows locked ``FOR UPDATE`` for one short transaction, times
on the database's clock, so host clocks need not agree). All three run the same pure
planner, ``plan_grants``; the shared stores keep one row per bucket in
``stripe_rate_limits``.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Engine, create_engine, event, text

from stripe_pipeline.db.engine import shareable_url

# pace below the limits: slots spaced exactly 1/N apart reach the server with jitter,
# and two that bunch up would put N + 1 into one second there. With the burst and the
# lateness below a second holds at most ceil(1.03 * paced rate) sends: 98 of 100 for
# the account at 95 %, 24 of 25 for an endpoint at 92 % (at 95 % it would be 25 of
# 25: no room left for the server's own jitter; measured, one window of 26 in 10,000)
HEADROOM = 0.95
ENDPOINT_HEADROOM = 0.92
# a slot may come this early: absorbs the lateness of asking
BURST_SECONDS = 0.01
# how far ahead one round trip reserves the account's time (~5 slots at 95/s)
HORIZON_SECONDS = 0.05
# a request that wakes later than this after its slot gives the slot up and asks again:
# sends stay within 20 ms of their slots, so a second holds at most
# ceil((1 + burst + 0.02) * rate) of them
LATE_SECONDS = 0.02
ENDPOINT_RATE = 25.0
DEFAULT_COOLDOWN = 1.0
MAX_COOLDOWN = 60.0
MAX_ASKS_PER_ROUND = 64
IDLE_SECONDS = 5.0  # a dispatcher with nothing to do for this long ends
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


# --- planning (pure) -------------------------------------------------------------------


@dataclass(slots=True)
class BucketState:
    rate: float
    tat: float = 0.0
    cooldown_until: float = 0.0
    priority_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Ask:
    """A request waiting for a slot: its endpoint bucket, and whether it is a payment."""

    bucket: str
    priority: bool = False


@dataclass(frozen=True, slots=True)
class Reservation:
    """Per ask, the seconds from ``now`` until it may go (None: not this round), and
    when another round is worth it for those left waiting. ``now`` is the store's clock
    (the database's, for PostgreSQL)."""

    delays: list[float | None]
    retry_in: float
    now: float = 0.0


def plan_grants(
    account: BucketState,
    endpoints: Mapping[str, BucketState],
    asks: Sequence[Ask],
    now: float,
    *,
    horizon: float,
    burst: float,
    grace: float,
) -> Reservation:
    """Give the asks, in order, slots within ``horizon``; update the buckets they use.

    An ask whose endpoint is busy beyond the account's next slot is skipped rather than
    given a later slot (that would idle the account meanwhile); a payment that cannot
    go this round marks the account so that bulk asks stand back until it has gone.
    """
    delays: list[float | None] = [None] * len(asks)
    retry_in = math.inf
    # passes over the asks left, in order, while the account's time goes on: an
    # endpoint skipped because it was busy at the account's next slot may be free at
    # a later one of the same horizon (one pass gave an endpoint one slot per round)
    progress = True
    while progress:
        progress = False
        retry_in = math.inf
        for i, ask in enumerate(asks):
            if delays[i] is not None:
                continue
            endpoint = endpoints[ask.bucket]
            account_ready = max(now, account.tat - burst, account.cooldown_until)
            if not ask.priority:
                account_ready = max(account_ready, account.priority_until)
            endpoint_ready = max(endpoint.tat - burst, endpoint.cooldown_until)
            slot = max(account_ready, endpoint_ready)
            if endpoint_ready > account_ready + burst or slot > now + horizon:
                retry_in = min(retry_in, max(slot - now - horizon, endpoint_ready - now))
                if ask.priority:
                    account.priority_until = max(account.priority_until, slot + grace)
                continue
            delays[i] = slot - now
            account.tat = max(account.tat, slot) + 1.0 / account.rate
            endpoint.tat = max(endpoint.tat, slot) + 1.0 / endpoint.rate
            progress = True
    return Reservation(delays, horizon if retry_in == math.inf else max(retry_in, 0.001), now)


# --- stores ------------------------------------------------------------------------------


class LimitStore(Protocol):
    """Where buckets live; ``reserve`` is atomic across everyone sharing the store."""

    def ensure(self, bucket: str, rate: float) -> None: ...

    def reserve(
        self,
        account: str,
        asks: Sequence[Ask],
        *,
        horizon: float,
        burst: float,
        grace: float,
    ) -> Reservation: ...

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

    def reserve(
        self, account: str, asks: Sequence[Ask], *, horizon: float, burst: float, grace: float
    ) -> Reservation:
        with self._lock:
            return plan_grants(
                self._buckets[account],
                self._buckets,
                asks,
                self._clock(),
                horizon=horizon,
                burst=burst,
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
    round (PostgreSQL ``synchronous_commit=off``, SQLite ``synchronous=NORMAL`` in
    WAL): a round then costs well under a millisecond instead of a WAL flush (~2 ms
    here), and a bucket's state is worth nothing after a crash anyway (at worst a few
    milliseconds of slots are forgotten).
    """
    url = engine.url.render_as_string(hide_password=False)
    if engine.dialect.name == "sqlite":
        own = create_engine(url, connect_args={"timeout": 5, "check_same_thread": False})
        event.listen(own, "connect", _sqlite_pragmas)
        # every transaction of this engine writes: take the write lock at BEGIN
        event.listen(own, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return own
    return create_engine(
        url,
        pool_size=2,
        max_overflow=4,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": 3,
            "application_name": "stripe-pipeline-ratelimit",
            "options": "-c synchronous_commit=off",
        },
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # transactions begin where the engine says
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA busy_timeout=5000")
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


_ENSURE = text(
    "INSERT INTO stripe_rate_limits (bucket, rate) VALUES (:bucket, :rate) "
    "ON CONFLICT (bucket) DO UPDATE SET rate = excluded.rate "
    "WHERE stripe_rate_limits.rate <> excluded.rate"
)
_SAVE = text(
    "UPDATE stripe_rate_limits SET tat = :tat, priority_until = :priority_until "
    "WHERE bucket = :bucket"
)
_COOL_DOWN = text(
    "UPDATE stripe_rate_limits SET cooldown_until = CASE WHEN cooldown_until > :until "
    "THEN cooldown_until ELSE :until END WHERE bucket = :bucket"
)


class _DatabaseStore:
    """The shared stores: read the buckets locked, plan in Python, write them back.

    One transaction per round: lock, plan, write (the database's clock on PostgreSQL).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = _own_engine(engine)
        # where another process finds the same buckets (None: an in-memory database)
        self.url = shareable_url(engine)

    def ensure(self, bucket: str, rate: float) -> None:
        with self._transaction() as conn:
            conn.execute(_ENSURE, {"bucket": bucket, "rate": rate})

    def reserve(
        self, account: str, asks: Sequence[Ask], *, horizon: float, burst: float, grace: float
    ) -> Reservation:
        names = sorted({account, *(a.bucket for a in asks)})  # one lock order: no deadlock
        with self._transaction() as conn:
            now, states = self._lock_buckets(conn, names)
            missing = set(names) - set(states)
            if missing:
                raise LookupError(f"rate-limit buckets not set up: {sorted(missing)}")
            before = {n: (b.tat, b.priority_until) for n, b in states.items()}
            plan = plan_grants(
                states[account], states, asks, now, horizon=horizon, burst=burst, grace=grace
            )
            changed = [
                {"bucket": n, "tat": b.tat, "priority_until": b.priority_until}
                for n, b in states.items()
                if (b.tat, b.priority_until) != before[n]
            ]
            if changed:
                conn.execute(_SAVE, changed)
        return plan

    def cool_down(self, bucket: str, seconds: float) -> None:
        with self._transaction() as conn:
            conn.execute(_COOL_DOWN, {"bucket": bucket, "until": self._now(conn) + seconds})

    def close(self) -> None:
        self.engine.dispose()

    def _transaction(self) -> Any:
        return self.engine.begin()

    def _now(self, conn: Any) -> float:
        raise NotImplementedError

    def _lock_buckets(self, conn: Any, names: list[str]) -> tuple[float, dict[str, BucketState]]:
        raise NotImplementedError


class SqliteLimitStore(_DatabaseStore):
    """Buckets in the embedded SQLite database: every process of one host shares them."""

    def _now(self, conn: Any) -> float:
        return time.time()  # one host: one clock

    def _lock_buckets(self, conn: Any, names: list[str]) -> tuple[float, dict[str, BucketState]]:
        marks = ", ".join(f":b{i}" for i in range(len(names)))
        rows = conn.execute(
            text(
                "SELECT bucket, rate, tat, cooldown_until, priority_until "
                f"FROM stripe_rate_limits WHERE bucket IN ({marks})"
            ),
            {f"b{i}": n for i, n in enumerate(names)},
        )
        return time.time(), {r[0]: BucketState(*r[1:]) for r in rows}


class PostgresLimitStore(_DatabaseStore):
    """Buckets in PostgreSQL: every process on every host shares them."""

    def _now(self, conn: Any) -> float:
        return conn.execute(
            text("SELECT extract(epoch FROM clock_timestamp())::float8")
        ).scalar_one()

    def _lock_buckets(self, conn: Any, names: list[str]) -> tuple[float, dict[str, BucketState]]:
        rows = conn.execute(
            text(
                "SELECT bucket, rate, tat, cooldown_until, priority_until "
                "FROM stripe_rate_limits WHERE bucket = ANY(:names) ORDER BY bucket FOR UPDATE"
            ),
            {"names": names},
        ).all()
        # the clock once the locks are ours (not when the statement began waiting)
        return self._now(conn), {r[0]: BucketState(*r[1:]) for r in rows}


def database_store(engine: Engine) -> LimitStore:
    """The shared store for the app database's backend."""
    if engine.dialect.name == "postgresql":
        return PostgresLimitStore(engine)
    if engine.dialect.name == "sqlite":
        return SqliteLimitStore(engine)
    raise ValueError(f"no shared rate-limit store for {engine.dialect.name}")


# --- the limiter callers use ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimiterSpec:
    """What another process needs to take its requests from the same shared budget
    (JSON-friendly: it crosses to a listing process on its stdin, never on a command
    line). ``database_url`` may hold a password: never log it."""

    database_url: str = field(repr=False)
    account: str
    account_rate: float
    endpoint_rate: float
    endpoint_rates: dict[str, float]
    headroom: float
    endpoint_headroom: float


class ClockOffset:
    """The store's clock minus ours, from the round trip that measured it best.

    A store answers with its own ``now`` (the database's clock: every host agrees on
    it), somewhere between our send and our receipt; the round trip with the least
    latency in the last ``window`` seconds bounds the offset most tightly (the idea of
    NTP). A slot then maps onto our clock within half that round trip, however slow
    the current round was: a slow answer makes its slots late (and given up if too
    late), never early.
    """

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, float, float]] = deque()  # (at, rtt, offset)

    def update(self, sent: float, received: float, store_now: float) -> float:
        rtt = received - sent
        self._samples.append((received, rtt, store_now - (sent + received) / 2))
        while self._samples and self._samples[0][0] < received - self.window:
            self._samples.popleft()
        return min(self._samples, key=lambda s: s[1])[2]


@dataclass
class LimiterStats:
    grants: int = 0
    rounds: int = 0  # store round trips
    late_slots: int = 0  # slots given up because the request woke too late for them
    waited_seconds: float = 0.0
    cooldowns: int = 0


@dataclass(eq=False, slots=True)
class _Waiter:
    ask: Ask
    asked: float
    event: threading.Event = field(default_factory=threading.Event)
    go_at: float = 0.0
    error: BaseException | None = None


class RateLimiter:
    """``acquire(method, path, lane)`` blocks until a request may go; ``penalize`` on a 429.

    ``account_rate``/``endpoint_rate`` are Stripe's limits; requests are paced at
    ``headroom`` of them (``endpoint_headroom`` for endpoints: at 25/s the same few
    milliseconds of lateness are a larger share of the limit). ``endpoint_rates``
    overrides single endpoints
    (``{"GET /v1/files": 20}``).

    In a process, one dispatcher thread reserves slots for every waiting request
    (payments first, then the others in the order they asked), so the account's
    budget is shared in proportion to what waits: a listing with more slices in
    flight gets more of it.
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
        endpoint_headroom: float = ENDPOINT_HEADROOM,
        burst_seconds: float = BURST_SECONDS,
        horizon_seconds: float = HORIZON_SECONDS,
        late_seconds: float = LATE_SECONDS,
        max_poll_seconds: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if account_rate <= 0 or endpoint_rate <= 0:
            raise ValueError("rates must be positive")
        if not (0 < headroom <= 1 and 0 < endpoint_headroom <= 1):
            raise ValueError("headroom must be in (0, 1]")
        self.store = store
        self.account = account
        self.account_rate = account_rate
        self.endpoint_rate = endpoint_rate
        self.endpoint_rates = dict(endpoint_rates or {})
        self.headroom = headroom
        self.endpoint_headroom = endpoint_headroom
        self.burst_seconds = burst_seconds
        self.horizon_seconds = horizon_seconds
        self.late_seconds = late_seconds
        self.max_poll_seconds = max_poll_seconds
        self._clock = clock
        self._sleep = sleep
        # a waiting payment keeps bulk requests back this long after its slot
        self._grace = 2.0 / (account_rate * headroom)
        self._cond = threading.Condition()
        self._ready: set[str] = set()
        self._waiting: dict[Lane, list[_Waiter]] = {Lane.PRIORITY: [], Lane.BULK: []}
        self._dispatcher: threading.Thread | None = None
        self._offset = ClockOffset()
        self._closed = False
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

    def spec(self) -> LimiterSpec | None:
        """How another process joins this limit; None when it cannot (a budget kept in
        this process's memory, or in an in-memory database, is not shared)."""
        url = getattr(self.store, "url", None)
        if url is None:
            return None
        return LimiterSpec(
            url,
            self.account,
            self.account_rate,
            self.endpoint_rate,
            dict(self.endpoint_rates),
            self.headroom,
            self.endpoint_headroom,
        )

    @classmethod
    def from_spec(cls, spec: LimiterSpec) -> RateLimiter:
        """The same shared limit, in this process (see :meth:`spec`)."""
        engine = create_engine(spec.database_url)
        try:
            store = database_store(engine)
        finally:
            engine.dispose()  # the store keeps an engine of its own
        return cls(
            store,
            account=spec.account,
            account_rate=spec.account_rate,
            endpoint_rate=spec.endpoint_rate,
            endpoint_rates=spec.endpoint_rates,
            headroom=spec.headroom,
            endpoint_headroom=spec.endpoint_headroom,
        )

    def _endpoint_bucket(self, endpoint: str) -> str:
        bucket = f"{self.account}|{endpoint}"
        if bucket not in self._ready:
            rate = self.endpoint_rates.get(endpoint, self.endpoint_rate)
            self.store.ensure(bucket, rate * self.endpoint_headroom)
            with self._cond:
                self._ready.add(bucket)
        return bucket

    def acquire(self, method: str, path: str, lane: Lane = Lane.BULK) -> float:
        """Block until a request to ``method path`` may go; returns the seconds waited."""
        bucket = self._endpoint_bucket(endpoint_of(method, path))
        asked = self._clock()
        while True:
            waiter = self._wait_for_slot(bucket, lane)
            delay = waiter.go_at - self._clock()
            if delay > 0:
                self._sleep(delay)
            if self._clock() - waiter.go_at <= self.late_seconds:
                return self._clock() - asked
            # woken too late (a loaded machine): sending now could bunch with the next
            # slots and overfill a second somewhere; the slot is given up, not used
            with self._cond:
                self.stats.late_slots += 1

    def _wait_for_slot(self, bucket: str, lane: Lane) -> _Waiter:
        """Queue for the dispatcher; returns once it has given this request a slot."""
        waiter = _Waiter(Ask(bucket, lane is Lane.PRIORITY), self._clock())
        with self._cond:
            if self._closed:
                raise RuntimeError("the rate limiter is closed")
            self._waiting[lane].append(waiter)
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(
                    target=self._dispatch, name="stripe-rate-limiter", daemon=True
                )
                self._dispatcher.start()
            self._cond.notify()
        waiter.event.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                if not self._closed and not any(self._waiting.values()):
                    self._cond.wait(IDLE_SECONDS)
                if self._closed:
                    return
                if not any(self._waiting.values()):
                    self._dispatcher = None  # idle: the next request starts another
                    return
                batch = [*self._waiting[Lane.PRIORITY], *self._waiting[Lane.BULK]]
                batch = batch[:MAX_ASKS_PER_ROUND]
            sent = self._clock()
            try:
                reservation = self.store.reserve(
                    self.account,
                    [w.ask for w in batch],
                    horizon=self.horizon_seconds,
                    burst=self.burst_seconds,
                    grace=self._grace,
                )
            except Exception as exc:  # the store is unreachable: these requests fail
                reservation = None
                for w in batch:
                    w.error = exc
            received = self._clock()
            # slots are times on the store's clock: map them onto ours
            now = received
            if reservation is not None:
                now = reservation.now - self._offset.update(sent, received, reservation.now)
            with self._cond:
                self.stats.rounds += 1
                granted = 0
                latest = 0.0
                for w, delay in zip(
                    batch, reservation.delays if reservation else [0.0] * len(batch), strict=True
                ):
                    if delay is None:
                        continue
                    self._waiting[Lane.PRIORITY if w.ask.priority else Lane.BULK].remove(w)
                    w.go_at = now + delay
                    latest = max(latest, delay)
                    granted += w.error is None
                    w.event.set()
                self.stats.grants += granted
                if reservation is None or not any(self._waiting.values()):
                    continue
                # ask again when this round's slots are running out, or as soon as one
                # left waiting could go (a payment arriving wakes us earlier): a round
                # late for an endpoint's slot loses that time for good
                wait = reservation.retry_in
                if granted:
                    wait = min(wait, latest - self.horizon_seconds / 2)
                wait -= received - now  # time already spent since the store's "now"
                if wait > 0:
                    self._cond.wait(min(wait, self.max_poll_seconds))

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
        with self._cond:
            self.stats.cooldowns += 1

    def close(self) -> None:
        """Stop the dispatcher (waiting requests fail) and release the store."""
        with self._cond:
            self._closed = True
            for lane in self._waiting.values():
                for w in lane:
                    w.error = RuntimeError("the rate limiter was closed")
                    w.event.set()
                lane.clear()
            self._cond.notify_all()
        dispatcher = self._dispatcher
        if dispatcher is not None:
            dispatcher.join(5)
        self.store.close()


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (Stripe sends an integer); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
