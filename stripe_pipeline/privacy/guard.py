"""Erased customers stay erased: the checks write paths call before they write.

Processing (``process/apply.py``), reconciliation repairs (``reconcile/heal.py``) and
the event backfill (``reconcile/backfill.py``) each make one call here. A row or an
event that belongs to a customer listed in ``erasures`` loses its personal data
before it is written, so neither a late webhook, a replay, nor Stripe still returning
the customer can bring it back.

Whose is a row: customers by their id; payments, payment methods, invoices and
subscriptions by ``customer_id``; refunds and disputes through their payment. With no
erasure recorded (the usual case) every call costs one tiny query. With up to a
thousand, that query returns them all and rows are checked in Python; beyond, one
indexed query per batch and table does it. Rows that do not name their owner (a
guest payment, a detached payment method) and disputes (owned through their payment)
cost one more indexed lookup.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Select, select, union
from sqlalchemy.sql.elements import ColumnElement

from stripe_pipeline.db.lists import chunked, in_list
from stripe_pipeline.db.models import (
    Erasure,
    StripeCheckoutSession,
    StripeCustomer,
    StripeDispute,
    StripeInvoice,
    StripePayment,
    StripePaymentMethod,
    StripeRefund,
    StripeSubscription,
)
from stripe_pipeline.privacy.personal import PERSONAL_COLUMNS
from stripe_pipeline.privacy.redact import Quoted, blank_personal, quoted_in_payload, redact_payload

ERASURES = Erasure.__table__
PAYMENTS = StripePayment.__table__

# table -> (its key, the column naming its customer)
BY_CUSTOMER: dict[str, tuple[str, str]] = {
    "stripe_customers": ("stripe_customer_id", "stripe_customer_id"),
    "stripe_payments": ("payment_intent_id", "customer_id"),
    "stripe_payment_methods": ("stripe_payment_method_id", "customer_id"),
    "stripe_invoices": ("stripe_invoice_id", "customer_id"),
    "stripe_subscriptions": ("stripe_subscription_id", "customer_id"),
    # a guest checkout names no customer: its email is erased with its events' payloads
    # only when the customer is known (docs/privacy.md)
    "stripe_checkout_sessions": ("stripe_checkout_session_id", "customer_id"),
}
# table -> (its key, the column naming its payment)
BY_PAYMENT: dict[str, tuple[str, str]] = {
    "stripe_refunds": ("stripe_refund_id", "payment_intent_id"),
    "stripe_disputes": ("stripe_dispute_id", "payment_intent_id"),
}
TABLES = {
    t.name: t
    for t in (
        StripeCustomer.__table__,
        PAYMENTS,
        StripePaymentMethod.__table__,
        StripeInvoice.__table__,
        StripeSubscription.__table__,
        StripeRefund.__table__,
        StripeDispute.__table__,
        StripeCheckoutSession.__table__,
    )
}
# fields of a Stripe object that name the objects it belongs to
_REFERENCES = ("customer", "payment_intent", "charge", "invoice", "subscription")


class _RowWrite(Protocol):
    table: str
    key: str
    values: dict[str, Any]


W = TypeVar("W", bound=_RowWrite)


# up to this many erased customers, a guard reads them all in one small query and checks
# rows in Python; beyond, it asks the database about the batch's ids
ERASED_IN_MEMORY = 1000


def any_erasure(conn: Connection) -> bool:
    """Is any customer erased?"""
    return conn.execute(select(ERASURES.c.id).limit(1)).first() is not None


def erased_snapshot(conn: Connection) -> frozenset[str] | None:
    """Every erased customer id when there are at most ``ERASED_IN_MEMORY`` (empty: nobody
    erased, the fast path of every guard); ``None`` when there are more."""
    ids = conn.execute(select(ERASURES.c.customer_id).limit(ERASED_IN_MEMORY + 1)).scalars()
    found = frozenset(ids)
    return found if len(found) <= ERASED_IN_MEMORY else None


def erased_customers(
    conn: Connection, customer_ids: Iterable[str], known: frozenset[str] | None = None
) -> set[str]:
    """The given customer ids that are erased (or being erased); ``known``: a snapshot."""
    ids = sorted({c for c in customer_ids if c})
    if known is not None:
        return {c for c in ids if c in known}
    found: set[str] = set()
    column = ERASURES.c.customer_id
    for part in chunked(ids):
        found.update(conn.execute(select(column).where(in_list(conn, column, part))).scalars())
    return found


def _erased_customer_ids() -> Select:
    return select(ERASURES.c.customer_id)


def owned_object_ids(customers: Select | Sequence[str]) -> Select:
    """Stripe ids of every stored object of these customers (a list or a subquery).

    Payments count twice (PaymentIntent and charge ids: events may be about either).
    """
    payments_of = select(PAYMENTS.c.payment_intent_id).where(PAYMENTS.c.customer_id.in_(customers))
    parts: list[Select] = []
    for name, (key, owner) in BY_CUSTOMER.items():
        table = TABLES[name]
        parts.append(select(table.c[key].label("object_id")).where(table.c[owner].in_(customers)))
    parts.append(
        select(PAYMENTS.c.charge_id.label("object_id")).where(
            PAYMENTS.c.customer_id.in_(customers), PAYMENTS.c.charge_id.is_not(None)
        )
    )
    for name, (key, payment) in BY_PAYMENT.items():
        table = TABLES[name]
        parts.append(
            select(table.c[key].label("object_id")).where(table.c[payment].in_(payments_of))
        )
    return select(union(*parts).subquery().c.object_id)


def _stored_erased_keys(conn: Connection, table: str, keys: Sequence[str]) -> set[str]:
    """Keys whose stored row belongs to an erased customer."""
    t = TABLES[table]
    found: set[str] = set()
    if table in BY_CUSTOMER:
        key, owner = BY_CUSTOMER[table]
        belongs: ColumnElement[bool] = t.c[owner].in_(_erased_customer_ids())
    else:
        key, payment = BY_PAYMENT[table]
        belongs = t.c[payment].in_(
            select(PAYMENTS.c.payment_intent_id).where(
                PAYMENTS.c.customer_id.in_(_erased_customer_ids())
            )
        )
    for part in chunked(list(keys)):
        query = select(t.c[key]).where(in_list(conn, t.c[key], part), belongs)
        found.update(conn.execute(query).scalars())
    return found


def _erased_payments(conn: Connection, payment_ids: Iterable[str]) -> set[str]:
    ids = sorted({p for p in payment_ids if p})
    found: set[str] = set()
    column = PAYMENTS.c.payment_intent_id
    for part in chunked(ids):
        query = select(column).where(
            in_list(conn, column, part), PAYMENTS.c.customer_id.in_(_erased_customer_ids())
        )
        found.update(conn.execute(query).scalars())
    return found


def erased_row_keys(
    conn: Connection,
    table: str,
    rows: Sequence[dict[str, Any]],
    known: frozenset[str] | None = None,
) -> set[str]:
    """Keys of the rows that belong to erased customers.

    A row that names its owner (customer, or payment for refunds and disputes) is judged
    by that name; only rows that do not (a guest payment, a detached payment method) are
    looked up as stored. Cost: one indexed lookup per distinct owner, and one per
    ownerless row, only once some customer is erased.
    """
    if table in BY_CUSTOMER:
        key, owner = BY_CUSTOMER[table]
        named = erased_customers(conn, {r[owner] for r in rows if r.get(owner)}, known)
    elif table in BY_PAYMENT:
        key, owner = BY_PAYMENT[table]
        named = _erased_payments(conn, {r[owner] for r in rows if r.get(owner)})
    else:
        return set()
    hits = {r[key] for r in rows if r.get(owner) in named}
    ownerless = [r[key] for r in rows if r.get(owner) is None]
    return hits | (_stored_erased_keys(conn, table, ownerless) if ownerless else set())


def scrub_erased(conn: Connection, table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows about to be written to ``table``, with erased customers' personal columns blank.

    Each row holds the table's key column. Tables without personal columns, and every
    table while nobody is erased, come back as given (the same list).
    """
    if not rows or table not in PERSONAL_COLUMNS:
        return rows
    known = erased_snapshot(conn)
    if known is not None and not known:
        return rows
    erased = erased_row_keys(conn, table, rows, known)
    if not erased:
        return rows
    key = (BY_CUSTOMER.get(table) or BY_PAYMENT[table])[0]
    return [blank_personal(table, r) if r[key] in erased else r for r in rows]


