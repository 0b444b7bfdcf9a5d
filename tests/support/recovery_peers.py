"""Test peers for recovery: a tiny 429-then-200 server and localstripe helpers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FlakyStripe:
    """127.0.0.1 server answering the first ``fail_first`` requests 429, then 200.

    localstripe never rate-limits, so this is how a 429 reaches the client in tests.
    """

    def __init__(self, fail_first: int = 1) -> None:
        self.fail_first = fail_first
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
                )
                if len(outer.requests) <= outer.fail_first:
                    body = {"error": {"type": "rate_limit_error", "message": "Too many"}}
                    status = 429
                else:
                    body = {"id": self.path.rsplit("/", 1)[-1], "object": "customer"}
                    status = 200
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RecordingApi:
    """Stands in for ``StripeApi`` where a test must prove no call is made."""

    def __init__(self) -> None:
        self.calls_made: list[tuple[str, str]] = []
        self.calls = 0

    def pay_invoice(self, invoice_id: str, **_: Any) -> dict:
        self.calls_made.append(("pay_invoice", invoice_id))
        self.calls += 1
        return {"id": invoice_id, "status": "paid"}

    def confirm_payment_intent(self, payment_intent_id: str, **_: Any) -> dict:
        self.calls_made.append(("confirm_payment_intent", payment_intent_id))
        self.calls += 1
        return {"id": payment_intent_id, "status": "succeeded"}


def ls_request(api, method: str, path: str, params: dict | None = None) -> dict:
    """A raw localstripe call through the client under test (set-up only)."""
    return api._request(method, path, params)


def customer_with_card(api, pm_id_or_number: str) -> tuple[dict, dict]:
    """A localstripe customer whose default payment method is the given test card."""
    customer = ls_request(api, "post", "/v1/customers", {"email": "payer@example.test"})
    if pm_id_or_number.startswith("pm_"):
        pm = ls_request(api, "get", f"/v1/payment_methods/{pm_id_or_number}")
    else:
        pm = ls_request(
            api,
            "post",
            "/v1/payment_methods",
            {
                "type": "card",
                "card": {
                    "number": pm_id_or_number,
                    "exp_month": 12,
                    "exp_year": 2034,
                    "cvc": "123",
                },
            },
        )
    set_default_card(api, customer["id"], pm["id"])
    return customer, pm


def set_default_card(api, customer_id: str, pm_id: str) -> None:
    ls_request(api, "post", f"/v1/payment_methods/{pm_id}/attach", {"customer": customer_id})
    ls_request(
        api,
        "post",
        f"/v1/customers/{customer_id}",
        {"invoice_settings": {"default_payment_method": pm_id}},
    )


def failed_subscription_invoice(api, customer_id: str, plan_id: str) -> dict:
    """Subscribe with the customer's (failing) card; returns the open, unpaid invoice."""
    sub = ls_request(
        api,
        "post",
        "/v1/subscriptions",
        {"customer": customer_id, "items": {"0": {"plan": plan_id}}},
    )
    invoice_id = sub["latest_invoice"]
    return api.retrieve("invoices", invoice_id)
