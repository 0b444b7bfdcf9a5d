"""Disputes (``stripe_disputes``) through their whole lifecycle.

https://docs.stripe.com/api/disputes/object

created -> updated (evidence) -> funds_withdrawn -> closed (won / lost / warning_closed),
with funds_reinstated after a win. ``evidence_details.due_by`` is a Unix time, ``0``
when no response is allowed (stored as NULL). Withdrawn and reinstated amounts come
from the dispute's balance transactions when present (in the dispute's currency),
else from the dispute amount on the funds_* events; they only grow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stripe_pipeline.catalog import sql_readers as q
from stripe_pipeline.catalog.model import (
    Column,
    EventContext,
    Fetch,
    Listing,
    Policy,
    Resource,
    Route,
    RowWrite,
    SqlWrite,
    event_fact,
)
from stripe_pipeline.catalog.readers import (
    boolean,
    currency,
    dig,
    integer,
    ref_id,
    required_amount,
    required_currency,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripeDispute

N, K, G = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.GREATEST
TABLE = StripeDispute.__tablename__

COLUMNS = (
    Column("payment_intent_id", K),
    Column("charge_id", K),
    Column("amount_minor", N, audit=True),
    Column("currency", K, audit=True),
    Column("status", N, audit=True),
    Column("reason", N, audit=True),
    # what the merchant submitted: names, emails, addresses, free text
    Column("evidence", N, personal=True),
    Column("due_by", N, audit=True),
    Column("has_evidence", N, audit=True),
    Column("is_charge_refundable", N),
    Column("funds_withdrawn_minor", G, audit=True),
    Column("funds_reinstated_minor", G, audit=True),
    event_fact(
        "closed_at",
        K,
        "time of charge.dispute.closed; the dispute object has no closing time (the "
        "nightly event backfill restores a lost closing event within Stripe's 30 days)",
        audit=True,
    ),
    Column("stripe_created", K),
    Column("livemode", N),
)


# Statuses as of today; a status Stripe adds later is stored as it comes.
DISPUTE_STATUSES = frozenset(
    {
        "needs_response",
        "under_review",
        "won",
        "lost",
        "warning_needs_response",
        "warning_under_review",
        "warning_closed",
        "prevented",
        "charge_refunded",  # historic status, still found in old accounts
    }
)


def _funds_moved(dispute: dict[str, Any], code: str) -> tuple[int | None, int | None]:
    """(withdrawn, reinstated) from balance transactions in the dispute's currency."""
    withdrawn = reinstated = None
    for txn in dispute.get("balance_transactions") or []:
        if not isinstance(txn, dict):
            continue
        if currency(txn.get("currency")) not in (None, code):
            continue  # settled in another currency: not comparable with the dispute amount
        moved = integer(txn.get("amount")) or 0  # signed: withdrawals are negative
        if moved < 0:
            withdrawn = (withdrawn or 0) - moved
        elif moved > 0:
            reinstated = (reinstated or 0) + moved
    return withdrawn, reinstated


def _evidence(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):  # API versions before 2014-12-08: free text
        return {"uncategorized_text": value}
    raise TypeError(f"dispute evidence of type {type(value).__name__}")


def dispute_row(dispute: dict[str, Any], *, event_type: str, created: int, livemode: bool):
    """A dispute object of any API version, with what the event type itself tells."""
    charge = dispute.get("charge")
    charge_id = ref_id(charge)
    payment_intent_id = (
        ref_id(dispute.get("payment_intent"))
        or (ref_id(charge.get("payment_intent")) if isinstance(charge, dict) else None)
        or charge_id
    )
    if payment_intent_id is None:
        raise ValueError("dispute without a charge or PaymentIntent")
    disputed = required_amount(dispute, "amount")
    code = required_currency(dispute)
    status = text(dispute.get("status"))
    if not status:
        raise ValueError("dispute without a status")
    withdrawn, reinstated = _funds_moved(dispute, code)
    if event_type == "charge.dispute.funds_withdrawn" and withdrawn is None:
        withdrawn = disputed
    if event_type == "charge.dispute.funds_reinstated" and reinstated is None:
        reinstated = disputed
    details = dispute.get("evidence_details") or {}
    # before 2014 the deadline sat at the top (``evidence_due_by``)
    if isinstance(details, dict) and "due_by" in details:
        due_by = details["due_by"]
    else:
        due_by = dispute.get("evidence_due_by")
    values = {
        "payment_intent_id": payment_intent_id,
        "charge_id": charge_id,
        "amount_minor": disputed,
        "currency": code,
        "status": status,
        "reason": text(dispute.get("reason")),
        "evidence": _evidence(dispute.get("evidence")),
        "due_by": unix_time(due_by),
        "has_evidence": boolean(dig(details, "has_evidence")),
        "is_charge_refundable": boolean(dispute.get("is_charge_refundable")),
        "funds_withdrawn_minor": withdrawn,
        "funds_reinstated_minor": reinstated,
        "closed_at": unix_time(created) if event_type == "charge.dispute.closed" else None,
        "stripe_created": integer(dispute.get("created")),
        "livemode": livemode,
    }
    return RowWrite(TABLE, dispute_key(dispute), values)


