"""What is reconciled: per object type, the API listings, the local table and the
compared fields, and how an API object projects onto those fields.

Projections give the values the processing parsers store (lower-case currency,
minor units, Unix times for periods), across API versions: a subscription's period
sits at the top in old payloads and on its items since 2025-03-31.basil.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table

from stripe_pipeline.db.models import (
    StripeDispute,
    StripeInvoice,
    StripePayment,
    StripeRefund,
    StripeSubscription,
)
from stripe_pipeline.reconcile.parse import row_from_api_object
from stripe_pipeline.reconcile.window import to_unix

# Fields whose difference is not staleness: Stripe never changes an object's currency,
# so a mismatch means a corrupted row or a parser bug, which a person must look at.
NOT_STALENESS = frozenset({"currency"})
DATETIME_FIELDS = frozenset({"current_period_start", "current_period_end"})


@dataclass(frozen=True, slots=True)
class Projection:
    """An API object seen through one listing: its local key and compared values."""

    key: str
    values: dict[str, Any]
    # False: this listing only refines fields of an object another listing owns
    # (a PaymentIntent's charge), so its absence locally is reported by the owner
    owns_object: bool = True


Projector = Callable[[dict[str, Any]], Projection | None]


@dataclass(frozen=True, slots=True)
class Listing:
    resource: str
    project: Projector


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    object_type: str
    table: Table
    key: str
    fields: tuple[str, ...]
    listings: tuple[Listing, ...]


def _projector(resource: str, fields: tuple[str, ...], *, owns_object: bool = True) -> Projector:
    """Compare what the processing parser makes of the object, on ``fields``.

    A ``None`` from the parser means "this payload does not say" (an old PaymentIntent
    has no refunded amount, a charge no creation time of its PaymentIntent): such a
    field is not compared, the same way processing never erases a known value with it.
    """

    def project(obj: dict[str, Any]) -> Projection:
        write = row_from_api_object(resource, obj, observed_at=0)
        values = {}
        for name in fields:
            value = write.values.get(name)
            if value is None:
                continue
            values[name] = to_unix(value) if isinstance(value, datetime) else value
        return Projection(write.key, values, owns_object)

    return project


def _project_charge(obj: dict[str, Any]) -> Projection | None:
    """A charge of a PaymentIntent refines its payment's refunded amount (its other
    fields belong to the PaymentIntent listing); a legacy charge is the payment."""
    if obj.get("payment_intent"):
        if obj.get("status") != "succeeded" and obj.get("paid") is not True:
            return None  # failed attempts of a PaymentIntent say nothing about its refunds
        return _charge_of_intent(obj)
    return _legacy_charge(obj)


_PAYMENT_FIELDS = (
    "status",
    "amount_minor",
    "amount_received_minor",
    "amount_refunded_minor",
    "currency",
)
_INTENT_FIELDS = tuple(f for f in _PAYMENT_FIELDS if f != "amount_refunded_minor")
_charge_of_intent = _projector("charges", ("amount_refunded_minor",), owns_object=False)
_legacy_charge = _projector("charges", _PAYMENT_FIELDS)


FIELDS = {
    "refunds": ("status", "amount_minor", "currency"),
    "disputes": ("status", "amount_minor", "currency"),
    "subscriptions": ("status", "current_period_start", "current_period_end"),
    "invoices": (
        "status",
        "amount_due_minor",
        "amount_paid_minor",
        "amount_remaining_minor",
        "currency",
    ),
}
SPECS: dict[str, ObjectSpec] = {
    spec.object_type: spec
    for spec in (
        ObjectSpec(
            "payment",
            StripePayment.__table__,
            "payment_intent_id",
            _PAYMENT_FIELDS,
            (
                # refunded amounts belong to the charges listing: one listing per field
                Listing("payment_intents", _projector("payment_intents", _INTENT_FIELDS)),
                Listing("charges", _project_charge),
            ),
        ),
        ObjectSpec(
            "refund",
            StripeRefund.__table__,
            "stripe_refund_id",
            FIELDS["refunds"],
            (Listing("refunds", _projector("refunds", FIELDS["refunds"])),),
        ),
        ObjectSpec(
            "dispute",
            StripeDispute.__table__,
            "stripe_dispute_id",
            FIELDS["disputes"],
            (Listing("disputes", _projector("disputes", FIELDS["disputes"])),),
        ),
        ObjectSpec(
            "subscription",
            StripeSubscription.__table__,
            "stripe_subscription_id",
            FIELDS["subscriptions"],
            (Listing("subscriptions", _projector("subscriptions", FIELDS["subscriptions"])),),
        ),
        ObjectSpec(
            "invoice",
            StripeInvoice.__table__,
            "stripe_invoice_id",
            FIELDS["invoices"],
            (Listing("invoices", _projector("invoices", FIELDS["invoices"])),),
        ),
    )
}
OBJECT_TYPES = tuple(SPECS)
