"""Balance transactions (``stripe_balance_transactions``): every movement of the Stripe
balance, with Stripe's fee and the net, in the settlement currency.

https://docs.stripe.com/api/balance_transactions/object

Stripe sends no event about a balance transaction. A dispute event carries its
transactions whole (the withdrawal with the dispute fee, a reinstatement after a
win): they are stored from it. The rest come from the nightly listings:
``/v1/balance_transactions`` by ``created`` window, and, for each automatic payout
Stripe has reconciled (``reconciliation_status: completed``), the payout's own list
``/v1/balance_transactions?payout=po_...``, the only place that says which payout
carried a transaction (the object itself does not name it). A transaction processing
does not know yet is fetched by id (``/v1/balance_transactions/{id}``): a charge or a
refund names its own.

``balance.available`` carries the balance (amounts per currency), not transactions,
so no route names it on purpose: the event is kept in ``stripe_events`` with status
``ignored`` (never a dead letter), and the transactions that changed the balance come
from the listings.

Amounts are signed integers of minor units (a refund or a fee is negative); ``fee`` is
the sum of ``fee_details``; ``net`` = ``amount`` - ``fee``. ``exchange_rate`` is set
when the charge's currency differs from the settlement currency, kept as an exact
decimal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from stripe_pipeline.catalog import sql_readers as q
from stripe_pipeline.catalog.model import (
    Column,
    EventContext,
    Fetch,
    Listing,
    PerParent,
    Policy,
    Resource,
    Route,
    RowWrite,
    SqlWrite,
)
from stripe_pipeline.catalog.readers import (
    integer,
    list_data,
    object_id,
    ref_id,
    required_currency,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripeBalanceTransaction

N, K = Policy.NEWEST, Policy.NEWEST_KNOWN
TABLE = StripeBalanceTransaction.__tablename__
READER = "balance_transaction"

COLUMNS = (
    Column("type", K, audit=True),
    Column("reporting_category", K, audit=True),
    Column("amount_minor", N, audit=True),
    Column("fee_minor", N, audit=True),
    Column("net_minor", N, audit=True),
    Column("currency", K, audit=True),
    Column("exchange_rate", N),
    Column("source_id", K),
    Column("source_type", K),
    # stated only by a payout's list (or the payout's own transaction): None elsewhere
    Column("payout_id", K, audit=True),
    Column("available_on", N),
    Column("status", N, audit=True),
    Column("description", N),
    Column("stripe_created", K),
    Column("livemode", N),
)

# id prefixes of the objects a balance transaction's ``source`` names, when not expanded
_SOURCE_PREFIXES = (
    ("ch_", "charge"),
    ("py_", "charge"),
    ("re_", "refund"),
    ("pyr_", "refund"),
    ("dp_", "dispute"),
    ("du_", "dispute"),
    ("po_", "payout"),
    ("tr_", "transfer"),
    ("fee_", "application_fee"),
    ("fr_", "application_fee_refund"),
    ("iar_", "issuing.authorization"),
    ("ipi_", "issuing.transaction"),
    ("tu_", "topup"),
    ("adj_", "adjustment"),
)


def source_type(source: Any) -> str | None:
    """The kind of object behind a transaction: the expanded object's ``object``, else
    read from its id's prefix (None when the prefix is not known)."""
    if isinstance(source, dict):
        return text(source.get("object"))
    found = ref_id(source)
    if found is None:
        return None
    for prefix, kind in _SOURCE_PREFIXES:
        if found.startswith(prefix):
            return kind
    return None


# the column is NUMERIC(24, 12): rates are kept to 12 places, below 10**12
RATE_PLACES = Decimal("1e-12")
RATE_BOUND = Decimal(10**12)


def exchange_rate(value: Any) -> Decimal | None:
    """Stripe's rate as the exact decimal its JSON number spells (never a float), to
    the 12 places the column keeps (so a stored rate compares equal to a listed one);
    one the column cannot hold is a shape error of its own object, not the batch's."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"expected an exchange rate, got {type(value).__name__}")
    try:
        found = Decimal(str(value))
    except ArithmeticError:
        raise ValueError(f"not an exchange rate: {str(value)[:40]!r}") from None
    if not found.is_finite() or not 0 < found < RATE_BOUND:
        raise ValueError(f"not an exchange rate: {str(value)[:40]!r}")
    return found.quantize(RATE_PLACES)


def _signed(txn: Mapping[str, Any], key: str) -> int:
    value = integer(txn.get(key))
    if value is None:
        raise ValueError(f"balance transaction has no {key}")
    return value


def balance_transaction_row(txn: dict[str, Any], *, livemode: bool) -> RowWrite:
    """A balance transaction; its payout from a payout's list (``payout`` set by the
    listing) or, for a payout's own transaction, from its source."""
    kind = text(txn.get("type"))
    source = ref_id(txn.get("source"))
    payout = ref_id(txn.get("payout"))
    if payout is None and kind == "payout":
        payout = source
    values = {
        "type": kind,
        "reporting_category": text(txn.get("reporting_category")),
        "amount_minor": _signed(txn, "amount"),
        "fee_minor": _signed(txn, "fee"),
        "net_minor": _signed(txn, "net"),
        "currency": required_currency(txn),
        "exchange_rate": exchange_rate(txn.get("exchange_rate")),
        "source_id": source,
        "source_type": source_type(txn.get("source")),
        "payout_id": payout,
        "available_on": unix_time(txn.get("available_on")),
        "status": text(txn.get("status")),
        "description": text(txn.get("description")),
        "stripe_created": integer(txn.get("created")),
        "livemode": livemode,
    }
    return RowWrite(TABLE, object_id(txn), values)


