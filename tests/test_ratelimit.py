"""The shared rate limiter's rules, on a fake clock, and its stores on both backends.

The cross-process behaviour against a real HTTP peer is in ``test_listing_http.py``.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from stripe_pipeline.stripe_api.ratelimit import (
    BucketState,
    Lane,
    MemoryLimitStore,
    RateLimiter,
    account_bucket,
    database_store,
    decide,
    endpoint_of,
    parse_retry_after,
)
from tests.support.fake_stripe_server import max_in_any_window


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def limiter(clock: FakeClock, **options) -> RateLimiter:
    options.setdefault("account_rate", 10)
    options.setdefault("endpoint_rate", 4)
    lim = RateLimiter(
        MemoryLimitStore(clock=clock), account="acct", headroom=1.0, sleep=clock.sleep, **options
    )
    lim._jitter = 0.0  # exact times on a fake clock
    return lim


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


def test_one_endpoint_is_held_to_its_rate_and_the_account_to_its_own() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    times = {"a": [], "b": [], "c": [], "d": []}
    for _ in range(12):
        for name in times:
            lim.acquire("GET", f"/v1/{name}")
            times[name].append(clock.now)
    every = sorted(t for ts in times.values() for t in ts)
    assert max_in_any_window(every) <= 10  # the account
    assert all(max_in_any_window(ts) <= 4 for ts in times.values())  # each endpoint
    # the account is the binding limit with four endpoints: it is used in full
    assert every[-1] - every[0] == pytest.approx((len(every) - 1) / 10)


def test_a_waiting_payment_goes_before_bulk_requests() -> None:
    account, endpoint = BucketState(10), BucketState(10)
    payments = BucketState(10)
    now = 0.0
    assert decide(account, endpoint, now, priority=False, grace=0.2).granted
    # the account is busy for 0.1 s: the payment waits and marks the account
    waiting = decide(account, payments, now + 0.01, priority=True, grace=0.2)
    assert not waiting.granted and waiting.wait == pytest.approx(0.09)
    # a bulk request at the moment the account frees up stands back for the payment
    bulk = decide(account, endpoint, now + 0.1, priority=False, grace=0.2)
    assert not bulk.granted
    assert decide(account, payments, now + 0.1, priority=True, grace=0.2).granted
    # once the grace after the payment has passed, bulk goes again
    assert decide(account, endpoint, now + 0.31, priority=False, grace=0.2).granted


def test_bulk_takes_the_whole_budget_when_no_payment_waits() -> None:
    clock = FakeClock()
    lim = limiter(clock, endpoint_rate=10)
    start = clock.now
    for _ in range(50):
        lim.acquire("GET", "/v1/charges", Lane.BULK)
    assert clock.now - start == pytest.approx(4.9)  # 10/s: 50 grants in 4.9 s


def test_a_cool_down_holds_every_lane_back() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    lim.acquire("GET", "/v1/charges")
    lim.penalize("GET", "/v1/charges", retry_after=2.0, reason=None)
    t0 = clock.now
    lim.acquire("POST", "/v1/invoices/in_1/pay", Lane.PRIORITY)
    assert clock.now >= t0 + 2.0
    # an endpoint-scoped 429 holds back that endpoint only
    lim.penalize("GET", "/v1/charges", retry_after=5.0, reason="endpoint-rate")
    t1 = clock.now
    lim.acquire("GET", "/v1/refunds")
    assert clock.now < t1 + 1.0
    lim.acquire("GET", "/v1/charges")
    assert clock.now >= t1 + 5.0


def test_database_stores_grant_and_cool_down(engine) -> None:
    """The SQLite and PostgreSQL stores keep the same rules as the in-memory one."""
    store = database_store(engine)
    try:
        lim = RateLimiter(store, account="acct", account_rate=50, endpoint_rate=50)
        sent = []
        for _ in range(20):
            lim.acquire("GET", "/v1/charges")
            sent.append(time.monotonic())
        # paced: 19 intervals of 1/47.5 s (a lower bound, with slack for timers)
        assert sent[-1] - sent[0] >= 0.8 * 19 / 47.5
        lim.penalize("GET", "/v1/charges", retry_after=0.5, reason=None)
        t0 = time.monotonic()
        lim.acquire("POST", "/v1/invoices/in_1/pay", Lane.PRIORITY)
        assert time.monotonic() - t0 >= 0.4
        with engine.connect() as conn:
            buckets = dict(conn.execute(text("SELECT bucket, rate FROM stripe_rate_limits")).all())
        assert buckets == {
            "acct": pytest.approx(47.5),
            "acct|GET /v1/charges": pytest.approx(47.5),
            "acct|POST /v1/invoices/{id}/pay": pytest.approx(47.5),
        }
    finally:
        store.close()
