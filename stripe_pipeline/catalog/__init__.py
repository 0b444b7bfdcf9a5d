"""The Stripe resources the pipeline stores, each declared once (see ``model``).

``CATALOG`` lists them in the order a batch writes their tables (a fixed order, so
concurrent runs lock rows in the same order). It is an immutable value: entry points
pass it (or another catalog, in tests) to processing and reconciliation.
"""

from __future__ import annotations

from stripe_pipeline.catalog import (
    coupons,
    customers,
    discounts,
    disputes,
    invoice_payments,
    invoices,
    payment_methods,
    payments,
    prices,
    products,
    promotion_codes,
    refunds,
    subscriptions,
)
from stripe_pipeline.catalog.model import Catalog

CATALOG = Catalog(
    (
        customers.RESOURCE,
        payment_methods.RESOURCE,
        payments.RESOURCE,
        refunds.RESOURCE,
        disputes.RESOURCE,
        subscriptions.RESOURCE,
        invoices.RESOURCE,
        invoice_payments.RESOURCE,
        products.RESOURCE,
        prices.RESOURCE,
        coupons.RESOURCE,
        promotion_codes.RESOURCE,
        discounts.RESOURCE,
    )
)

__all__ = ["CATALOG"]
