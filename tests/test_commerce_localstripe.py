"""localstripe as the Stripe peer for the commerce objects it speaks: the
``product.created`` and ``plan.created`` events it emits are applied as they come, and
a subscription naming a product nobody stored has it fetched from localstripe through
the real API client (its plans API: a ``plan_`` id). Both backends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import Engine, text

from stripe_pipeline.stripe_api.client import StripeApi
from tests.support.events import apply_in_transaction
from tests.support.localstripe_peer import LocalStripe, start_localstripe
from tests.support.reconciliation_traffic import Traffic


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    ls = start_localstripe()
    try:
        yield ls
    finally:
        ls.stop()


def _events(traffic: Traffic, types: set[str]) -> list[dict]:
    return [e for e in traffic.list("events") if e["type"] in types]


def test_localstripe_product_plan_and_subscription_events(
    localstripe: LocalStripe, engine: Engine
) -> None:
    localstripe.flush()
    traffic = Traffic(localstripe)
    customer, _ = traffic.customer_with_card()
    sub_id = traffic.subscription(customer, amount=2500)
    [sub_event] = _events(traffic, {"customer.subscription.created"})
    plan = sub_event["data"]["object"]["items"]["data"][0]["plan"]
    assert plan["id"].startswith("plan_") and isinstance(plan["product"], str)

    # the subscription first, alone: its plan is embedded, its product is fetched
    client = StripeApi(localstripe.api_key, api_base=localstripe.base_url, max_network_retries=0)
    result = apply_in_transaction(engine, [sub_event], object_source=client)
    assert not result.failures and not result.notes, (result.failures, result.notes)
    with engine.connect() as conn:
        product = conn.execute(
            text("SELECT stripe_product_id, name, last_event_id FROM stripe_products")
        ).all()
        price = conn.execute(
            text(
                "SELECT stripe_price_id, product_id, unit_amount_minor, currency, "
                "recurring_interval, type FROM stripe_prices"
            )
        ).all()
        subs = conn.execute(text("SELECT stripe_subscription_id FROM stripe_subscriptions")).all()
    remote = requests.get(
        f"{localstripe.base_url}/v1/products/{plan['product']}",
        headers=traffic.headers,
        timeout=10,
    ).json()
    assert [tuple(r) for r in product] == [(plan["product"], remote["name"], None)]
    assert [tuple(r) for r in price] == [
        (plan["id"], plan["product"], 2500, "usd", "month", "recurring")
    ]
    assert [tuple(r) for r in subs] == [(sub_id,)]

    # then the product and plan events localstripe emitted: their versions win
    emitted = _events(traffic, {"product.created", "plan.created"})
    assert {e["type"] for e in emitted} == {"product.created", "plan.created"}
    result = apply_in_transaction(engine, emitted)
    assert not result.failures
    with engine.connect() as conn:
        versions = (
            conn.execute(
                text(
                    "SELECT last_event_id FROM stripe_products UNION ALL "
                    "SELECT last_event_id FROM stripe_prices"
                )
            )
            .scalars()
            .all()
        )
    assert sorted(versions) == sorted(e["id"] for e in emitted)
