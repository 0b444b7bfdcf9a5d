"""Refunds (``stripe_refunds``) from refund events and from ``charge.refunded``.

https://docs.stripe.com/api/refunds/object

``charge.refunded`` carries the charge: its ``refunds`` list when the API version
includes it (before 2022-11-15, or expanded), each refund stored once; otherwise the
refunds are fetched through a :class:`~stripe_pipeline.catalog.model.RefundSource`,
or, without one, only the payment's refunded amount is updated and the refund rows
arrive with ``refund.created`` / ``refund.updated`` / ``refund.failed`` and
``charge.refund.updated``. Refunds of API versions before 2014 may have no id:
such a refund cannot be stored on its own (the payment's refunded amount still is).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stripe_pipeline.catalog import payments
from stripe_pipeline.catalog import sql_readers as q
from stripe_pipeline.catalog.model import (
    Column,
    EventContext,
    Fetch,
    Listing,
    PeerFailed,
    Policy,
    Reference,
    Resource,
    Route,
    RowWrite,
    SqlWrite,
)
from stripe_pipeline.catalog.payments import payment_from_charge
from stripe_pipeline.catalog.readers import (
    integer,
    list_data,
    livemode,
    object_id,
    ref_id,
    required_amount,
    required_currency,
    text,
)
from stripe_pipeline.db.models import StripeRefund

N, K = Policy.NEWEST, Policy.NEWEST_KNOWN
TABLE = StripeRefund.__tablename__

COLUMNS = (
    Column("payment_intent_id", K),
    Column("charge_id", K),
    Column("amount_minor", K, audit=True),
    Column("currency", K, audit=True),
    Column("status", N, audit=True),
    Column("reason", N, audit=True),
    Column("failure_reason", N, audit=True),
    Column("balance_transaction_id", K),
    Column("stripe_created", K),
    Column("livemode", N),
)


class RefundSourceFailed(PeerFailed):
    """Carries the refund source's own exception out of parsing, unchanged."""


def refund_row(
    refund: dict[str, Any], *, event_livemode: bool, charge: dict[str, Any] | None = None
) -> RowWrite:
    """A refund; its payment is its PaymentIntent, else its charge's, else the charge itself."""
    charge_ref = refund.get("charge") or charge
    charge_id = ref_id(charge_ref)
    payment_intent_id = (
        ref_id(refund.get("payment_intent"))
        or (ref_id(charge_ref.get("payment_intent")) if isinstance(charge_ref, dict) else None)
        or (ref_id(charge.get("payment_intent")) if charge else None)
        or charge_id
    )
    if payment_intent_id is None:
        raise ValueError("refund without a charge or PaymentIntent")
    values = {
        "payment_intent_id": payment_intent_id,
        "charge_id": charge_id,
        "amount_minor": required_amount(refund, "amount"),
        "currency": required_currency(refund),
        # refunds of API versions before 2016-07-06 had no status: they had succeeded
        "status": text(refund.get("status")) or "succeeded",
        "reason": text(refund.get("reason")),
        "failure_reason": text(refund.get("failure_reason")),
        "balance_transaction_id": ref_id(refund.get("balance_transaction")),
        "stripe_created": integer(refund.get("created")),
        "livemode": livemode(refund) if "livemode" in refund else event_livemode,
    }
    return RowWrite(TABLE, object_id(refund), values)


def apply_refund_event(ctx: EventContext) -> Iterable[RowWrite]:
    """refund.created / refund.updated / refund.failed and charge.refund.updated."""
    return [refund_row(ctx.obj, event_livemode=ctx.livemode)]


def apply_charge_refunded(ctx: EventContext) -> Iterable[RowWrite]:
    """The payment's refunded amount, plus every refund of the charge, each once."""
    charge = ctx.obj
    writes = [payment_from_charge(charge, livemode=ctx.livemode)]
    listed = charge.get("refunds")
    refunds: list[Any] = list_data(listed)
    complete = isinstance(listed, dict | list) and not (
        isinstance(listed, dict) and listed.get("has_more")
    )
    if not complete:
        if ctx.refund_source is not None:
            try:
                refunds = ctx.refund_source.list_charge_refunds(object_id(charge))
            except Exception as exc:
                raise RefundSourceFailed(exc) from exc
        elif listed is None:
            ctx.notes.append("refunds not expanded: refund rows come from refund.* events")
        else:
            ctx.notes.append("refund list truncated (has_more): the rest from refund.* events")
    seen: set[str] = set()
    for refund in refunds:
        if not isinstance(refund, dict):
            # an unexpanded id says nothing storable (amount, status)
            continue
        if not refund.get("id"):
            ctx.notes.append("a refund without an id (API before 2014) is not stored on its own")
            continue
        row = refund_row(refund, event_livemode=ctx.livemode, charge=charge)
        if row.key not in seen:
            seen.add(row.key)
            writes.append(row)
    return writes


# --- SQL twins (``extract_sql``): the same rows, read by PostgreSQL from the payload ---


