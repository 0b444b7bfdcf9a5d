"""Invoice line items (``stripe_invoice_line_items``), from invoice events and from
each invoice's lines listing.

https://docs.stripe.com/api/invoice-line-item/object

Every invoice event embeds the invoice's first page of lines; ``has_more`` means the
rest are fetched through the context's line source (as ``charge.refunded`` fetches
refunds). The nightly run lists ``/v1/invoices/{id}/lines`` per invoice it saw.

Shapes: before 2025-03-31.basil a line names its ``price`` (or ``plan``),
``subscription``, ``subscription_item``, ``invoice_item``, ``proration`` and
``type`` (``subscription`` / ``invoiceitem``) and carries ``tax_amounts``; since
basil these live under ``pricing.price_details`` and ``parent.<type>_details``, and
taxes under ``taxes``. Lines were keyed by their source (``sub_...``, ``ii_...``),
repeated on every invoice of a subscription, until 2019-12-03 gave them their own
``il_`` ids: such a line is keyed ``<invoice id>:<line id>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stripe_pipeline.catalog import invoices
from stripe_pipeline.catalog.billing import all_lines, amount_sum, tax_amounts, tax_total
from stripe_pipeline.catalog.model import (
    Column,
    EventContext,
    Listing,
    PerParent,
    Policy,
    Resource,
    Route,
    RowWrite,
    event_fact,
)
from stripe_pipeline.catalog.readers import (
    boolean,
    currency,
    dig,
    integer,
    object_id,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripeInvoiceLineItem

N, K, L = Policy.NEWEST, Policy.NEWEST_KNOWN, Policy.LEAST
TABLE = StripeInvoiceLineItem.__tablename__
READER = "invoice_line_item"

COLUMNS = (
    Column("invoice_id", K),
    Column("type", K),
    Column("subscription_id", K),
    Column("subscription_item_id", K),
    Column("invoice_item_id", K),
    Column("price_id", K),
    Column("product_id", K),
    Column("currency", K, audit=True),
    Column("amount_minor", N, audit=True),
    Column("quantity", N, audit=True),
    Column("period_start", N),
    Column("period_end", N),
    Column("proration", N),
    Column("discount_minor", N, audit=True),
    Column("tax_minor", N, audit=True),
    Column("taxes", N),
    # the draft it was on was deleted (invoice.deleted), or it left its invoice's list
    Column("deleted_at", L, audit=True),
    event_fact(
        "stripe_created",
        K,
        "the invoice's creation time, from its events; a line object has none",
    ),
    Column("livemode", N),
)

# basil's ``parent.type`` -> the type the line had before
_TYPES = {"subscription_item_details": "subscription", "invoice_item_details": "invoiceitem"}


def line_key(line: dict[str, Any], invoice_id: str) -> str:
    """The line's own ``il_`` id; an older line id (its source's) with its invoice's."""
    found = object_id(line)
    return found if found.startswith("il_") else f"{invoice_id}:{found}"


def line_row(
    line: dict[str, Any],
    *,
    invoice_id: str,
    created: int | None,
    livemode: bool,
    deleted_at: Any = None,
) -> RowWrite:
    """One line of an invoice, of any API version."""
    parent = line.get("parent") or {}
    parent_type = text(dig(parent, "type"))
    details = dig(parent, parent_type) if parent_type else None
    details = details if isinstance(details, dict) else {}
    price = line.get("price") or line.get("plan")
    price_obj = price if isinstance(price, dict) else {}
    pricing = dig(line, "pricing", "price_details") or {}
    proration = line.get("proration") if "proration" in line else details.get("proration")
    invoice_item = ref_id(line.get("invoice_item")) or ref_id(details.get("invoice_item"))
    kind = text(line.get("type")) or _TYPES.get(parent_type or "")
    if invoice_item is None and kind == "invoiceitem" and object_id(line).startswith("ii_"):
        invoice_item = object_id(line)  # before 2019-12-03 the line was the invoice item
    period = line.get("period") or {}
    taxes = tax_amounts(line, "tax_amounts", "taxes")
    values = {
        "invoice_id": invoice_id,
        "type": kind,
        "subscription_id": ref_id(line.get("subscription")) or ref_id(details.get("subscription")),
        "subscription_item_id": ref_id(line.get("subscription_item"))
        or ref_id(details.get("subscription_item")),
        "invoice_item_id": invoice_item,
        "price_id": ref_id(price) or ref_id(dig(pricing, "price")),
        "product_id": ref_id(price_obj.get("product")) or ref_id(dig(pricing, "product")),
        "currency": currency(line.get("currency")),
        "amount_minor": integer(line.get("amount")),
        "quantity": integer(line.get("quantity")),
        "period_start": unix_time(dig(period, "start")),
        "period_end": unix_time(dig(period, "end")),
        "proration": boolean(proration),
        "discount_minor": amount_sum(line.get("discount_amounts")),
        "tax_minor": tax_total(taxes),
        "taxes": taxes,
        "deleted_at": deleted_at,
        "stripe_created": created,
        "livemode": livemode,
    }
    return RowWrite(TABLE, line_key(line, invoice_id), values)


def apply_invoice_lines(ctx: EventContext) -> Iterable[RowWrite]:
    """The lines of the invoice an invoice event carries (every page)."""
    invoice = ctx.obj
    invoice_id = object_id(invoice)
    deleted_at = unix_time(ctx.created) if ctx.event_type == "invoice.deleted" else None
    created = integer(invoice.get("created", invoice.get("date")))
    writes: dict[str, RowWrite] = {}
    for line in all_lines(ctx, invoice, f"/v1/invoices/{invoice_id}/lines"):
        row = line_row(
            line,
            invoice_id=invoice_id,
            created=created,
            livemode=ctx.livemode,
            deleted_at=deleted_at,
        )
        writes.setdefault(row.key, row)  # a line listed twice is stored once (the first)
    return list(writes.values())


def read_listed_line(ctx: EventContext) -> Iterable[RowWrite]:
    """A line as ``/v1/invoices/{id}/lines`` lists it (its ``invoice`` set by the listing)."""
    line = ctx.obj
    invoice_id = ref_id(line.get("invoice"))
    if invoice_id is None:
        raise ValueError("line item without its invoice")
    return [line_row(line, invoice_id=invoice_id, created=None, livemode=ctx.livemode)]


RESOURCE = Resource(
    object_type="invoice_line_item",
    table=StripeInvoiceLineItem.__table__,
    key="stripe_line_item_id",
    columns=COLUMNS,
    # no SQL twin: nested lists per line (discounts, taxes), as subscriptions' items,
    # so invoice events are parsed in Python (see tests/test_extract_sql.py)
    routes=(Route(invoices.ROUTED, apply_invoice_lines, frozenset({"invoice"}), joins=True),),
    readers=(Route((READER,), read_listed_line, frozenset({"line_item"})),),
    listings=(
        Listing(
            "invoice_lines",
            "/v1/invoices/{id}/lines",
            read_as=READER,
            created_filter=False,
            per_parent=PerParent(parent="invoice", column="invoice_id", field="invoice"),
        ),
    ),
    # no fetch by id (Stripe has none for a line): each listed invoice's list is
    # complete, so a line it no longer holds left the invoice
    gone_means_deleted=lambda row: True,
    docs="https://docs.stripe.com/api/invoice-line-item/object",
    deleted_marker="deleted_at",
)