def dispute_key(dispute: dict[str, Any]) -> str:
    """The dispute's id; a dispute of an API version before 2014 has none and was the
    only dispute of its charge, so its charge id keys it."""
    found = dispute.get("id")
    if found is None and isinstance(dispute.get("charge"), str) and dispute["charge"]:
        return dispute["charge"]
    if not isinstance(found, str) or not found:
        raise ValueError("dispute without an id")
    return found


def apply_dispute_event(ctx: EventContext) -> Iterable[RowWrite]:
    """created, updated, closed, funds_withdrawn, funds_reinstated."""
    return [
        dispute_row(ctx.obj, event_type=ctx.event_type, created=ctx.created, livemode=ctx.livemode)
    ]


# --- SQL twin (``extract_sql``): the same row, read by PostgreSQL ---

_CHARGE_ID = q.ref_id(q.field("o", "charge"))
_PI = q.either(
    q.either(
        q.ref_id(q.field("o", "payment_intent")),
        q.ref_id(q.field("o", "charge", "payment_intent")),  # NULL unless an object
    ),
    _CHARGE_ID,
)
_AMOUNT = q.required_amount(q.field("o", "amount"))
_CODE = q.currency(q.field("o", "currency"))
_STATUS = q.text(q.field("o", "status"))

# ``_funds_moved``: ``balance_transactions or []`` iterated; an object or a string
# iterates keys / characters, all skipped; false and 0 are empty; other numbers and
# true raise
_BT = q.field("o", "balance_transactions")
_TXNS = f"jsonb_array_elements(CASE WHEN jsonb_typeof({_BT}) = 'array' THEN {_BT} END) AS bt(txn)"
_TXN_CODE = q.currency(q.field("bt.txn", "currency"))
_TXN_AMOUNT = q.integer(q.field("bt.txn", "amount"))
_COUNTED = (
    f"(jsonb_typeof(bt.txn) = 'object' "
    f"AND ({_TXN_CODE.value} IS NULL OR {_TXN_CODE.value} = {_CODE.value}))"
)
_FUNDS_OK = (
    f"(coalesce(jsonb_typeof({_BT}) IN ('array', 'object', 'string', 'null') "
    f"OR {_BT} IN ('false'::jsonb, '0'::jsonb), true) AND "
    f"(SELECT coalesce(bool_and(CASE WHEN jsonb_typeof(bt.txn) <> 'object' THEN true "
    f"WHEN NOT ({_TXN_CODE.ok}) THEN false "
    f"WHEN coalesce({_COUNTED}, false) THEN ({_TXN_AMOUNT.ok}) ELSE true END), true) "
    f"AND coalesce(sum(abs({_TXN_AMOUNT.value})) FILTER (WHERE {_COUNTED}), 0) "
    f"<= 9007199254740992 FROM {_TXNS}))"
)


def _moved(sign: str) -> str:
    """Withdrawn (``sign`` "-": the negated negative amounts) or reinstated ("+") sum."""
    amount = f"({sign}{_TXN_AMOUNT.value})"
    total = f"sum({amount}) FILTER (WHERE {amount} > 0)"
    return (
        f"(SELECT CASE WHEN {total} <= 9007199254740992 THEN ({total})::bigint END "
        f"FROM {_TXNS} WHERE {_COUNTED})"
    )


