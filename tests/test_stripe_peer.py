"""The drill's Stripe peer behaves like Stripe where reconciliation depends on it.

The drill proves nothing if its fake hides what Stripe shows or shows what Stripe
hides: these tests hold the peer (localstripe behind the front of
``stripe_pipeline/devtools/stripe_peer.py``) to Stripe's documented list and error behaviour,
through the pipeline's own client where the pipeline uses it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from stripe_pipeline.stripe_api import StripeApi
from stripe_pipeline.stripe_api.errors import NotFound
from tests.support.events import make_event
from tests.support.localstripe_peer import start_localstripe
from tests.support.stripe_peer import StripePeer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def peer() -> Iterator[StripePeer]:
    localstripe = start_localstripe()
    front = StripePeer(localstripe).start()
    try:
        yield front
    finally:
        front.stop()
        localstripe.stop()


class Http:
    def __init__(self, base: str, key: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def post(self, path: str, data: dict | None = None) -> dict:
        r = self.session.post(f"{self.base}{path}", data=data or {}, timeout=10)
        r.raise_for_status()
        return r.json()

    def get(self, path: str, **params) -> requests.Response:
        return self.session.get(f"{self.base}{path}", params=params, timeout=10)


def _customer_with_subscriptions(http: Http) -> tuple[str, str, str]:
    customer = http.post("/v1/customers", {"email": "peer@example.com"})["id"]
    method = http.post(
        "/v1/payment_methods",
        {
            "type": "card",
            "card[number]": "4242424242424242",
            "card[exp_month]": "12",
            "card[exp_year]": "2031",
            "card[cvc]": "123",
        },
    )["id"]
    http.post(f"/v1/payment_methods/{method}/attach", {"customer": customer})
    http.post(f"/v1/customers/{customer}", {"invoice_settings[default_payment_method]": method})
    product = http.post("/v1/products", {"name": "peer"})["id"]
    plan = f"plan_peer_{time.time_ns()}"
    http.post(
        "/v1/plans",
        {"id": plan, "product": product, "amount": "500", "currency": "usd", "interval": "month"},
    )
    live = http.post("/v1/subscriptions", {"customer": customer, "items[0][plan]": plan})["id"]
    gone = http.post("/v1/subscriptions", {"customer": customer, "items[0][plan]": plan})["id"]
    http.session.delete(f"{http.base}/v1/subscriptions/{gone}", timeout=10).raise_for_status()
    return customer, live, gone


def test_canceled_subscriptions_are_listed_only_with_status_all(peer: StripePeer) -> None:
    http = Http(peer.base_url, peer.api_key)
    customer, live, gone = _customer_with_subscriptions(http)

    def listed(base: str, **params) -> set[str]:
        page = Http(base, peer.api_key).get("/v1/subscriptions", customer=customer, **params)
        page.raise_for_status()
        return {s["id"] for s in page.json()["data"]}

    assert listed(peer.base_url) == {live}
    assert listed(peer.base_url, status="all") == {live, gone}
    assert listed(peer.base_url, status="canceled") == {gone}
    # localstripe itself hides them too: the front does not invent the behaviour
    assert listed(peer.localstripe.base_url) == {live}
    assert listed(peer.localstripe.base_url, status="all") == {live, gone}


def test_lists_are_newest_first_paged_and_cut_by_created(peer: StripePeer) -> None:
    http = Http(peer.base_url, peer.api_key)
    tag = f"page{time.time_ns()}@example.com"
    made = []
    for second in range(2):
        if second:
            start = int(time.time())
            while int(time.time()) == start:
                time.sleep(0.02)
        made += [http.post("/v1/customers", {"email": tag})["id"] for _ in range(3)]
    api = StripeApi(peer.api_key, api_base=peer.base_url, requests_per_second=500)
    listed = [c["id"] for c in api.list_all("customers", params={"email": tag})]
    assert listed == list(reversed(made))  # newest first, the newest of a second first
    first = http.get("/v1/customers", email=tag, limit=4).json()
    assert [c["id"] for c in first["data"]] == listed[:4] and first["has_more"] is True
    rest = http.get("/v1/customers", email=tag, limit=4, starting_after=listed[3]).json()
    assert [c["id"] for c in rest["data"]] == listed[4:] and rest["has_more"] is False
    too_many = http.get("/v1/customers", limit=101)
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "limit"
    created = {c["id"]: c["created"] for c in http.get("/v1/customers", email=tag).json()["data"]}
    newest = max(created.values())
    cut = list(api.list_all("customers", created_gte=newest, params={"email": tag}))
    assert {c["id"] for c in cut} == {k for k, v in created.items() if v >= newest}


def test_payment_methods_are_listed_per_customer_and_deleted_customers_answer_as_stripe(
    peer: StripePeer,
) -> None:
    http = Http(peer.base_url, peer.api_key)
    customer, _, _ = _customer_with_subscriptions(http)
    by_query = http.get("/v1/payment_methods", customer=customer, type="card").json()["data"]
    by_path = http.get(f"/v1/customers/{customer}/payment_methods", type="card").json()["data"]
    assert len(by_query) == 1 and by_query == by_path
    assert http.get("/v1/payment_methods", type="card").json()["data"] == []

    doomed = http.post("/v1/customers", {"email": "doomed@example.com"})["id"]
    http.session.delete(f"{peer.base_url}/v1/customers/{doomed}", timeout=10).raise_for_status()
    assert http.get(f"/v1/customers/{doomed}").json() == {
        "id": doomed,
        "object": "customer",
        "deleted": True,
    }
    assert doomed not in {c["id"] for c in http.get("/v1/customers", limit=100).json()["data"]}
    gone = http.get("/v1/payment_methods", customer=doomed, type="card")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "resource_missing"
    api = StripeApi(peer.api_key, api_base=peer.base_url, requests_per_second=500)
    with pytest.raises(NotFound):
        list(api.list_all("/v1/payment_methods", params={"customer": doomed, "type": "card"}))
    missing = http.get("/v1/charges/ch_never")
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "type": "invalid_request_error",
        "message": "No such charge: 'ch_never'",
        "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
        "param": "id",
    }
    with pytest.raises(NotFound):
        api.get("/v1/disputes/dp_never")


def test_fixture_objects_and_events_are_served_beside_localstripes(peer: StripePeer) -> None:
    http = Http(peer.base_url, peer.api_key)
    customer = http.post("/v1/customers", {"email": "events@example.com"})["id"]
    dispute = {"id": f"dp_peer{time.time_ns()}", "object": "dispute", "created": int(time.time())}
    peer.put("disputes", dispute)
    event = peer.add_event(make_event("charge.dispute.created", dispute, dispute["created"]))
    assert http.get(f"/v1/disputes/{dispute['id']}").json() == dispute
    assert dispute["id"] in {d["id"] for d in http.get("/v1/disputes").json()["data"]}
    api = StripeApi(peer.api_key, api_base=peer.base_url, requests_per_second=500)
    listed = list(api.list_all("events", created_gte=dispute["created"] - 5))
    types = {e["id"]: e["type"] for e in listed}
    assert types[event["id"]] == "charge.dispute.created"
    assert any(
        e["type"] == "customer.created" and e["data"]["object"]["id"] == customer for e in listed
    )
    emitted = [e["id"] for e in peer.emitted_events()]
    assert event["id"] in emitted and len(emitted) == len(set(emitted))


def _paid_charge(http: Http, amount: int = 2000) -> dict:
    customer = http.post("/v1/customers", {"email": "refund@example.com"})["id"]
    method = http.post(
        "/v1/payment_methods",
        {"type": "card", "card[number]": "4242424242424242", "card[exp_month]": "12",
         "card[exp_year]": "2031", "card[cvc]": "123"},
    )["id"]  # fmt: skip
    http.post(f"/v1/payment_methods/{method}/attach", {"customer": customer})
    intent = http.post(
        "/v1/payment_intents",
        {"amount": str(amount), "currency": "usd", "customer": customer,
         "payment_method": method, "confirm": "true"},
    )  # fmt: skip
    charge = intent["latest_charge"]
    return charge if isinstance(charge, dict) else http.get(f"/v1/charges/{charge}").json()


def test_a_refund_names_its_charges_payment_intent(peer: StripePeer) -> None:
    """localstripe leaves ``payment_intent`` null on refunds; Stripe names the charge's."""
    http = Http(peer.base_url, peer.api_key)
    charge = _paid_charge(http)
    refund = http.post("/v1/refunds", {"charge": charge["id"], "amount": "500"})["id"]
    upstream = Http(peer.localstripe.base_url, peer.api_key)
    assert upstream.get(f"/v1/refunds/{refund}").json()["payment_intent"] is None

    assert http.get(f"/v1/refunds/{refund}").json()["payment_intent"] == charge["payment_intent"]
    listed = {r["id"]: r for r in http.get("/v1/refunds", limit=100).json()["data"]}
    assert listed[refund]["payment_intent"] == charge["payment_intent"]


