"""Payments (``stripe_payments``) from PaymentIntent and Charge events.

https://docs.stripe.com/api/payment_intents/object and
https://docs.stripe.com/api/charges/object

One row per PaymentIntent, keyed by its id, or by the charge id for a legacy charge
made without a PaymentIntent. Both event families write the same row: the newest
event decides status and failure fields, while ids, amounts and the card
ids and amounts are "newest known" (a charge event of today's API does not know the
invoice; neither family erases what the other said). The card fingerprint follows
the latest charge (PaymentIntent events do not carry it). Refunded amounts only grow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stripe_pipeline.db.models import StripePayment
from stripe_pipeline.process.registry import EventContext, RowWrite, handles
from stripe_pipeline.process.resources.fields import (
    card_fingerprint,
    currency,
    dig,
    integer,
    list_data,
    object_id,
    ref_id,
    required_integer,
    text,
)
from stripe_pipeline.process.upsert import Policy, TableSpec

N, K, G = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.GREATEST

SPEC = TableSpec(
    table=StripePayment.__table__,
    key="payment_intent_id",
    policies={
        "status": N,
        "failure_code": N,
        "failure_message": N,
        "decline_code": N,
        "charge_id": K,
        "customer_id": K,
        "invoice_id": K,
        "payment_method_id": K,
        "card_fingerprint": Policy.FOLLOWS,
        "amount_minor": K,
        "amount_received_minor": K,
        "amount_refunded_minor": G,
        "currency": K,
        "description": K,
        "stripe_created": K,
        "livemode": N,
    },
    object_type="payment",
    audit_fields=(
        "status",
        "amount_minor",
        "amount_received_minor",
        "amount_refunded_minor",
        "currency",
        "failure_code",
        "decline_code",
        "charge_id",
        "customer_id",
        "invoice_id",
        "payment_method_id",
        "card_fingerprint",
    ),
    insert_defaults={"amount_refunded_minor": 0},
    # the card of the latest charge, whichever event about that charge arrives last
    follows={"card_fingerprint": "charge_id"},
)

# A charge's status in the payment vocabulary (PaymentIntent statuses plus "failed").
_CHARGE_STATUS = {"succeeded": "succeeded", "paid": "succeeded", "pending": "processing"}


def payment_key_of_charge(charge: dict[str, Any]) -> str:
    """The payments key of a charge: its PaymentIntent, or itself when it has none."""
    return ref_id(charge.get("payment_intent")) or object_id(charge)


def payment_from_payment_intent(pi: dict[str, Any], *, livemode: bool) -> RowWrite:
    """A PaymentIntent of any API version (old: embedded ``charges``; new: ``latest_charge``)."""
    error = pi.get("last_payment_error") or {}
    charges = list_data(pi.get("charges"))
    last_charge = charges[-1] if charges else None
    payment_method = pi.get("payment_method") or error.get("payment_method")
    values = {
        "status": text(pi.get("status")) or "unknown",
        "failure_code": text(error.get("code")),
        "failure_message": text(error.get("message")),
        "decline_code": text(error.get("decline_code")),
        "charge_id": ref_id(pi.get("latest_charge")) or ref_id(last_charge),
        "customer_id": ref_id(pi.get("customer")),
        "invoice_id": ref_id(pi.get("invoice")),
        "payment_method_id": ref_id(payment_method),
        "card_fingerprint": card_fingerprint(payment_method) or card_fingerprint(last_charge),
        "amount_minor": required_integer(pi, "amount"),
        "amount_received_minor": integer(pi.get("amount_received")),
        "amount_refunded_minor": integer(dig(last_charge, "amount_refunded")),
        "currency": currency(pi.get("currency")),
        "description": text(pi.get("description")),
        "stripe_created": integer(pi.get("created")),
        "livemode": livemode,
    }
    return RowWrite(SPEC.name, object_id(pi), values)


def payment_from_charge(charge: dict[str, Any], *, livemode: bool) -> RowWrite:
    """A charge as a payment; PaymentIntent-owned facts (creation time, text) stay unknown."""
    key = payment_key_of_charge(charge)
    legacy = key == charge["id"]
    status = text(charge.get("status")) or ("succeeded" if charge.get("paid") else "failed")
    outcome = charge.get("outcome") or {}
    amount = required_integer(charge, "amount")
    if "amount_captured" in charge:
        received = integer(charge["amount_captured"])
    elif status in ("succeeded", "paid") and charge.get("captured", True):
        received = amount  # API versions before amount_captured existed
    elif status == "failed":
        received = 0
    else:
        received = None
    values = {
        "status": _CHARGE_STATUS.get(status, status),
        "failure_code": text(charge.get("failure_code")),
        "failure_message": text(charge.get("failure_message")),
        "decline_code": text(outcome.get("reason"))
        if outcome.get("type") == "issuer_declined"
        else None,
        "charge_id": charge["id"],
        "customer_id": ref_id(charge.get("customer")),
        "invoice_id": ref_id(charge.get("invoice")),
        "payment_method_id": ref_id(charge.get("payment_method")) or _legacy_card_id(charge),
        "card_fingerprint": card_fingerprint(charge),
        "amount_minor": amount,
        "amount_received_minor": received,
        "amount_refunded_minor": integer(charge.get("amount_refunded")),
        "currency": currency(charge.get("currency")),
        "description": text(charge.get("description")) if legacy else None,
        "stripe_created": integer(charge.get("created")) if legacy else None,
        "livemode": livemode,
    }
    return RowWrite(SPEC.name, key, values)


def _legacy_card_id(charge: dict[str, Any]) -> str | None:
    source = charge.get("source")
    if isinstance(source, dict) and source.get("object") in ("card", "source"):
        return ref_id(source)
    return None


@handles("payment_intent.*")
def apply_payment_intent_event(ctx: EventContext) -> Iterable[RowWrite]:
    """succeeded, payment_failed, requires_action, canceled, created, processing, ..."""
    return [payment_from_payment_intent(ctx.obj, livemode=ctx.livemode)]


@handles(
    "charge.succeeded",
    "charge.failed",
    "charge.pending",
    "charge.captured",
    "charge.expired",
    "charge.updated",
)
def apply_charge_event(ctx: EventContext) -> Iterable[RowWrite]:
    return [payment_from_charge(ctx.obj, livemode=ctx.livemode)]