def _refund_values(refund: str, charge: str | None) -> dict[str, q.Expr]:
    """``refund_row`` of the refund at ``refund``, with the event's charge at ``charge``."""
    # ``refund.get("charge") or charge``
    charge_ref = q.json_or(q.field(refund, "charge"), charge or "NULL::jsonb")
    charge_id = q.ref_id(charge_ref.value)
    charge_id = q.Expr(charge_id.value, q.all_ok(charge_ref, charge_id))
    payment_intent = q.either(
        q.ref_id(q.field(refund, "payment_intent")),
        q.ref_id(q.field(charge_ref.value, "payment_intent")),  # NULL unless an object
    )
    if charge is not None:
        payment_intent = q.either(payment_intent, q.ref_id(q.field(charge, "payment_intent")))
    payment_intent = q.either(payment_intent, charge_id)
    found = q.currency(q.field(refund, "currency"))
    livemode, event_livemode = q.boolean(q.field(refund, "livemode")), q.livemode()
    has_livemode = f"({refund} ? 'livemode')"
    return {
        "payment_intent_id": q.Expr(
            payment_intent.value,
            f"({q.all_ok(payment_intent)}) AND {payment_intent.value} IS NOT NULL",
        ),
        "charge_id": charge_id,
        "amount_minor": q.required_amount(q.field(refund, "amount")),
        "currency": q.Expr(found.value, f"({q.all_ok(found)}) AND {found.value} IS NOT NULL"),
        "status": q.either(q.text(q.field(refund, "status")), q.constant("'succeeded'::text")),
        "reason": q.text(q.field(refund, "reason")),
        "failure_reason": q.text(q.field(refund, "failure_reason")),
        "balance_transaction_id": q.ref_id(q.field(refund, "balance_transaction")),
        "stripe_created": q.integer(q.field(refund, "created")),
        # ``livemode(refund)`` when the refund says, else the event's
        "livemode": q.Expr(
            f"(CASE WHEN {has_livemode} THEN {livemode.value} IS TRUE "
            f"ELSE {event_livemode.value} END)",
            f"(CASE WHEN {has_livemode} THEN {livemode.ok} ELSE {event_livemode.ok} END)",
        ),
    }


REFUND_TWIN = SqlWrite(TABLE, key=q.object_id(), values=_refund_values("o", None))

_LISTED = q.field("o", "refunds")
_HAS_MORE = q.json_truth(q.field(_LISTED, "has_more"))
# ``list_data``: a plain list, or a list object's data (falsy: empty); the rest raises
_REFUNDS = q.list_data(_LISTED)
# a refund listed twice is stored once (the first): Python decides those
_REFUNDS_UNIQUE = (
    f"NOT EXISTS (SELECT 1 FROM jsonb_array_elements({_REFUNDS.value}) AS listed(el) "
    "WHERE jsonb_typeof(el) = 'object' GROUP BY el -> 'id' HAVING count(*) > 1)"
)
# no list, or a truncated one: the handler asks the refund source or adds a note; so
# does a listed refund without an id (skipped with a note)
_REFUNDS_DEFER = (
    f"(coalesce(jsonb_typeof({_LISTED}) NOT IN ('object', 'array'), true) OR "
    f"(CASE WHEN jsonb_typeof({_LISTED}) = 'object' "
    f"THEN NOT ({_HAS_MORE.ok}) OR {_HAS_MORE.value} ELSE false END) OR "
    f"EXISTS (SELECT 1 FROM jsonb_array_elements({_REFUNDS.value}) AS listed(el) "
    f"WHERE jsonb_typeof(el) = 'object' AND NOT {q.json_truth(q.field('el', 'id')).value}))"
)

CHARGE_REFUNDED_TWIN = (
    payments.CHARGE_PAYMENT,
    SqlWrite(
        TABLE,
        key=q.object_id("item"),
        values=_refund_values("item", "o"),
        ok=q.Expr("true", f"({q.object_id().ok}) AND {_REFUNDS.ok} AND {_REFUNDS_UNIQUE}"),
        items=_REFUNDS.value,
        when="jsonb_typeof(item) = 'object'",
        defer=_REFUNDS_DEFER,
    ),
)

RESOURCE = Resource(
    object_type="refund",
    table=StripeRefund.__table__,
    key="stripe_refund_id",
    columns=COLUMNS,
    routes=(
        Route(
            ("refund.*", "charge.refund.updated"),
            apply_refund_event,
            frozenset({"refund"}),
            (REFUND_TWIN,),
        ),
        Route(
            ("charge.refunded",),
            apply_charge_refunded,
            frozenset({"charge"}),
            CHARGE_REFUNDED_TWIN,
        ),
    ),
    listings=(Listing("refunds", "/v1/refunds", read_as="refund.updated"),),
    fetch=(Fetch("/v1/refunds/{id}", "refund.updated"),),
    docs="https://docs.stripe.com/api/refunds/object",
    references=(Reference("balance_transaction", lambda row: (row["balance_transaction_id"],)),),
)