def read_balance_transaction(ctx: EventContext) -> Iterable[RowWrite]:
    """A transaction as a listing or a fetch by id returns it."""
    return [balance_transaction_row(ctx.obj, livemode=ctx.livemode)]


# --- disputes carry their transactions whole ----------------------------------------


def apply_dispute_transactions(ctx: EventContext) -> Iterable[RowWrite]:
    """The balance transactions a dispute event carries (Stripe embeds them whole: the
    withdrawal with its dispute fee, the reinstatement after a win), each once; one
    without an id (API versions before 2014, or a fixture) says nothing storable."""
    rows: dict[str, RowWrite] = {}
    for txn in list_data(ctx.obj.get("balance_transactions")):
        if not isinstance(txn, dict) or not txn.get("id"):
            continue
        row = balance_transaction_row(txn, livemode=ctx.livemode)
        rows.setdefault(row.key, row)
    return list(rows.values())


def _source_type(path: str) -> q.Expr:
    """``source_type``: the expanded object's ``object``, else the id's prefix."""
    kind = f"jsonb_typeof({path})"
    named = q.text(q.field(path, "object"))
    found = q.ref_id(path)
    prefixes = " ".join(
        f"WHEN starts_with({found.value}, '{prefix}') THEN '{name}'"
        for prefix, name in _SOURCE_PREFIXES
    )
    return q.Expr(
        f"(CASE WHEN {kind} = 'object' THEN {named.value} ELSE (CASE {prefixes} END) END)",
        f"(CASE WHEN {kind} = 'object' THEN {named.ok} ELSE {found.ok} END)",
    )


def _exchange_rate(path: str) -> q.Expr:
    """``exchange_rate``: a positive JSON number of at most 15 digits (a float reads it
    exactly), 9 of them decimals; strings and the rest are Python's."""
    kind = f"jsonb_typeof({path})"
    number = f"({path})::numeric"
    return q.Expr(
        f"(CASE WHEN {kind} = 'number' THEN {number} END)",
        f"(CASE {kind} WHEN 'number' THEN {number} > 0 AND {number} < 1e6 "
        f"AND scale({number}) <= 9 "
        f"WHEN 'null' THEN true ELSE {path} IS NULL END)",
    )


def _txn_values(t: str) -> dict[str, q.Expr]:
    """``balance_transaction_row`` of the transaction at ``t``."""
    kind = q.text(q.field(t, "type"))
    source = q.ref_id(q.field(t, "source"))
    payout = q.ref_id(q.field(t, "payout"))
    amount, fee = q.required_integer(q.field(t, "amount")), q.required_integer(q.field(t, "fee"))
    found = q.currency(q.field(t, "currency"))
    return {
        "type": kind,
        "reporting_category": q.text(q.field(t, "reporting_category")),
        "amount_minor": amount,
        "fee_minor": fee,
        "net_minor": q.required_integer(q.field(t, "net")),
        "currency": q.Expr(found.value, f"({found.ok}) AND {found.value} IS NOT NULL"),
        "exchange_rate": _exchange_rate(q.field(t, "exchange_rate")),
        "source_id": source,
        "source_type": _source_type(q.field(t, "source")),
        "payout_id": q.Expr(
            f"coalesce({payout.value}, CASE WHEN {kind.value} = 'payout' THEN {source.value} END)",
            q.all_ok(payout, kind, source),
        ),
        "available_on": q.unix_time(q.field(t, "available_on")),
        "status": q.text(q.field(t, "status")),
        "description": q.text(q.field(t, "description")),
        "stripe_created": q.integer(q.field(t, "created")),
        "livemode": q.livemode(),
    }


_TXNS = q.list_data(q.field("o", "balance_transactions"))
# a transaction listed twice is stored once (the first): Python decides those
_TXNS_UNIQUE = (
    f"NOT EXISTS (SELECT 1 FROM jsonb_array_elements({_TXNS.value}) AS listed(el) "
    "WHERE jsonb_typeof(el) = 'object' GROUP BY el -> 'id' HAVING count(*) > 1)"
)
DISPUTE_TWIN = SqlWrite(
    TABLE,
    key=q.object_id("item"),
    values=_txn_values("item"),
    ok=q.Expr("true", f"({_TXNS.ok}) AND {_TXNS_UNIQUE}"),
    items=_TXNS.value,
    # ``isinstance(txn, dict) and txn.get("id")``: a falsy id is skipped, an odd one
    # fails the key (Python decides)
    when=f"jsonb_typeof(item) = 'object' AND {q.json_truth(q.field('item', 'id')).value}",
)


RESOURCE = Resource(
    object_type="balance_transaction",
    table=StripeBalanceTransaction.__table__,
    key="stripe_balance_transaction_id",
    columns=COLUMNS,
    # Stripe sends no balance transaction events; disputes carry theirs whole
    routes=(
        Route(
            ("charge.dispute.*",),
            apply_dispute_transactions,
            frozenset({"dispute"}),
            (DISPUTE_TWIN,),
            joins=True,
        ),
    ),
    readers=(Route((READER,), read_balance_transaction, frozenset({"balance_transaction"})),),
    listings=(
        Listing("balance_transactions", "/v1/balance_transactions", read_as=READER),
        Listing(
            "payout_balance_transactions",
            "/v1/balance_transactions",
            read_as=READER,
            created_filter=False,
            per_parent=PerParent(
                parent="payout",
                column="payout_id",
                field="payout",
                param="payout",
                where={"automatic": True, "reconciliation_status": "completed"},
            ),
        ),
    ),
    fetch=(Fetch("/v1/balance_transactions/{id}", READER),),
    docs="https://docs.stripe.com/api/balance_transactions/object",
)
