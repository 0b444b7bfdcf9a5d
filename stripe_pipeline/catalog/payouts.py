"""Payouts (``stripe_payouts``): money sent from the Stripe balance to the bank.

https://docs.stripe.com/api/payouts/object

``payout.created`` -> ``payout.updated`` -> ``payout.paid`` (or ``payout.failed`` with
Stripe's ``failure_code`` and ``failure_message``, or ``payout.canceled``); for an
automatic payout, ``payout.reconciliation_completed`` once Stripe knows which balance
transactions it carried (``reconciliation_status: completed``), when their list
``/v1/balance_transactions?payout=`` is complete (see ``balance_transactions``).
``arrival_date`` is the expected (then actual) day the money reaches the bank.
``type`` says where it goes (``bank_account`` or ``card``), stored as the destination
type.
"""

from __future__ import annotations

from collections.abc import Iterable

from stripe_pipeline.catalog.model import (
    Column,
    EventContext,
    Fetch,
    Listing,
    Policy,
    Resource,
    Route,
    RowWrite,
)
from stripe_pipeline.catalog.readers import (
    boolean,
    integer,
    object_id,
    ref_id,
    required_amount,
    required_currency,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripePayout

N, K = Policy.NEWEST, Policy.NEWEST_KNOWN
TABLE = StripePayout.__tablename__

COLUMNS = (
    Column("amount_minor", N, audit=True),
    Column("currency", K, audit=True),
    Column("status", N, audit=True),
    Column("arrival_date", N, audit=True),
    Column("automatic", K),
    Column("method", N),
    Column("destination_id", N),
    Column("destination_type", N),
    Column("failure_code", N, audit=True),
    Column("failure_message", N),
    Column("reconciliation_status", N, audit=True),
    Column("balance_transaction_id", K),
    Column("failure_balance_transaction_id", N),
    Column("description", N),
    Column("stripe_created", K),
    Column("livemode", N),
)


def apply_payout_event(ctx: EventContext) -> Iterable[RowWrite]:
    """created, updated, paid, failed, canceled, reconciliation_completed."""
    payout = ctx.obj
    status = text(payout.get("status"))
    if status is None:
        raise ValueError("payout without a status")
    values = {
        "amount_minor": required_amount(payout, "amount"),
        "currency": required_currency(payout),
        "status": status,
        "arrival_date": unix_time(payout.get("arrival_date")),
        "automatic": boolean(payout.get("automatic")),
        "method": text(payout.get("method")),
        "destination_id": ref_id(payout.get("destination")),
        "destination_type": text(payout.get("type")),
        "failure_code": text(payout.get("failure_code")),
        "failure_message": text(payout.get("failure_message")),
        "reconciliation_status": text(payout.get("reconciliation_status")),
        "balance_transaction_id": ref_id(payout.get("balance_transaction")),
        "failure_balance_transaction_id": ref_id(payout.get("failure_balance_transaction")),
        "description": text(payout.get("description")),
        "stripe_created": integer(payout.get("created")),
        "livemode": ctx.livemode,
    }
    return [RowWrite(TABLE, object_id(payout), values)]


RESOURCE = Resource(
    object_type="payout",
    table=StripePayout.__table__,
    key="stripe_payout_id",
    columns=COLUMNS,
    # no SQL twin: an account has a payout a day, a twin would never pay off
    routes=(Route(("payout.*",), apply_payout_event, frozenset({"payout"})),),
    listings=(Listing("payouts", "/v1/payouts", read_as="payout.updated"),),
    fetch=(Fetch("/v1/payouts/{id}", "payout.updated"),),
    docs="https://docs.stripe.com/api/payouts/object",
)
