"""Stripe traffic against localstripe for reconciliation tests, plus an in-memory
listing API (Stripe-shaped objects, pages of 100) for tests that need no HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
from sqlalchemy import Engine, text

from stripe_pipeline.stripe_api.errors import NotFound
from tests.support.localstripe_peer import LocalStripe

# localstripe has no /v1/disputes: disputes are covered with the in-memory API
LOCALSTRIPE_OBJECT_TYPES = ("payment", "refund", "subscription", "invoice")


class Traffic:
    """Payments, refunds and subscriptions made through localstripe's API."""

    def __init__(self, ls: LocalStripe) -> None:
        self.ls = ls
        self.headers = {"Authorization": f"Bearer {ls.api_key}"}
        self._plan = 0

    def post(self, path: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        r = requests.post(
            self.ls.base_url + path, data=data or {}, headers=self.headers, timeout=10
        )
        r.raise_for_status()
        return r.json()

    def list(self, resource: str) -> list[dict[str, Any]]:
        r = requests.get(
            f"{self.ls.base_url}/v1/{resource}",
            params={"limit": 100},
            headers=self.headers,
            timeout=10,
        )
        r.raise_for_status()
        return r.json()["data"]

    def customer_with_card(self) -> tuple[str, str]:
        cus = self.post("/v1/customers", {"email": "payer@example.com"})
        pm = self.post(
            "/v1/payment_methods",
            {
                "type": "card",
                "card[number]": "4242424242424242",
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[cvc]": "123",
            },
        )
        self.post(f"/v1/payment_methods/{pm['id']}/attach", {"customer": cus["id"]})
        self.post(
            f"/v1/customers/{cus['id']}", {"invoice_settings[default_payment_method]": pm["id"]}
        )
        return cus["id"], pm["id"]

    def payment(self, customer: str, pm: str, amount: int) -> str:
        pi = self.post(
            "/v1/payment_intents",
            {"amount": str(amount), "currency": "usd", "customer": customer, "payment_method": pm},
        )
        return self.post(f"/v1/payment_intents/{pi['id']}/confirm")["id"]

    def refund(self, payment_intent: str, amount: int) -> str:
        return self.post("/v1/refunds", {"payment_intent": payment_intent, "amount": str(amount)})[
            "id"
        ]

    def subscription(self, customer: str, amount: int = 1500) -> str:
        self._plan += 1
        product = self.post("/v1/products", {"name": f"plan {self._plan}"})
        plan_id = f"plan_recon_{self._plan}_{int(time.time() * 1000)}"
        self.post(
            "/v1/plans",
            {
                "id": plan_id,
                "product": product["id"],
                "amount": str(amount),
                "currency": "usd",
                "interval": "month",
            },
        )
        return self.post("/v1/subscriptions", {"customer": customer, "items[0][plan]": plan_id})[
            "id"
        ]


def wait_until(what: str, probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stored_event_ids(engine: Engine) -> dict[str, str]:
    """stripe_event_id -> source of every stored event."""
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT stripe_event_id, source FROM stripe_events")).all())


def _invoice_payment_matches(obj: dict[str, Any], params: dict[str, Any]) -> bool:
    """Stripe's filters of ``GET /v1/invoice_payments``: ``invoice``, ``status`` and
    ``payment[type]`` / ``payment[payment_intent]`` (nested, as the client sends them,
    or already flattened)."""
    payment = dict(params.get("payment") or {})
    for name in ("type", "payment_intent", "payment_record"):
        if f"payment[{name}]" in params:
            payment[name] = params[f"payment[{name}]"]
    stated = obj.get("payment") or {}
    if any(stated.get(name) != value for name, value in payment.items()):
        return False
    return all(obj.get(name) == params[name] for name in ("invoice", "status") if name in params)


class MemoryApi:
    """Stripe-shaped listings from memory: pages of 100, newest first, created filters.

    Behaves like Stripe where reconciliation depends on it: canceled subscriptions are
    listed only with ``status=all``; payment methods are listed per customer; invoice
    payments are filtered by invoice, status and payment; only open reviews are listed;
    an invoice's or credit note's lines (``/v1/invoices/{id}/lines``) are those added at
    that path, else the ones its object embeds, and 404 once the parent is gone;
    deleted customers are not listed but answer ``{"deleted": true}`` by id, and
    listing their payment methods answers 404; anything unknown answers 404
    (:class:`NotFound`). ``list_payment_intent_invoice_payments`` answers processing's
    invoice payment lookup as the real client does. A payout's balance transactions
    (``/v1/balance_transactions?payout=``) are those named in ``payout_transactions``.
    ``expand`` is implied: objects are held as Stripe returns them expanded (a
    subscription's discounts).
    """

    def __init__(self, data: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.data: dict[str, list[dict[str, Any]]] = {}
        for resource, objects in (data or {}).items():
            for obj in objects:
                self.add(resource, obj)
        self.calls = 0
        self.fail_on: str | None = None
        self.deleted: dict[str, str] = {}  # id -> object kind, answered as deleted
        # payout id -> ids of the balance transactions it carried (``?payout=``)
        self.payout_transactions: dict[str, set[str]] = {}

    @staticmethod
    def _path(resource: str) -> str:
        return resource if resource.startswith("/v1/") else f"/v1/{resource}"

    def add(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.data.setdefault(self._path(resource), []).append(obj)
        return obj

    def remove(self, object_id: str) -> None:
        for objects in self.data.values():
            objects[:] = [o for o in objects if o.get("id") != object_id]

    def _listed(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        parent_path, _, object_id = path.removesuffix("/lines").rpartition("/")
        if path.endswith("/lines") and path not in self.data:
            parent = next(
                (o for o in self.data.get(parent_path, []) if o.get("id") == object_id), None
            )
            if parent is None:
                raise NotFound(path)
            return list((parent.get("lines") or {}).get("data") or [])
        items = list(self.data.get(path, []))
        if path == "/v1/reviews":  # Stripe lists open reviews only
            items = [o for o in items if o.get("open")]
        if path == "/v1/payment_methods":  # Stripe lists them per customer only
            if params.get("customer") in self.deleted:
                raise NotFound(f"{path}?customer={params['customer']}")  # no such customer
            items = [o for o in items if o.get("customer") == params.get("customer")]
        if path == "/v1/subscriptions" and params.get("status") != "all":
            items = [o for o in items if o.get("status") != "canceled"]
        if path == "/v1/invoice_payments":
            items = [o for o in items if _invoice_payment_matches(o, params)]
        if path == "/v1/balance_transactions" and "payout" in params:
            # Stripe's transaction object does not name its payout: the list does
            carried = self.payout_transactions.get(params["payout"])
            if carried is None:
                raise NotFound(f"{path}?payout={params['payout']}")
            items = [o for o in items if o.get("id") in carried]
        return items

    def list_all(
        self,
        resource: str,
        *,
        created_gte: int | None = None,
        created_lte: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        path = self._path(resource)
        if path.rsplit("/", 1)[-1] == self.fail_on or resource == self.fail_on:
            self.calls += 1
            raise ConnectionError(f"listing {resource}: connection refused")
        items = [
            o
            for o in sorted(self._listed(path, params or {}), key=lambda o: -o.get("created", 0))
            if (created_gte is None or o.get("created", 0) >= created_gte)
            and (created_lte is None or o.get("created", 0) <= created_lte)
        ]
        for start in range(0, max(len(items), 1), 100):
            self.calls += 1
            yield from items[start : start + 100]

    def list_payment_intent_invoice_payments(self, payment_intent_id: str) -> list[dict[str, Any]]:
        """``StripeApi.list_payment_intent_invoice_payments``: one filtered listing."""
        payment = {"type": "payment_intent", "payment_intent": payment_intent_id}
        return list(self.list_all("/v1/invoice_payments", params={"payment": payment}))

    def get(self, path: str) -> dict[str, Any]:
        self.calls += 1
        path = path.partition("?")[0]  # expand[]=...: objects here are held expanded
        base, _, object_id = path.rpartition("/")
        if object_id in self.deleted:
            return {"id": object_id, "object": self.deleted[object_id], "deleted": True}
        for obj in self.data.get(base, []):
            if obj.get("id") == object_id:
                return obj
        raise NotFound(path)
