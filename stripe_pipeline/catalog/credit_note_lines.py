"""Credit note lines (``stripe_credit_note_line_items``), from credit note events and
each credit note's lines listing.

https://docs.stripe.com/api/credit_notes/line_item

A credit note event embeds the first page of its lines; the rest are fetched through
the context's line source, as for invoices. A line credits an invoice line
(``type: invoice_line_item``) or a custom amount (``custom_line_item``). Its taxes
are ``tax_amounts`` before 2025-03-31.basil and ``taxes`` since. A listed line does
not name its credit note: the per-parent listing sets ``credit_note``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
from stripe_pipeline.catalog.readers import integer, object_id, ref_id, text
from stripe_pipeline.db.models import StripeCreditNoteLineItem

N, K = Policy.NEWEST, Policy.NEWEST_KNOWN
TABLE = StripeCreditNoteLineItem.__tablename__
READER = "credit_note_line_item"

COLUMNS = (
    Column("credit_note_id", K),
    Column("invoice_line_item_id", K),
    Column("type", K),
    Column("amount_minor", N, audit=True),
    Column("quantity", N),
    Column("unit_amount_minor", N),
    Column("discount_minor", N),
    Column("tax_minor", N, audit=True),
    Column("taxes", N),
    event_fact(
        "stripe_created",
        K,
        "the credit note's creation time, from its events; a line object has none",
    ),
    Column("livemode", N),
)


def credit_note_line_row(
    line: dict[str, Any], *, credit_note_id: str, created: int | None, livemode: bool
) -> RowWrite:
    taxes = tax_amounts(line, "tax_amounts", "taxes")
    discount = amount_sum(line.get("discount_amounts"))
    values = {
        "credit_note_id": credit_note_id,
        "invoice_line_item_id": ref_id(line.get("invoice_line_item")),
        "type": text(line.get("type")),
        "amount_minor": integer(line.get("amount")),
        "quantity": integer(line.get("quantity")),
        "unit_amount_minor": integer(line.get("unit_amount")),
        "discount_minor": discount
        if discount is not None
        else integer(line.get("discount_amount")),
        "tax_minor": tax_total(taxes),
        "taxes": taxes,
        "stripe_created": created,
        "livemode": livemode,
    }
    return RowWrite(TABLE, object_id(line), values)


def apply_credit_note_lines(ctx: EventContext) -> Iterable[RowWrite]:
    """The lines of the credit note a credit note event carries (every page)."""
    note = ctx.obj
    note_id = object_id(note)
    created = integer(note.get("created"))
    writes: dict[str, RowWrite] = {}
    for line in all_lines(ctx, note, f"/v1/credit_notes/{note_id}/lines"):
        row = credit_note_line_row(
            line, credit_note_id=note_id, created=created, livemode=ctx.livemode
        )
        writes.setdefault(row.key, row)
    return list(writes.values())


def read_listed_line(ctx: EventContext) -> Iterable[RowWrite]:
    """A line as ``/v1/credit_notes/{id}/lines`` lists it (``credit_note`` set by the listing)."""
    note_id = ref_id(ctx.obj.get("credit_note"))
    if note_id is None:
        raise ValueError("credit note line without its credit note")
    return [
        credit_note_line_row(ctx.obj, credit_note_id=note_id, created=None, livemode=ctx.livemode)
    ]


RESOURCE = Resource(
    object_type="credit_note_line_item",
    table=StripeCreditNoteLineItem.__table__,
    key="stripe_credit_note_line_item_id",
    columns=COLUMNS,
    routes=(
        Route(("credit_note.*",), apply_credit_note_lines, frozenset({"credit_note"}), joins=True),
    ),
    readers=(Route((READER,), read_listed_line, frozenset({"credit_note_line_item"})),),
    listings=(
        Listing(
            "credit_note_lines",
            "/v1/credit_notes/{id}/lines",
            read_as=READER,
            created_filter=False,
            per_parent=PerParent(
                parent="credit_note", column="credit_note_id", field="credit_note"
            ),
        ),
    ),
    docs="https://docs.stripe.com/api/credit_notes/line_item",
)
