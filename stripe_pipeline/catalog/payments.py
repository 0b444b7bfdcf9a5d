"""Payments (``stripe_payments``) from PaymentIntent and Charge events.

https://docs.stripe.com/api/payment_intents/object and
https://docs.stripe.com/api/charges/object

One row per PaymentIntent, keyed by its id, or by the charge id for a legacy charge
made without a PaymentIntent. Both event families write the same row in the
PaymentIntent's vocabulary: the newest event decides status and failure fields, ids
and amounts are "newest known" (neither family erases what the other said), the card
fingerprint follows the latest charge, refunded amounts only grow. In reconciliation
the PaymentIntent listing owns the payment; a PaymentIntent's listed charge (its
successful one) only states which charge it is, its refunds and its card (a legacy
charge is its own payment and owns it).

An authorized, uncaptured charge has ``status: succeeded`` in Stripe: its payment is
``requires_capture``, not succeeded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stripe_pipeline.catalog import sql_readers as q
from stripe_pipeline.catalog.invoice_payments import looked_up_invoice_payments
from stripe_pipeline.catalog.model import (
    Column,
    EventContext,
    Fetch,
    Listing,
    Policy,
    Reference,
    Resource,
    Route,
    RowWrite,
    SqlWrite,
    event_fact,
)
from stripe_pipeline.catalog.readers import (
    amount,
    card_fingerprint,
    currency,
    dig,
    integer,
    list_data,
    object_id,
    ref_id,
    required_amount,
    text,
)
from stripe_pipeline.db.models import StripePayment

N, K, G, F = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.GREATEST, Policy.FOLLOWS
TABLE = StripePayment.__tablename__

COLUMNS = (
    Column("status", N, audit=True),
    Column("failure_code", N, audit=True),
    Column("failure_message", N),
    Column("decline_code", N, audit=True),
    Column("charge_id", K, audit=True),
    Column("customer_id", K, audit=True),
    Column("invoice_id", K, audit=True),
    Column("payment_method_id", K, audit=True),
    # the card of the latest charge, whichever event about that charge arrives last
    Column("card_fingerprint", F, audit=True),
    Column("amount_minor", K, audit=True),
    Column("amount_received_minor", K, audit=True),
    Column("amount_refunded_minor", G, audit=True),
    Column("currency", K, audit=True),
    Column("description", K, personal=True),
    # the latest charge's (its fee and net live there), from charge events
    event_fact(
        "balance_transaction_id",
        K,
        "from charge events: a PaymentIntent never names it, and a payment whose charge "
        "sent no event is tied to its transaction by the transaction's source",
    ),
    Column("stripe_created", K),
    Column("livemode", N),
)


def payment_key_of_charge(charge: dict[str, Any]) -> str:
    """The payments key of a charge: its PaymentIntent, or itself when it has none."""
    return ref_id(charge.get("payment_intent")) or object_id(charge)


def latest_charge(charges: list[Any]) -> Any:
    """The newest charge of an old-API PaymentIntent's embedded list.

    Stripe lists newest first, localstripe oldest first: the creation time decides.
    """
    if len(charges) <= 1:
        return charges[0] if charges else None
    found = None
    for charge in charges:
        if isinstance(charge, dict) and (
            found is None or (integer(charge.get("created")) or 0) > (found.get("created") or 0)
        ):
            found = charge
    return found


def payment_from_payment_intent(pi: dict[str, Any], *, livemode: bool) -> RowWrite:
    """A PaymentIntent of any API version (old: embedded ``charges``; new: ``latest_charge``)."""
    error = pi.get("last_payment_error") or {}
    last_charge = latest_charge(list_data(pi.get("charges")))
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
        "amount_minor": required_amount(pi, "amount"),
        "amount_received_minor": amount(pi.get("amount_received")),
        "amount_refunded_minor": amount(dig(last_charge, "amount_refunded")),
        "currency": currency(pi.get("currency")),
        "description": text(pi.get("description")),
        "balance_transaction_id": None,
        "stripe_created": integer(pi.get("created")),
        "livemode": livemode,
    }
    return RowWrite(TABLE, object_id(pi), values)


def charge_status(charge: dict[str, Any], *, legacy: bool) -> str:
    """A charge's state in the payment vocabulary.

    A PaymentIntent's charge speaks the PaymentIntent's statuses (a failed charge
    leaves its PaymentIntent ``requires_payment_method``); a legacy charge keeps
    ``failed``. Before ``status`` existed, ``paid`` said it.
    """
    status = text(charge.get("status")) or ("succeeded" if charge.get("paid") else "failed")
    if status in ("succeeded", "paid"):
        return "succeeded" if charge.get("captured", True) is not False else "requires_capture"
    if status == "pending":
        return "processing"
    if status == "failed" and not legacy:
        return "requires_payment_method"
    return status


def payment_from_charge(charge: dict[str, Any], *, livemode: bool) -> RowWrite:
    """A charge as a payment: the legacy charge's own row, or facts about its PaymentIntent's."""
    key = payment_key_of_charge(charge)
    legacy = key == charge["id"]
    status = charge_status(charge, legacy=legacy)
    outcome = charge.get("outcome") or {}
    charged = required_amount(charge, "amount")
    if "amount_captured" in charge:
        received = amount(charge["amount_captured"])
    elif status == "succeeded":
        received = charged  # API versions before amount_captured existed
    elif status in ("failed", "requires_payment_method", "requires_capture"):
        received = 0
    else:
        received = None
    values = {
        "status": status,
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
        "amount_minor": charged,
        "amount_received_minor": received,
        "amount_refunded_minor": amount(charge.get("amount_refunded")),
        "currency": currency(charge.get("currency")),
        "description": text(charge.get("description")) if legacy else None,
        "balance_transaction_id": ref_id(charge.get("balance_transaction")),
        "stripe_created": integer(charge.get("created")) if legacy else None,
        "livemode": livemode,
    }
    return RowWrite(TABLE, key, values)


def _legacy_card_id(charge: dict[str, Any]) -> str | None:
    source = charge.get("source")
    if isinstance(source, dict) and source.get("object") in ("card", "source"):
        return ref_id(source)
    return None


def apply_payment_intent_event(ctx: EventContext) -> Iterable[RowWrite]:
    """succeeded, payment_failed, requires_action, canceled, created, processing, ...

    A basil ``payment_failed`` names no invoice: its invoice payments are looked up."""
    row = payment_from_payment_intent(ctx.obj, livemode=ctx.livemode)
    links = looked_up_invoice_payments(ctx, row.key, row.values["customer_id"])
    return [row, *links]


def apply_charge_event(ctx: EventContext) -> Iterable[RowWrite]:
    """A charge's facts about its payment; a basil ``charge.failed`` names no invoice,
    so its PaymentIntent's invoice payments are looked up."""
    row = payment_from_charge(ctx.obj, livemode=ctx.livemode)
    payment_intent = ref_id(ctx.obj.get("payment_intent"))
    return [row, *looked_up_invoice_payments(ctx, payment_intent, row.values["customer_id"])]


