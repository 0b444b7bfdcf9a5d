"""Credit notes (``stripe_credit_notes``): money given back on an invoice.

https://docs.stripe.com/api/credit_notes/object

``credit_note.created`` / ``updated`` / ``voided``. A credit note lowers what an
invoice is worth: before payment it lowers the amount due, after it is refunded,
credited to the customer's balance or settled out of band. The refunds it made are
kept (``refund_ids``: ``refund`` before 2025, ``refunds[].refund`` since) so a mart
counts such money once. Taxes per rate are ``tax_amounts`` before 2025-03-31.basil,
``total_taxes`` since. Its lines are ``credit_note_lines``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
from stripe_pipeline.catalog.readers import (
    currency,
    integer,
    list_data,
    object_id,
    ref_id,
    text,
    unix_time,
)
from stripe_pipeline.db.models import StripeCreditNote

N, K = Policy.NEWEST, Policy.NEWEST_KNOWN
TABLE = StripeCreditNote.__tablename__

COLUMNS = (
    Column("invoice_id", K),
    Column("customer_id", K),
    Column("status", N, audit=True),
    Column("type", K),
    Column("reason", N, audit=True),
    Column("currency", K, audit=True),
    Column("amount_minor", N, audit=True),
    Column("subtotal_minor", N),
    Column("total_minor", N, audit=True),
    Column("discount_minor", N),
    Column("tax_minor", N),
    Column("taxes", N),
    Column("out_of_band_minor", N),
    Column("refund_ids", N),
    Column("voided_at", N, audit=True),
    Column("stripe_created", K),
    Column("livemode", N),
)


def _refund_ids(note: dict[str, Any]) -> list[str]:
    """Refunds the credit note made: ``refunds[].refund`` (2025+) or ``refund`` (before)."""
    found = [ref_id(entry.get("refund")) for entry in _objects(note.get("refunds"))]
    found.append(ref_id(note.get("refund")))
    return sorted({f for f in found if f})


def _objects(value: Any) -> list[dict[str, Any]]:
    items = list_data(value)
    for item in items:
        if not isinstance(item, dict):
            raise TypeError("a credit note refund is not an object")
    return items


def _discount(note: dict[str, Any]) -> int | None:
    found = amount_sum(note.get("discount_amounts"))
    return found if found is not None else integer(note.get("discount_amount"))


def apply_credit_note_event(ctx: EventContext) -> Iterable[RowWrite]:
    """created, updated, voided."""
    note = ctx.obj
    taxes = tax_amounts(note, "tax_amounts", "total_taxes")
    status = text(note.get("status"))
    voided_at = unix_time(note.get("voided_at"))
    if voided_at is None and ctx.event_type == "credit_note.voided":
        voided_at = unix_time(ctx.created)
    if not status:  # always set in practice; a voided one says so by its event
        status = "void" if ctx.event_type == "credit_note.voided" else "issued"
    values = {
        "invoice_id": ref_id(note.get("invoice")),
        "customer_id": ref_id(note.get("customer")),
        "status": status,
        "type": text(note.get("type")),
        "reason": text(note.get("reason")),
        "currency": currency(note.get("currency")),
        "amount_minor": integer(note.get("amount")),
        "subtotal_minor": integer(note.get("subtotal")),
        "total_minor": integer(note.get("total")),
        "discount_minor": _discount(note),
        "tax_minor": tax_total(taxes),
        "taxes": taxes,
        "out_of_band_minor": integer(note.get("out_of_band_amount")),
        "refund_ids": _refund_ids(note),
        "voided_at": voided_at if status == "void" else None,
        "stripe_created": integer(note.get("created")),
        "livemode": ctx.livemode,
    }
    return [RowWrite(TABLE, object_id(note), values)]


RESOURCE = Resource(
    object_type="credit_note",
    table=StripeCreditNote.__table__,
    key="stripe_credit_note_id",
    columns=COLUMNS,
    # no SQL twin: the event also carries the lines (nested lists, see credit_note_lines)
    routes=(Route(("credit_note.*",), apply_credit_note_event, frozenset({"credit_note"})),),
    listings=(Listing("credit_notes", "/v1/credit_notes", read_as="credit_note.updated"),),
    fetch=(Fetch("/v1/credit_notes/{id}", "credit_note.updated"),),
    docs="https://docs.stripe.com/api/credit_notes/object",
)
