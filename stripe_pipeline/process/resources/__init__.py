"""Parsers of Stripe objects into domain rows, one module per resource.

Importing this package registers every event handler; ``TABLE_SPECS`` lists the
tables they write, in the order a batch writes them (a fixed order, so concurrent
runs lock rows in the same order).
"""

from __future__ import annotations

from stripe_pipeline.process.resources import (
    customers,
    disputes,
    invoices,
    payment_methods,
    payments,
    refunds,
    subscriptions,
)
from stripe_pipeline.process.upsert import TableSpec

TABLE_SPECS: dict[str, TableSpec] = {
    module.SPEC.name: module.SPEC
    for module in (
        customers,
        payment_methods,
        payments,
        refunds,
        disputes,
        subscriptions,
        invoices,
    )
}

__all__ = ["TABLE_SPECS"]