def charge_owns_its_payment(charge: dict[str, Any]) -> bool:
    """A legacy charge is its payment; a PaymentIntent's charge only refines it."""
    return not charge.get("payment_intent")


def charge_states_its_payment(charge: dict[str, Any]) -> bool:
    """A listed charge says something about its payment unless it is a failed attempt
    of a PaymentIntent that went on with another charge."""
    if not charge.get("payment_intent"):
        return True
    return charge.get("status") == "succeeded" or charge.get("paid") is True


# --- SQL twins (``extract_sql``): the same rows, read by PostgreSQL from the payload ---


def _and(*conditions: str) -> str:
    return " AND ".join(f"({c})" for c in conditions if c != "true") or "true"


# payment_intent.*
_PI_ERROR = q.field("o", "last_payment_error")
_PI_CHARGES = q.list_data(q.field("o", "charges"))
# ``latest_charge``: one charge is read here; several (old API versions) go to Python
_PI_LAST_CHARGE = f"({_PI_CHARGES.value} -> 0)"
_PI_ONE_CHARGE = f"coalesce(jsonb_array_length({_PI_CHARGES.value}) <= 1, true)"
_PI_METHOD = q.json_or(q.field("o", "payment_method"), q.field(_PI_ERROR, "payment_method"))
# ``card_fingerprint(payment_method) or card_fingerprint(last_charge)``, the two bound
# once in a subquery (inlined, the expression grows to tens of KB and slows planning)
_PI_FINGERPRINT = q.either(q.card_fingerprint_of("b_pm"), q.card_fingerprint_of("b_lc"))
_PI_BIND = f"FROM (SELECT {_PI_METHOD.value} AS b_pm, {_PI_LAST_CHARGE} AS b_lc OFFSET 0) AS b"


