"""Balance transactions (``stripe_balance_transactions``): every movement of the Stripe
balance, with Stripe's fee and the net, in the settlement currency.

https://docs.stripe.com/api/balance_transactions/object

Stripe sends no event about a balance transaction. Its rows come from the nightly
listings: ``/v1/balance_transactions`` by ``created`` window, and, for each automatic
payout Stripe has reconciled (``reconciliation_status: completed``), the payout's own
list ``/v1/balance_transactions?payout=po_...``, the only place that says which payout
carried a transaction (the object itself does not name it). A transaction processing
does not know yet is fetched by id (``/v1/balance_transactions/{id}``).

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
)
from stripe_pipeline.catalog.readers import (
    currency,
    integer,
    object_id,
    ref_id,
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
        "currency": currency(txn.get("currency")),
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
    if values["currency"] is None:
        raise ValueError("balance transaction without a currency")
    return RowWrite(TABLE, object_id(txn), values)


def read_balance_transaction(ctx: EventContext) -> Iterable[RowWrite]:
    """A transaction as a listing or a fetch by id returns it."""
    return [balance_transaction_row(ctx.obj, livemode=ctx.livemode)]


RESOURCE = Resource(
    object_type="balance_transaction",
    table=StripeBalanceTransaction.__table__,
    key="stripe_balance_transaction_id",
    columns=COLUMNS,
    routes=(),  # Stripe sends no balance transaction events (see above)
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
