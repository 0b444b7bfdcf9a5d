"""The shared rate limiter: its rules (pure, on a fake clock), its dispatcher, its stores.

The cross-process behaviour against a real HTTP peer is in ``test_listing_http.py``.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import text

from stripe_pipeline.stripe_api.ratelimit import (
    Ask,
    ClockOffset,
    Lane,
    MemoryLimitStore,
    RateLimiter,
    account_bucket,
    database_store,
    endpoint_of,
    parse_retry_after,
)
from tests.support.fake_stripe_server import max_in_any_window


def test_endpoints_are_methods_and_paths_without_ids() -> None:
    assert endpoint_of("get", "/v1/customers/cus_NffrFeUfNV2Hib/payment_methods?type=card") == (
        "GET /v1/customers/{id}/payment_methods"
    )
    assert endpoint_of("POST", "/v1/invoices/in_1MtHbELkdIwHu7ix/pay") == (
        "POST /v1/invoices/{id}/pay"
    )
    assert endpoint_of("GET", "/v1/payment_methods") == "GET /v1/payment_methods"
    assert endpoint_of("GET", "/v1/radar/early_fraud_warnings") == (
        "GET /v1/radar/early_fraud_warnings"
    )
    assert endpoint_of("GET", "/v1/customers/cus_f000000003") == "GET /v1/customers/{id}"


def test_account_bucket_hides_the_key() -> None:
    name = account_bucket("sk_live_secret123")
    assert "secret123" not in name and name.startswith("account:live:")
    assert account_bucket("sk_test_x").startswith("account:test:")
    assert parse_retry_after("2") == 2.0 and parse_retry_after("soon") is None


# --- the rules, on a fake clock -----------------------------------------------------------

H, B = 0.05, 0.01  # the default horizon and burst


def grant_times(
    store: MemoryLimitStore, clock: list[float], endpoints: list[str], rounds: int, late=0.0
):
    """One caller asking for each endpoint in turn, going at the slot it is given, and
    asking again up to ``late`` seconds late; the send time of each request."""
    rng = random.Random(1)
    times: dict[str, list[float]] = {e: [] for e in endpoints}
    for _ in range(rounds):
        for e in endpoints:
            while (r := store.reserve("acct", [Ask(e)], horizon=H, burst=B, grace=0)).delays[
                0
            ] is None:
                clock[0] += r.retry_in + rng.uniform(0, late)
            clock[0] += r.delays[0]
            times[e].append(clock[0])
            clock[0] += rng.uniform(0, late)
    return times


def memory_store(clock: list[float], account_rate: float, endpoints: dict[str, float]):
    store = MemoryLimitStore(clock=lambda: clock[0])
    store.ensure("acct", account_rate)
    for name, rate in endpoints.items():
        store.ensure(name, rate)
    return store


def test_each_endpoint_and_the_account_keep_their_rates() -> None:
    clock = [1000.0]
    store = memory_store(clock, 95, {e: 23.75 for e in "abcde"})
    times = grant_times(store, clock, list("abcde"), 200, late=0.008)
    every = sorted(t for ts in times.values() for t in ts)
    assert max_in_any_window(every) <= 96  # ceil(1.01 * 95)
    assert all(max_in_any_window(ts) <= 24 for ts in times.values())  # ceil(1.01 * 23.75)
    # with five endpoints the account binds, and it is used in full despite late asks
    assert every[-1] - every[0] == pytest.approx(999 / 95, rel=0.01)


def test_one_round_reserves_a_horizon_of_slots_for_what_waits() -> None:
    clock = [1000.0]
    store = memory_store(clock, 100, {e: 25 for e in "abcdefgh"})
    asks = [Ask(e) for e in "abcdefgh"]
    r = store.reserve("acct", asks, horizon=0.05, burst=0.0, grace=0)
    granted = [d for d in r.delays if d is not None]
    assert len(granted) == 6  # slots at 0, 10, ..., 50 ms
    assert granted == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04, 0.05])


def test_one_round_gives_an_endpoint_every_slot_it_can_use_in_the_horizon() -> None:
    """Asks of one endpoint queued behind each other: the first goes now; the others
    are placed where the endpoint is free again within the horizon, after the other
    endpoint's asks, instead of waiting a round each (a round late for an endpoint's
    slot loses that time for good)."""
    clock = [1000.0]
    store = memory_store(clock, 100, {"a": 50, "b": 50})
    asks = [Ask("a"), Ask("a"), Ask("b")]
    r = store.reserve("acct", asks, horizon=0.05, burst=0.0, grace=0)
    assert r.delays == pytest.approx([0.0, 0.02, 0.01])  # one pass left the second "a" out
    # the account and each endpoint still keep their pace
    assert store.reserve("acct", [Ask("a")], horizon=0.0, burst=0.0, grace=0).delays == [None]


def test_a_busy_endpoint_is_skipped_not_given_a_late_slot() -> None:
    clock = [1000.0]
    store = memory_store(clock, 100, {"slow": 1, "fast": 100})
    assert store.reserve("acct", [Ask("slow")], horizon=H, burst=0, grace=0).delays == [0.0]
    r = store.reserve("acct", [Ask("slow"), Ask("fast")], horizon=H, burst=0, grace=0)
    assert r.delays[0] is None and r.delays[1] == pytest.approx(0.01)
    assert r.retry_in == pytest.approx(1.0)  # when "slow" could go


def test_a_waiting_payment_goes_before_bulk_requests() -> None:
    clock = [0.0]
    store = memory_store(clock, 10, {"bulk": 10, "pay": 10})
    store.reserve("acct", [Ask("bulk")], horizon=0, burst=0, grace=0.2)
    clock[0] = 0.01
    # the account is busy for 0.1 s: beyond the horizon, the payment waits, marks it
    waiting = store.reserve("acct", [Ask("pay", priority=True)], horizon=0.05, burst=0, grace=0.2)
    assert waiting.delays == [None]
    # bulk stands back now, even once the account frees up
    clock[0] = 0.1
    assert store.reserve("acct", [Ask("bulk")], horizon=0.05, burst=0, grace=0.2).delays == [None]
    r = store.reserve("acct", [Ask("pay", True)], horizon=0.05, burst=0, grace=0.2)
    assert r.delays == [0.0]
    clock[0] = 0.31  # after the payment and its grace, bulk goes again
    assert store.reserve("acct", [Ask("bulk")], horizon=0.05, burst=0, grace=0.2).delays != [None]


def test_a_cool_down_holds_the_account_and_an_endpoint_one_its_endpoint() -> None:
    clock = [0.0]
    store = memory_store(clock, 100, {"a": 100, "b": 100})
    store.cool_down("acct", 2.0)
    r = store.reserve("acct", [Ask("a", True)], horizon=H, burst=B, grace=0)
    assert r.delays == [None] and r.retry_in == pytest.approx(2.0 - H)
    clock[0] = 2.0
    store.cool_down("a", 5.0)
    r = store.reserve("acct", [Ask("a"), Ask("b")], horizon=H, burst=B, grace=0)
    assert r.delays[0] is None and r.delays[1] == 0.0


# --- the dispatcher (threads, real clock, fast rates) --------------------------------------


def hammer(limiter: RateLimiter, path: str, stop: threading.Event, log: list, lane=Lane.BULK):
    def run() -> None:
        while not stop.is_set():
            try:
                limiter.acquire("GET", path, lane)
            except RuntimeError:  # the test closed the limiter under it
                return
            log.append(path)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_account_is_shared_in_proportion_to_what_waits() -> None:
    """Six requests waiting on one endpoint, two on another: about 3:1 of the account."""
    limiter = RateLimiter.in_process("sk_live_x", account_rate=100, endpoint_rate=1000)
    stop, log = threading.Event(), []
    threads = [hammer(limiter, "/v1/charges", stop, log) for _ in range(6)]
    threads += [hammer(limiter, "/v1/refunds", stop, log) for _ in range(2)]
    while len(log) < 150:
        time.sleep(0.01)
    stop.set()
    limiter.close()
    counts = Counter(log)
    assert counts["/v1/charges"] > 2 * counts["/v1/refunds"] > 0


def test_an_endpoint_at_its_limit_does_not_hold_the_others_back() -> None:
    limiter = RateLimiter.in_process(
        "sk_live_x", account_rate=200, endpoint_rates={"GET /v1/disputes": 5.0}
    )
    stop, log = threading.Event(), []
    for _ in range(4):
        hammer(limiter, "/v1/disputes", stop, log)  # queued first, mostly at their limit
    hammer(limiter, "/v1/charges", stop, log)
    time.sleep(1.0)
    stop.set()
    limiter.close()
    counts = Counter(log)
    assert counts["/v1/charges"] > 3 * counts["/v1/disputes"]


def test_a_payment_jumps_the_bulk_queue() -> None:
    limiter = RateLimiter.in_process("sk_live_x", account_rate=40, endpoint_rate=1000)
    stop, log = threading.Event(), []
    for _ in range(8):
        hammer(limiter, "/v1/charges", stop, log)
    while len(log) < 10:
        time.sleep(0.01)
    before = len(log)
    limiter.acquire("POST", "/v1/invoices/in_1/pay", Lane.PRIORITY)
    bulk_in_between = len(log) - before
    stop.set()
    limiter.close()
    assert bulk_in_between <= 2  # at most the one in flight (and one racing the marker)


def test_a_cool_down_holds_every_lane_and_an_endpoint_one_only_its_endpoint() -> None:
    limiter = RateLimiter.in_process("sk_live_x", account_rate=100, endpoint_rate=100)
    limiter.acquire("GET", "/v1/charges")
    limiter.penalize("GET", "/v1/charges", retry_after=0.3, reason=None)
    t0 = time.monotonic()
    limiter.acquire("POST", "/v1/invoices/in_1/pay", Lane.PRIORITY)
    assert time.monotonic() - t0 >= 0.25
    limiter.penalize("GET", "/v1/charges", retry_after=30, reason="endpoint-rate")
    limiter.acquire("GET", "/v1/refunds")  # not held back: returns well before 30 s
    failed: list[BaseException] = []

    def charges() -> None:
        try:
            limiter.acquire("GET", "/v1/charges")
        except RuntimeError as exc:
            failed.append(exc)

    waiting = threading.Thread(target=charges)
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive()  # still cooling down
    limiter.close()  # a closed limiter fails its waiting requests
    waiting.join(5)
    assert not waiting.is_alive() and "closed" in str(failed[0])


def test_slots_on_another_clock_map_onto_ours() -> None:
    """The database's clock is not ours: slots still go at the right local times."""
    skewed = MemoryLimitStore(clock=lambda: time.monotonic() + 1000.0)
    limiter = RateLimiter(skewed, account="acct", account_rate=40, endpoint_rate=40)
    sent = []
    t0 = time.monotonic()
    for _ in range(20):
        limiter.acquire("GET", "/v1/charges")
        sent.append(time.monotonic())
    limiter.close()
    assert sent[-1] - t0 < 5  # nobody waited for the other clock's 1000 s
    assert sent[-1] - sent[0] >= 0.8 * 19 / 38  # and the pace held