def _basil_failure(event_type: str) -> str:
    """A failure event without ``invoice``: the handler looks its invoice payments up
    (``looked_up_invoice_payments``) or notes that it cannot; Python's."""
    return f"(e.event_type = '{event_type}' AND NOT o ? 'invoice')"


PAYMENT_INTENT_TWIN = SqlWrite(
    TABLE,
    key=q.object_id(),
    defer=_basil_failure("payment_intent.payment_failed"),
    ok=q.Expr(
        "true",
        _and(q.falsy_or(_PI_ERROR, "object"), _PI_CHARGES.ok, _PI_ONE_CHARGE, _PI_METHOD.ok),
    ),
    values={
        "status": q.either(q.text(q.field("o", "status")), q.constant("'unknown'::text")),
        "failure_code": q.text(q.field(_PI_ERROR, "code")),
        "failure_message": q.text(q.field(_PI_ERROR, "message")),
        "decline_code": q.text(q.field(_PI_ERROR, "decline_code")),
        "charge_id": q.either(q.ref_id(q.field("o", "latest_charge")), q.ref_id(_PI_LAST_CHARGE)),
        "customer_id": q.ref_id(q.field("o", "customer")),
        "invoice_id": q.ref_id(q.field("o", "invoice")),
        "payment_method_id": q.ref_id(_PI_METHOD.value),
        "card_fingerprint": q.Expr(
            f"(SELECT {_PI_FINGERPRINT.value} {_PI_BIND})",
            f"(SELECT {_PI_FINGERPRINT.ok} {_PI_BIND})",
        ),
        "amount_minor": q.required_amount(q.field("o", "amount")),
        "amount_received_minor": q.amount(q.field("o", "amount_received")),
        "amount_refunded_minor": q.amount(q.field(_PI_LAST_CHARGE, "amount_refunded")),
        "currency": q.currency(q.field("o", "currency")),
        "description": q.text(q.field("o", "description")),
        "balance_transaction_id": q.constant("NULL::text"),
        "stripe_created": q.integer(q.field("o", "created")),
        "livemode": q.livemode(),
    },
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
_CH_AMOUNT = q.required_amount(q.field("o", "amount"))
_CH_AMOUNT_CAPTURED = q.amount(q.field("o", "amount_captured"))
_CH_CAPTURED_FALSE = "coalesce((o -> 'captured') = 'false'::jsonb, false)"
# ``charge_status``
_CH_MAPPED = (
    f"(CASE WHEN {_CH_STATUS.value} IN ('succeeded', 'paid') THEN "
    f"(CASE WHEN {_CH_CAPTURED_FALSE} THEN 'requires_capture' ELSE 'succeeded' END) "
    f"WHEN {_CH_STATUS.value} = 'pending' THEN 'processing' "
    f"WHEN {_CH_STATUS.value} = 'failed' AND NOT {_CH_LEGACY} THEN 'requires_payment_method' "
    f"ELSE {_CH_STATUS.value} END)"
)
_CH_RECEIVED = q.Expr(
    f"(CASE WHEN o ? 'amount_captured' THEN {_CH_AMOUNT_CAPTURED.value} "
    f"WHEN {_CH_MAPPED} = 'succeeded' THEN {_CH_AMOUNT.value} "
    f"WHEN {_CH_MAPPED} IN ('failed', 'requires_payment_method', 'requires_capture') THEN 0 END)",
    f"(CASE WHEN o ? 'amount_captured' THEN {_CH_AMOUNT_CAPTURED.ok} ELSE true END)",
)
_CH_SOURCE = q.field("o", "source")
_CH_SOURCE_CARD = (
    f"coalesce(jsonb_typeof({_CH_SOURCE}) = 'object' AND ({_CH_SOURCE} -> 'object') "
    f"IN ('\"card\"'::jsonb, '\"source\"'::jsonb), false)"
)
_CH_SOURCE_ID = q.ref_id(_CH_SOURCE)
_CH_DESCRIPTION = q.text(q.field("o", "description"))
_CH_CREATED = q.integer(q.field("o", "created"))

# ``payment_from_charge`` of ``o``: the charge twin's row, reused by ``charge.refunded``
CHARGE_PAYMENT = SqlWrite(
    TABLE,
    key=_CH_KEY,
    defer=_basil_failure("charge.failed"),
    # ``charge["id"]`` is read whatever the key: a non-empty string, or Python decides
    ok=q.Expr("true", _and(q.object_id().ok, q.falsy_or(_CH_OUTCOME, "object"))),
    values={
        "status": q.Expr(_CH_MAPPED, _CH_STATUS.ok),
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
        "amount_refunded_minor": q.amount(q.field("o", "amount_refunded")),
        "currency": q.currency(q.field("o", "currency")),
        "description": q.only_if(_CH_LEGACY, _CH_DESCRIPTION),
        "balance_transaction_id": q.ref_id(q.field("o", "balance_transaction")),
        "stripe_created": q.only_if(_CH_LEGACY, _CH_CREATED),
        "livemode": q.livemode(),
    },
)

RESOURCE = Resource(
    object_type="payment",
    table=StripePayment.__table__,
    key="payment_intent_id",
    columns=COLUMNS,
    routes=(
        Route(
            ("payment_intent.*",),
            apply_payment_intent_event,
            frozenset({"payment_intent"}),
            (PAYMENT_INTENT_TWIN,),
        ),
        Route(
            (
                "charge.succeeded",
                "charge.failed",
                "charge.pending",
                "charge.captured",
                "charge.expired",
                "charge.updated",
            ),
            apply_charge_event,
            frozenset({"charge"}),
            (CHARGE_PAYMENT,),
        ),
    ),
    listings=(
        Listing("payment_intents", "/v1/payment_intents", read_as="payment_intent.updated"),
        # a PaymentIntent's charge only refines its payment (which charge, its refunds
        # and card: a PaymentIntent that does not name its charge is completed, as a
        # charge event completes it); a legacy charge is the payment
        Listing(
            "charges",
            "/v1/charges",
            read_as="charge.updated",
            states=charge_states_its_payment,
            owns=charge_owns_its_payment,
            refines=("charge_id", "amount_refunded_minor", "card_fingerprint"),
        ),
    ),
    fetch=(
        Fetch("/v1/payment_intents/{id}", "payment_intent.updated"),
        Fetch("/v1/charges/{id}", "charge.updated", prefix="ch_"),
        Fetch("/v1/charges/{id}", "charge.updated", prefix="py_"),
    ),
    docs="https://docs.stripe.com/api/payment_intents/object",
    # the charge's fee and net: fetched when the charge event did not expand it
    references=(Reference("balance_transaction", lambda row: (row["balance_transaction_id"],)),),
    insert_defaults={"amount_refunded_minor": 0},
    follows={"card_fingerprint": "charge_id"},
)
