"""Radar early fraud warnings (``stripe_early_fraud_warnings``): a card issuer says a
charge was fraudulent, usually before a dispute follows.

https://docs.stripe.com/api/radar/early_fraud_warnings/object

``radar.early_fraud_warning.created`` / ``updated`` (``actionable`` turns false once
the charge is refunded or disputed). Warnings from before 2020 name only the charge.
The fraud rules (``recover/fraud.py``) read this table.
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
from stripe_pipeline.catalog.readers import boolean, integer, object_id, ref_id, text
from stripe_pipeline.db.models import StripeEarlyFraudWarning

N, K = Policy.NEWEST, Policy.NEWEST_KNOWN
TABLE = StripeEarlyFraudWarning.__tablename__

COLUMNS = (
    Column("charge_id", K),
    Column("payment_intent_id", K),
    Column("fraud_type", N, audit=True),
    Column("actionable", N, audit=True),
    Column("stripe_created", K),
    Column("livemode", N),
)


def apply_early_fraud_warning_event(ctx: EventContext) -> Iterable[RowWrite]:
    warning = ctx.obj
    charge = warning.get("charge")
    values = {
        "charge_id": ref_id(charge),
        "payment_intent_id": ref_id(warning.get("payment_intent"))
        or (ref_id(charge.get("payment_intent")) if isinstance(charge, dict) else None),
        "fraud_type": text(warning.get("fraud_type")),
        "actionable": boolean(warning.get("actionable")),
        "stripe_created": integer(warning.get("created")),
        "livemode": ctx.livemode,
    }
    return [RowWrite(TABLE, object_id(warning), values)]


RESOURCE = Resource(
    object_type="early_fraud_warning",
    table=StripeEarlyFraudWarning.__table__,
    key="stripe_early_fraud_warning_id",
    columns=COLUMNS,
    # no SQL twin: a handful per month even on a large account
    routes=(
        Route(
            ("radar.early_fraud_warning.*",),
            apply_early_fraud_warning_event,
            frozenset({"radar.early_fraud_warning"}),
        ),
    ),
    listings=(
        Listing(
            "early_fraud_warnings",
            "/v1/radar/early_fraud_warnings",
            read_as="radar.early_fraud_warning.updated",
        ),
    ),
    fetch=(Fetch("/v1/radar/early_fraud_warnings/{id}", "radar.early_fraud_warning.updated"),),
    docs="https://docs.stripe.com/api/radar/early_fraud_warnings/object",
)
