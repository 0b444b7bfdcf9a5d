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
from stripe_pipeline.process import sql_fields as q
from stripe_pipeline.process.extract_sql import SqlWrite, sql_twin
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


# --- SQL twins (``extract_sql``): the same rows, read by PostgreSQL from the payload ---


def _and(*conditions: str) -> str:
    return " AND ".join(f"({c})" for c in conditions if c != "true") or "true"


# payment_intent.*
_PI_ERROR = q.field("o", "last_payment_error")
_PI_CHARGES = q.list_data(q.field("o", "charges"))
_PI_LAST_CHARGE = f"({_PI_CHARGES.value} -> -1)"
_PI_METHOD = q.json_or(q.field("o", "payment_method"), q.field(_PI_ERROR, "payment_method"))
# ``card_fingerprint(payment_method) or card_fingerprint(last_charge)``, the two bound
# once in a subquery (inlined, the expression grows to tens of KB and slows planning)
_PI_FINGERPRINT = q.either(q.card_fingerprint_of("b_pm"), q.card_fingerprint_of("b_lc"))
_PI_BIND = f"FROM (SELECT {_PI_METHOD.value} AS b_pm, {_PI_LAST_CHARGE} AS b_lc OFFSET 0) AS b"

sql_twin(
    apply_payment_intent_event,
    SqlWrite(
        SPEC.name,
        key=q.object_id(),
        ok=q.Expr("true", _and(q.falsy_or(_PI_ERROR, "object"), _PI_CHARGES.ok, _PI_METHOD.ok)),
        values={
            "status": q.either(q.text(q.field("o", "status")), q.constant("'unknown'::text")),
            "failure_code": q.text(q.field(_PI_ERROR, "code")),
            "failure_message": q.text(q.field(_PI_ERROR, "message")),
            "decline_code": q.text(q.field(_PI_ERROR, "decline_code")),
            "charge_id": q.either(
                q.ref_id(q.field("o", "latest_charge")), q.ref_id(_PI_LAST_CHARGE)
            ),
            "customer_id": q.ref_id(q.field("o", "customer")),
            "invoice_id": q.ref_id(q.field("o", "invoice")),
            "payment_method_id": q.ref_id(_PI_METHOD.value),
            "card_fingerprint": q.Expr(
                f"(SELECT {_PI_FINGERPRINT.value} {_PI_BIND})",
                f"(SELECT {_PI_FINGERPRINT.ok} {_PI_BIND})",
            ),
            "amount_minor": q.required_integer(q.field("o", "amount")),
            "amount_received_minor": q.integer(q.field("o", "amount_received")),
            "amount_refunded_minor": q.integer(q.field(_PI_LAST_CHARGE, "amount_refunded")),
            "currency": q.currency(q.field("o", "currency")),
            "description": q.text(q.field("o", "description")),
            "stripe_created": q.integer(q.field("o", "created")),
            "livemode": q.livemode(),
        },
    ),
)

# charge.*
_CH_KEY = q.either(q.ref_id(q.field("o", "payment_intent")), q.object_id())
_CH_LEGACY = f"coalesce({_CH_KEY.value} = (o ->> 'id'), false)"
_CH_PAID = q.json_truth(q.field("o", "paid"))
_CH_STATUS = q.either(
    q.text(q.field("o", "status")),
    q.Expr(f"(CASE WHEN {_CH_PAID.value} THEN 'succeeded' ELSE 'failed' END)", _CH_PAID.ok),
)
_CH_OUTCOME = q.field("o", "outcome")
_CH_DECLINED = f"coalesce(({_CH_OUTCOME} -> 'type') = '\"issuer_declined\"'::jsonb, false)"
_CH_REASON = q.text(q.field(_CH_OUTCOME, "reason"))
_CH_AMOUNT = q.required_integer(q.field("o", "amount"))
_CH_AMOUNT_CAPTURED = q.integer(q.field("o", "amount_captured"))
_CH_CAPTURED = q.json_truth(q.field("o", "captured"))  # ``charge.get("captured", True)``
_CH_CAPTURED_VALUE = f"(CASE WHEN o ? 'captured' THEN {_CH_CAPTURED.value} ELSE true END)"
_CH_RECEIVED = q.Expr(
    f"(CASE WHEN o ? 'amount_captured' THEN {_CH_AMOUNT_CAPTURED.value} "
    f"WHEN {_CH_STATUS.value} IN ('succeeded', 'paid') AND {_CH_CAPTURED_VALUE} "
    f"THEN {_CH_AMOUNT.value} WHEN {_CH_STATUS.value} = 'failed' THEN 0 END)",
    f"(CASE WHEN o ? 'amount_captured' THEN {_CH_AMOUNT_CAPTURED.ok} "
    f"WHEN {_CH_STATUS.value} IN ('succeeded', 'paid') THEN {_CH_CAPTURED.ok} ELSE true END)",
)
_CH_SOURCE = q.field("o", "source")
_CH_SOURCE_CARD = (
    f"coalesce(jsonb_typeof({_CH_SOURCE}) = 'object' AND ({_CH_SOURCE} -> 'object') "
    f"IN ('\"card\"'::jsonb, '\"source\"'::jsonb), false)"
)
_CH_SOURCE_ID = q.ref_id(_CH_SOURCE)
_CH_DESCRIPTION = q.text(q.field("o", "description"))
_CH_CREATED = q.integer(q.field("o", "created"))
_CH_STATUS_MAP = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in _CHARGE_STATUS.items() if k != v)

# ``payment_from_charge`` of ``o``: the charge twin's row, reused by ``charge.refunded``
CHARGE_PAYMENT = SqlWrite(
    SPEC.name,
    key=_CH_KEY,
    # ``charge["id"]`` is read whatever the key: a non-empty string, or Python decides
    ok=q.Expr("true", _and(q.object_id().ok, q.falsy_or(_CH_OUTCOME, "object"))),
    values={
        "status": q.Expr(
            f"(CASE {_CH_STATUS.value} {_CH_STATUS_MAP} ELSE {_CH_STATUS.value} END)",
            _CH_STATUS.ok,
        ),
        "failure_code": q.text(q.field("o", "failure_code")),
        "failure_message": q.text(q.field("o", "failure_message")),
        "decline_code": q.only_if(_CH_DECLINED, _CH_REASON),
        "charge_id": q.constant("(o ->> 'id')"),
        "customer_id": q.ref_id(q.field("o", "customer")),
        "invoice_id": q.ref_id(q.field("o", "invoice")),
        "payment_method_id": q.either(
            q.ref_id(q.field("o", "payment_method")), q.only_if(_CH_SOURCE_CARD, _CH_SOURCE_ID)
        ),
        "card_fingerprint": q.card_fingerprint_of("o"),
        "amount_minor": _CH_AMOUNT,
        "amount_received_minor": _CH_RECEIVED,
        "amount_refunded_minor": q.integer(q.field("o", "amount_refunded")),
        "currency": q.currency(q.field("o", "currency")),
        "description": q.only_if(_CH_LEGACY, _CH_DESCRIPTION),
        "stripe_created": q.only_if(_CH_LEGACY, _CH_CREATED),
        "livemode": q.livemode(),
    },
)

sql_twin(apply_charge_event, CHARGE_PAYMENT)