def test_a_stored_object_serves_its_embedded_list(peer: StripePeer) -> None:
    """A fixture-built invoice's lines are listed at ``/v1/invoices/{id}/lines``."""
    http = Http(peer.base_url, peer.api_key)
    invoice_id = f"in_peer{time.time_ns()}"
    lines = [{"id": f"il_{n}_{invoice_id}", "object": "line_item", "amount": n} for n in range(3)]
    embedded = {"object": "list", "data": lines, "has_more": False}
    peer.put("invoices", {"id": invoice_id, "object": "invoice", "lines": embedded})

    first = http.get(f"/v1/invoices/{invoice_id}/lines", limit=2).json()
    assert [line["id"] for line in first["data"]] == [lines[0]["id"], lines[1]["id"]]
    assert first["has_more"] is True
    rest = http.get(f"/v1/invoices/{invoice_id}/lines", starting_after=lines[1]["id"]).json()
    assert [line["id"] for line in rest["data"]] == [lines[2]["id"]]
    assert rest["has_more"] is False
    # an object localstripe keeps still answers from localstripe
    assert http.get("/v1/invoices/in_never/lines").status_code == 404


def test_the_store_outlives_the_front_in_its_state_file(peer: StripePeer, tmp_path) -> None:
    """The demo's second run serves the disputes its first run registered."""
    state = tmp_path / "stripe_peer.json"
    first = StripePeer(peer.localstripe, state_file=state)
    dispute = {"id": f"dp_kept{time.time_ns()}", "object": "dispute", "created": 1_700_000_000}
    first.put("disputes", dispute)
    first.put("events", {"id": "evt_kept", "object": "event", "created": 1_700_000_001})

    second = StripePeer(peer.localstripe, state_file=state).start()
    try:
        http = Http(second.base_url, second.api_key)
        assert http.get(f"/v1/disputes/{dispute['id']}").json() == dispute
        second.put("disputes", {**dispute, "status": "won"})  # replaced, not added
        listed = http.get("/v1/disputes").json()["data"]
        assert [d["id"] for d in listed] == [dispute["id"]]
        assert listed[0]["status"] == "won"
    finally:
        second.stop()
