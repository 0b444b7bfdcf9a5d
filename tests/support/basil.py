"""Objects of a basil account (API version 2025-03-31.basil and later), built from
Stripe's fixtures with realistic values.

fixtures3.json's ``invoice_payment`` holds placeholders (``"currency": "currency"``,
``"invoice": "invoice"``, ``"status": "status"``, a payment without its PaymentIntent);
these builders give the shapes Stripe documents
(https://docs.stripe.com/api/invoice-payment/object). A basil invoice names no
PaymentIntent or charge (and no subscription at the top: ``parent``), a basil
PaymentIntent or charge names no invoice.
"""

from __future__ import annotations

import copy
from typing import Any


def invoice_payment(
    fx: dict[str, Any],
    ip_id: str,
    *,
    invoice: str,
    payment_intent: str | None = None,
    charge: str | None = None,
    status: str = "open",
    amount: int = 1500,
    currency: str = "usd",
    is_default: bool = True,
    created: int = 1_700_000_000,
    paid_at: int | None = None,
    canceled_at: int | None = None,
) -> dict[str, Any]:
    """An InvoicePayment: ``open`` (amount_paid null), ``paid`` or ``canceled``."""
    obj = copy.deepcopy(fx["invoice_payment"])
    if payment_intent is not None:
        payment = {"type": "payment_intent", "payment_intent": payment_intent}
    else:
        payment = {"type": "charge", "charge": charge}
    obj.update(
        id=ip_id,
        invoice=invoice,
        payment=payment,
        status=status,
        amount_requested=amount,
        amount_paid=amount if status == "paid" else None,
        currency=currency,
        is_default=is_default,
        livemode=False,
        created=created,
        status_transitions={
            "paid_at": paid_at if status == "paid" else None,
            "canceled_at": canceled_at if status == "canceled" else None,
        },
    )
    return obj


def subscription_invoice(
    fx: dict[str, Any],
    invoice_id: str,
    *,
    customer: str,
    subscription: str,
    status: str = "open",
    amount: int = 1500,
    attempt_count: int = 0,
    created: int = 1_700_000_000,
) -> dict[str, Any]:
    """A subscription invoice as a basil webhook carries it: no ``payment_intent``,
    ``charge`` or ``subscription`` at the top, no ``payments`` (not included)."""
    obj = copy.deepcopy(fx["invoice"])
    for gone in ("payment_intent", "charge", "subscription", "payments", "paid"):
        obj.pop(gone, None)
    paid = status == "paid"
    obj.update(
        id=invoice_id,
        customer=customer,
        status=status,
        billing_reason="subscription_cycle",
        currency="usd",
        amount_due=amount,
        amount_paid=amount if paid else 0,
        amount_remaining=0 if paid else amount,
        attempt_count=attempt_count,
        livemode=False,
        created=created,
        next_payment_attempt=None if paid else created + 3 * 86400,
        parent={
            "type": "subscription_details",
            "subscription_details": {"subscription": subscription, "metadata": {}},
        },
        status_transitions={"paid_at": created + 600 if paid else None},
    )
    return obj


def payment_intent(
    fx: dict[str, Any],
    pi_id: str,
    *,
    customer: str,
    status: str,
    amount: int = 1500,
    decline_code: str | None = None,
    payment_method: str = "pm_basil",
    created: int = 1_700_000_000,
) -> dict[str, Any]:
    """A basil PaymentIntent (no ``invoice`` key); a decline fills ``last_payment_error``."""
    obj = copy.deepcopy(fx["payment_intent"])
    obj.pop("invoice", None)
    error = None
    if decline_code is not None:
        error = {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": decline_code,
            "message": "Your card was declined.",
            "payment_method": {"id": payment_method, "object": "payment_method"},
        }
    obj.update(
        id=pi_id,
        customer=customer,
        status=status,
        amount=amount,
        amount_received=amount if status == "succeeded" else 0,
        currency="usd",
        description="Subscription update",
        payment_method=payment_method if status == "succeeded" else None,
        last_payment_error=error,
        latest_charge=None,
        livemode=False,
        created=created,
    )
    return obj
