"""The Stripe API client against localstripe and a 429-answering peer."""

from __future__ import annotations

import json
import time

import pytest
import stripe
from sqlalchemy import text

from stripe_pipeline.process.errors import classify
from stripe_pipeline.stripe_api import StripeApi
from stripe_pipeline.stripe_api.errors import NotFound
from stripe_pipeline.stripe_api.ratelimit import default_rate_for_key
from tests.support.localstripe_peer import localstripe_session
from tests.support.recovery_peers import FlakyStripe, ls_request

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def localstripe():
    yield from localstripe_session()


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    times, best, start = sorted(times), 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_default_rate_follows_stripe_limits() -> None:
    assert default_rate_for_key("sk_test_x") == 25
    assert default_rate_for_key("sk_live_x") == 100
    assert StripeApi("sk_test_x").requests_per_second == 25


def test_list_all_pages_past_100_and_counts_calls(localstripe) -> None:
    setup = StripeApi(localstripe.api_key, api_base=localstripe.base_url, requests_per_second=500)
    tag = f"page{time.time_ns()}@example.test"
    for _ in range(105):
        ls_request(setup, "post", "/v1/customers", {"email": tag})
    api = StripeApi(localstripe.api_key, api_base=localstripe.base_url, requests_per_second=500)
    found = [c for c in api.list_all("customers", params={"email": tag})]
    assert len(found) == 105 and len({c["id"] for c in found}) == 105
    assert type(found[0]) is dict  # plain dicts, not StripeObjects
    assert api.calls == 2  # two pages of 100


def test_list_all_created_filters(localstripe) -> None:
    api = StripeApi(localstripe.api_key, api_base=localstripe.base_url, requests_per_second=500)
    ls_request(api, "post", "/v1/customers", {"email": "filter@example.test"})
    now = int(time.time())
    assert list(api.list_all("events", created_gte=now + 3600)) == []
    recent = list(api.list_all("events", created_gte=now - 60, created_lte=now + 60))
    assert recent and all(now - 60 <= e["created"] <= now + 60 for e in recent)


def test_list_of_a_missing_parent_raises_not_found(localstripe) -> None:
    """A deleted (or unknown) customer's payment methods answer 404: callers must be able
    to tell that from a failure, as ``get`` does for one object."""
    api = StripeApi(localstripe.api_key, api_base=localstripe.base_url, requests_per_second=500)
    params = {"customer": "cus_never_existed", "type": "card"}
    with pytest.raises(NotFound):
        list(api.list_all("/v1/payment_methods", params=params))
    assert classify(NotFound("/v1/payment_methods")) == "permanent"


def test_rate_limiter_keeps_every_second_within_the_limit(localstripe) -> None:
    api = StripeApi(localstripe.api_key, api_base=localstripe.base_url, requests_per_second=20)
    customer = ls_request(api, "post", "/v1/customers", {"email": "rate@example.test"})
    first = len(api.call_times)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:  # threads share one limiter
        list(pool.map(lambda _: api.retrieve("customers", customer["id"]), range(45)))
    times = api.call_times[first:]
    assert len(times) == 45
    assert _max_in_window(times) <= 20


def test_429_is_retried_with_backoff() -> None:
    """localstripe never answers 429, so a tiny local server does (429 first, then 200)."""
    peer = FlakyStripe(fail_first=2)
    try:
        api = StripeApi("sk_test_flaky", api_base=peer.base_url, max_network_retries=3)
        assert api.retrieve("customers", "cus_1")["id"] == "cus_1"
        assert api.calls == 3 and len(peer.requests) == 3
    finally:
        peer.stop()


def test_429_gives_up_after_max_retries() -> None:
    peer = FlakyStripe(fail_first=10)
    try:
        api = StripeApi("sk_test_flaky", api_base=peer.base_url, max_network_retries=1)
        with pytest.raises(stripe.RateLimitError):
            api.retrieve("customers", "cus_1")
        assert api.calls == 2
    finally:
        peer.stop()


def test_calls_are_audited_without_the_key(localstripe, engine) -> None:
    key = localstripe.api_key
    api = StripeApi(key, api_base=localstripe.base_url, audit_engine=engine, actor="test")
    customer = ls_request(api, "post", "/v1/customers", {"email": "audit@example.test"})
    api.retrieve("customers", customer["id"])
    list(api.list_all("customers", params={"email": "audit@example.test"}))
    with pytest.raises(stripe.InvalidRequestError):
        api.pay_invoice("in_missing", idempotency_key="idem-1")
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT actor, details FROM audit_log WHERE action = 'stripe_api_call'")
        ).all()
    assert len(rows) == 4
    blob = " ".join(str(r[1]) for r in rows)
    assert key not in blob and "sk_test" not in blob
    # raw SQL: SQLite hands back the JSON text, PostgreSQL the decoded document
    details = [d if isinstance(d, dict) else json.loads(d) for _, d in rows]
    assert all("latency_ms" in d for d in details)
    failed = [d for d in details if d["outcome"] == "error"]
    assert [d["idempotency_key"] for d in failed] == ["idem-1"]
