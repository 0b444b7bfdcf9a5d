"""The Stripe resources the pipeline stores, each declared once (see ``model``).

``CATALOG`` lists them in the order a batch writes their tables (a fixed order, so
concurrent runs lock rows in the same order) and reconciliation compares them (a
parent before the children it lists per parent: invoices before their lines). It is
an immutable value: entry points pass it (or another catalog, in tests) to
processing and reconciliation.
"""

from __future__ import annotations

from stripe_pipeline.catalog import (
    balance_transactions,
    checkout_sessions,
    coupons,
    credit_note_lines,
    credit_notes,
    customers,
    discounts,
    disputes,
    early_fraud_warnings,
    invoice_lines,
    invoice_payments,
    invoice_totals,
    invoices,
    payment_methods,
    payments,
    payouts,
    prices,
    products,
    promotion_codes,
    refunds,
    reviews,
    setup_intents,
    subscriptions,
    tax_rates,
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
        invoice_totals.RESOURCE,
        invoice_lines.RESOURCE,
        tax_rates.RESOURCE,
        credit_notes.RESOURCE,
        credit_note_lines.RESOURCE,
        checkout_sessions.RESOURCE,
        setup_intents.RESOURCE,
        early_fraud_warnings.RESOURCE,
        reviews.RESOURCE,
        payouts.RESOURCE,
        balance_transactions.RESOURCE,
    )
)

__all__ = ["CATALOG"]