def scrub_erased_write(conn: Connection, write: W) -> W:
    """``scrub_erased`` for one ``RowWrite`` (table, key, values), e.g. a repair."""
    if write.table not in PERSONAL_COLUMNS:
        return write
    key = (BY_CUSTOMER.get(write.table) or BY_PAYMENT[write.table])[0]
    row = {**write.values, key: write.key}
    [scrubbed] = scrub_erased(conn, write.table, [row])
    if scrubbed is row:
        return write
    return replace(write, values={k: scrubbed[k] for k in write.values})


def _ref(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


def references(payload: Any) -> set[str]:
    """Ids an event payload is about: its object and the objects that object names."""
    data = payload.get("data") if isinstance(payload, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return set()
    refs = {_ref(obj.get("id")), *(_ref(obj.get(name)) for name in _REFERENCES)}
    return {r for r in refs if r}


def erased_references(conn: Connection, ids: Iterable[str]) -> set[str]:
    """The given Stripe ids that are erased customers or objects they own."""
    ids = sorted(set(ids))
    if not ids:
        return set()
    found = erased_customers(conn, ids)
    owned = owned_object_ids(_erased_customer_ids()).subquery()
    for part in chunked(ids):
        query = select(owned.c.object_id).where(in_list(conn, owned.c.object_id, part))
        found.update(conn.execute(query).scalars())
    return found


class _Envelope(Protocol):
    payload_text: str


E = TypeVar("E", bound=_Envelope)


def scrub_erased_envelopes(conn: Connection, envelopes: list[E]) -> list[E]:
    """Events about to be stored (a backfill page): erased customers' payloads redacted."""
    if not envelopes or not any_erasure(conn):
        return envelopes
    docs = [json.loads(e.payload_text) for e in envelopes]
    refs = [references(doc) for doc in docs]
    erased = erased_references(conn, set().union(*refs))
    if not erased:
        return envelopes
    out = []
    for envelope, doc, mine in zip(envelopes, docs, refs, strict=True):
        if mine & erased:
            redacted, _ = redact_payload(doc, Quoted.of(quoted_in_payload(doc)))
            envelope = replace(envelope, payload_text=json.dumps(redacted))  # type: ignore[type-var]
        out.append(envelope)
    return out
