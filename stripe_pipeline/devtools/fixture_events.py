"""Signed webhook events built from Stripe's own example objects.

localstripe emits 2017-era shapes and no ``charge.*`` or dispute events at all, so
the demo builds those from Stripe's fixtures (today's shapes, see
``data/stripe_fixtures.json``), points them at objects that exist in localstripe,
signs them exactly as Stripe does and POSTs them to the receiver.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
from functools import cache
from importlib import resources
from typing import Any

API_VERSION = "2025-03-31.basil"
DAY = 86_400


@cache
def _fixtures() -> dict[str, dict[str, Any]]:
    text = resources.files("stripe_pipeline.devtools").joinpath("data/stripe_fixtures.json")
    return json.loads(text.read_text())["resources"]


def fixture(resource: str, **overrides: Any) -> dict[str, Any]:
    """A fresh copy of Stripe's example ``resource`` with top-level fields replaced."""
    obj = copy.deepcopy(_fixtures()[resource])
    obj.update(overrides)
    return obj


def new_id(prefix: str) -> str:
    return f"{prefix}_demo{secrets.token_hex(8)}"


def event(
    event_type: str,
    obj: dict[str, Any],
    *,
    created: int | None = None,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Wrap ``obj`` in an event envelope as Stripe sends it."""
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created or int(time.time()),
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header: HMAC-SHA256 over ``"<t>.<body>"``."""
    timestamp = timestamp or int(time.time())
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def deliver(url: str, secret: str, evt: dict[str, Any], timeout: float = 10.0) -> int:
    """POST one signed event to the receiver; returns the HTTP status."""
    payload = json.dumps(evt, separators=(",", ":")).encode()
    request = urllib.request.Request(
        url,
        data=payload,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign(payload, secret),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# -- the objects of each story, shaped like today's API -------------------------------


def dispute(
    charge: dict[str, Any], status: str, *, dispute_id: str, due_in_days: float, reason: str
) -> dict[str, Any]:
    """A dispute on a real localstripe charge; ``due_by`` is 0 once no response is allowed."""
    allows_response = status in ("needs_response", "warning_needs_response")
    return fixture(
        "dispute",
        id=dispute_id,
        amount=charge["amount"],
        currency=charge["currency"],
        charge=charge["id"],
        payment_intent=charge.get("payment_intent"),
        created=int(time.time()),
        status=status,
        reason=reason,
        is_charge_refundable=allows_response,
        evidence_details={
            "due_by": int(time.time() + due_in_days * DAY) if allows_response else 0,
            "has_evidence": status not in ("needs_response", "warning_needs_response"),
            "past_due": False,
            "submission_count": 0 if allows_response else 1,
            "enhanced_eligibility": {},
        },
    )


def refunded_charge(
    charge: dict[str, Any], refunds: list[dict[str, Any]], *, include_refunds: bool
) -> dict[str, Any]:
    """A ``charge.refunded`` object; since 2022-11-15 ``refunds`` is absent unless expanded."""
    amount_refunded = sum(int(r["amount"]) for r in refunds)
    obj = fixture(
        "charge",
        id=charge["id"],
        amount=charge["amount"],
        amount_captured=charge["amount"],
        amount_refunded=amount_refunded,
        currency=charge["currency"],
        customer=charge.get("customer"),
        payment_intent=charge.get("payment_intent"),
        payment_method=charge.get("payment_method"),
        created=charge.get("created") or int(time.time()),
        refunded=amount_refunded >= charge["amount"],
        captured=True,
        paid=True,
        status="succeeded",
    )
    if include_refunds:
        obj["refunds"] = {
            "object": "list",
            "data": [
                fixture(
                    "refund",
                    id=r["id"],
                    amount=r["amount"],
                    currency=charge["currency"],
                    charge=charge["id"],
                    payment_intent=charge.get("payment_intent"),
                    status=r.get("status", "succeeded"),
                    created=r.get("created") or int(time.time()),
                    reason=r.get("reason"),
                )
                for r in refunds
            ],
            "has_more": False,
            "url": f"/v1/charges/{charge['id']}/refunds",
        }
    else:
        obj.pop("refunds", None)
    return obj


def trialing_subscription(subscription: dict[str, Any]) -> dict[str, Any]:
    """A subscription as the API answered it, put three days before its trial ends.

    Built from the real object (its plan, items and customer), not the fixture, so the
    prices and items it names exist in the Stripe the pipeline reconciles against; the
    period runs to the trial's end, at the top (old shapes) and on the items (2025+).
    """
    now = int(time.time())
    sub = copy.deepcopy(subscription)
    start = int(sub.get("created") or now)
    sub.update(status="trialing", trial_start=start, trial_end=now + 3 * DAY)
    if "current_period_end" in sub:
        sub["current_period_end"] = now + 3 * DAY
    for item in (sub.get("items") or {}).get("data") or []:
        if "current_period_end" in item:
            item["current_period_end"] = now + 3 * DAY
    return sub


def uncollectible_invoice(customer_id: str, amount: int, subscription_id: str | None):
    """An invoice given up on after dunning (2025+ shape: subscription under ``parent``)."""
    now = int(time.time())
    invoice = fixture(
        "invoice",
        id=new_id("in"),
        customer=customer_id,
        status="uncollectible",
        currency="usd",
        amount_due=amount,
        amount_remaining=amount,
        amount_paid=0,
        subtotal=amount,
        total=amount,
        attempt_count=4,
        attempted=True,
        billing_reason="subscription_cycle",
        created=now - 21 * DAY,
        period_start=now - 21 * DAY,
        period_end=now - 21 * DAY,
    )
    invoice["parent"] = (
        {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": subscription_id},
        }
        if subscription_id
        else None
    )
    invoice.pop("subscription", None)
    invoice["status_transitions"] = {
        "finalized_at": now - 21 * DAY,
        "marked_uncollectible_at": now,
        "paid_at": None,
        "voided_at": None,
    }
    return invoice