def test_the_clock_offset_trusts_the_fastest_round_trip() -> None:
    offset = ClockOffset(window=10)
    assert offset.update(0.0, 0.002, 100.001) == pytest.approx(100.0)  # rtt 2 ms
    # a slow round (rtt 80 ms) that the store answered at its very start
    assert offset.update(1.0, 1.08, 101.0) == pytest.approx(100.0)
    # old samples age out
    assert offset.update(20.0, 20.01, 120.005) == pytest.approx(100.0)


# --- the stores on both backends ------------------------------------------------------------


def test_database_stores_grant_pace_and_cool_down(engine) -> None:
    limiter = RateLimiter(database_store(engine), account="acct", account_rate=50, endpoint_rate=50)
    try:
        sent = []
        for _ in range(20):
            limiter.acquire("GET", "/v1/charges")
            sent.append(time.monotonic())
        # paced: 19 intervals of 1/46 s (a lower bound, with slack for timers)
        assert sent[-1] - sent[0] >= 0.8 * 19 / 46
        limiter.penalize("GET", "/v1/charges", retry_after=0.5, reason=None)
        t0 = time.monotonic()
        limiter.acquire("POST", "/v1/invoices/in_1/pay", Lane.PRIORITY)
        assert time.monotonic() - t0 >= 0.4
        with engine.connect() as conn:
            buckets = dict(conn.execute(text("SELECT bucket, rate FROM stripe_rate_limits")).all())
        assert buckets == {
            "acct": pytest.approx(47.5),
            "acct|GET /v1/charges": pytest.approx(46.0),  # endpoints paced at 92 %
            "acct|POST /v1/invoices/{id}/pay": pytest.approx(46.0),
        }
    finally:
        limiter.close()


def test_two_limiters_on_one_database_share_the_budget(engine) -> None:
    """Two limiters (as two processes would) on one store never exceed it together."""
    limiters = [
        RateLimiter(database_store(engine), account="acct", account_rate=40, endpoint_rate=40)
        for _ in range(2)
    ]
    stop = threading.Event()
    times: list[float] = []

    def run(limiter: RateLimiter) -> None:
        while not stop.is_set():
            limiter.acquire("GET", "/v1/charges")
            times.append(time.time())

    threads = [threading.Thread(target=run, args=(lim,)) for lim in limiters for _ in range(3)]
    for t in threads:
        t.start()
    while len(times) < 80:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(5)
    for lim in limiters:
        lim.close()
    assert max_in_any_window(times) <= 40