def _moved_or_amount(sign: str, event_type: str) -> q.Expr:
    return q.Expr(
        f"(CASE WHEN e.event_type = '{event_type}' "
        f"THEN coalesce({_moved(sign)}, {_AMOUNT.value}) ELSE {_moved(sign)} END)"
    )


# ``_evidence``: an object as is, pre-2014 free text wrapped; numbers inside go to
# Python (PostgreSQL's numeric does not give back every float Python read, e.g. 1e+30)
_EVIDENCE = q.field("o", "evidence")
_EVIDENCE_SQL = q.Expr(
    f"(CASE jsonb_typeof({_EVIDENCE}) WHEN 'object' THEN {_EVIDENCE} "
    f"WHEN 'string' THEN jsonb_build_object('uncategorized_text', {_EVIDENCE}) END)",
    f"(CASE WHEN jsonb_typeof({_EVIDENCE}) = 'object' THEN NOT jsonb_path_exists("
    f"{_EVIDENCE}, 'strict $.** ? (@.type() == \"number\")') "
    f"ELSE coalesce(jsonb_typeof({_EVIDENCE}) IN ('string', 'null'), true) END)",
)

_DETAILS = q.field("o", "evidence_details")
_HAS_DUE_BY = f"coalesce(jsonb_typeof({_DETAILS}) = 'object' AND {_DETAILS} ? 'due_by', false)"
_DUE_BY_NEW = q.unix_time(q.field(_DETAILS, "due_by"))
_DUE_BY_OLD = q.unix_time(q.field("o", "evidence_due_by"))

TWIN = SqlWrite(
    TABLE,
    key=q.object_id(),
    ok=q.Expr("true", _FUNDS_OK),
    values={
        "payment_intent_id": q.Expr(_PI.value, f"({_PI.ok} AND {_PI.value} IS NOT NULL)"),
        "charge_id": _CHARGE_ID,
        "amount_minor": _AMOUNT,
        "currency": q.Expr(_CODE.value, f"({_CODE.ok} AND {_CODE.value} IS NOT NULL)"),
        "status": q.Expr(
            _STATUS.value, f"({_STATUS.ok} AND coalesce({_STATUS.value} <> '', false))"
        ),
        "reason": q.text(q.field("o", "reason")),
        "evidence": _EVIDENCE_SQL,
        # ``evidence_details or {}`` then ``dig``: NULL wherever it is not an object
        "due_by": q.Expr(
            f"(CASE WHEN {_HAS_DUE_BY} THEN {_DUE_BY_NEW.value} ELSE {_DUE_BY_OLD.value} END)",
            f"(CASE WHEN {_HAS_DUE_BY} THEN {_DUE_BY_NEW.ok} ELSE {_DUE_BY_OLD.ok} END)",
        ),
        "has_evidence": q.boolean(q.field("o", "evidence_details", "has_evidence")),
        "is_charge_refundable": q.boolean(q.field("o", "is_charge_refundable")),
        "funds_withdrawn_minor": _moved_or_amount("-", "charge.dispute.funds_withdrawn"),
        "funds_reinstated_minor": _moved_or_amount("+", "charge.dispute.funds_reinstated"),
        "closed_at": q.constant(
            f"(CASE WHEN e.event_type = 'charge.dispute.closed' THEN {q.event_time().value} END)"
        ),
        "stripe_created": q.integer(q.field("o", "created")),
        "livemode": q.livemode(),
    },
)

RESOURCE = Resource(
    object_type="dispute",
    table=StripeDispute.__table__,
    key="stripe_dispute_id",
    columns=COLUMNS,
    routes=(Route(("charge.dispute.*",), apply_dispute_event, frozenset({"dispute"}), (TWIN,)),),
    listings=(Listing("disputes", "/v1/disputes", read_as="charge.dispute.updated"),),
    fetch=(Fetch("/v1/disputes/{id}", "charge.dispute.updated"),),
    docs="https://docs.stripe.com/api/disputes/object",
    insert_defaults={"funds_withdrawn_minor": 0, "funds_reinstated_minor": 0},
)
