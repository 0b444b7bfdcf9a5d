"""Invoice totals (``stripe_invoice_totals``): what Stripe computed for an invoice,
including its tax amounts per rate.

https://docs.stripe.com/api/invoices/object#invoice_object-total_taxes

One row per invoice, from every invoice event and the invoices listing: subtotal,
total, the sum of ``total_discount_amounts`` (item and invoice discounts), the tax
amounts (``total_tax_amounts`` before 2025-03-31.basil, ``total_taxes`` since; see
``billing``) and their sum. Invoices from before discount amounts were itemised
(2020) give their discount as ``subtotal + tax - total``. Kept beside
``stripe_invoices`` so revenue and tax marts read complete invoice figures even when
an event embedded only the first page of lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stripe_pipeline.catalog import invoices
from stripe_pipeline.catalog.billing import amount_sum, tax_amounts, tax_total
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
from stripe_pipeline.catalog.readers import currency, integer, object_id, unix_time
from stripe_pipeline.db.models import StripeInvoiceTotals

N, K, L = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.LEAST
TABLE = StripeInvoiceTotals.__tablename__

COLUMNS = (
    Column("currency", K, audit=True),
    Column("subtotal_minor", N, audit=True),
    Column("total_minor", N, audit=True),
    Column("discount_minor", N, audit=True),
    Column("tax_minor", N, audit=True),
    Column("taxes", N),
    Column("deleted_at", L, audit=True),
    Column("stripe_created", K),
    Column("livemode", N),
)


def _discount(invoice: dict[str, Any], subtotal: int | None, total: int | None, tax: int | None):
    found = amount_sum(invoice.get("total_discount_amounts"))
    if found is not None or subtotal is None or total is None:
        return found
    return subtotal + (tax or 0) - total  # before itemised discounts: total = sub - disc + tax


def apply_invoice_totals(ctx: EventContext) -> Iterable[RowWrite]:
    """The totals of the invoice an invoice event (or the invoices listing) carries."""
    invoice = ctx.obj
    taxes = tax_amounts(invoice, "total_tax_amounts", "total_taxes")
    subtotal, total = integer(invoice.get("subtotal")), integer(invoice.get("total"))
    tax = tax_total(taxes, invoice.get("tax"))
    values = {
        "currency": currency(invoice.get("currency")),
        "subtotal_minor": subtotal,
        "total_minor": total,
        "discount_minor": _discount(invoice, subtotal, total, tax),
        "tax_minor": tax,
        "taxes": taxes,
        "deleted_at": unix_time(ctx.created) if ctx.event_type == "invoice.deleted" else None,
        "stripe_created": integer(invoice.get("created", invoice.get("date"))),
        "livemode": ctx.livemode,
    }
    return [RowWrite(TABLE, object_id(invoice), values)]


RESOURCE = Resource(
    object_type="invoice_totals",
    table=StripeInvoiceTotals.__table__,
    key="stripe_invoice_id",
    columns=COLUMNS,
    routes=(Route(invoices.ROUTED, apply_invoice_totals, frozenset({"invoice"}), joins=True),),
    # the same list as the invoices' (a page is 100 invoices: one more call per 100)
    listings=(Listing("invoice_totals", "/v1/invoices", read_as="invoice.updated"),),
    fetch=(Fetch("/v1/invoices/{id}", "invoice.updated"),),
    # Stripe answers 404 for an invoice only once its draft was deleted
    gone_means_deleted=lambda row: True,
    docs="https://docs.stripe.com/api/invoices/object",
    deleted_marker="deleted_at",
)
