"""Readers shared by the invoice and credit note resources: tax amounts, summed
discount amounts, and line lists that an event embeds only in part.

Tax amounts changed shape with API version 2025-03-31.basil:

- before: ``tax_amounts`` (a line) / ``total_tax_amounts`` (an invoice, a credit
  note), each ``{amount, inclusive, tax_rate, taxability_reason, taxable_amount}``
  with ``tax_rate`` an id or an expanded tax rate;
- since: ``taxes`` / ``total_taxes``, each ``{amount, tax_behavior: inclusive |
  exclusive, tax_rate_details: {tax_rate}, taxability_reason, taxable_amount}``.

Both are stored as one list of :func:`tax_amounts` entries. A tax amount names its
rate only; the country, state and jurisdiction are the rate's (``stripe_tax_rates``),
copied here only where the payload expands the rate.
"""

from __future__ import annotations

from typing import Any

from stripe_pipeline.catalog.model import EventContext, PeerFailed
from stripe_pipeline.catalog.readers import (
    boolean,
    dig,
    integer,
    list_data,
    ref_id,
    required_integer,
    text,
)


def amount_sum(entries: Any) -> int | None:
    """Sum of the ``amount`` of a list of amount objects (``discount_amounts``);
    ``None`` when the payload has no such list (API versions before it)."""
    if entries is None:
        return None
    total = 0
    for entry in list_data(entries):
        if not isinstance(entry, dict):
            raise TypeError("an amount entry is not an object")
        total += integer(entry.get("amount")) or 0
    return total


def tax_amounts(obj: dict[str, Any], old_key: str, new_key: str) -> list[dict[str, Any]] | None:
    """The object's tax amounts (``new_key`` since basil, else ``old_key``), one dict
    each; ``None`` when it carries neither list (no tax computed, or an old version)."""
    basil = obj.get(new_key) is not None
    raw = obj.get(new_key) if basil else obj.get(old_key)
    if raw is None:
        return None
    out = []
    for entry in list_data(raw):
        if not isinstance(entry, dict):
            raise TypeError("a tax amount is not an object")
        if basil:
            rate = dig(entry, "tax_rate_details", "tax_rate")
            behavior = text(entry.get("tax_behavior"))
            inclusive = None if behavior is None else behavior == "inclusive"
        else:
            rate = entry.get("tax_rate")
            inclusive = boolean(entry.get("inclusive"))
        expanded = rate if isinstance(rate, dict) else {}
        out.append(
            {
                "tax_rate_id": ref_id(rate),
                "amount_minor": required_integer(entry, "amount"),
                "inclusive": inclusive,
                "taxable_amount_minor": integer(entry.get("taxable_amount")),
                "taxability_reason": text(entry.get("taxability_reason")),
                "country": text(expanded.get("country")),
                "state": text(expanded.get("state")),
                "jurisdiction": text(expanded.get("jurisdiction")),
            }
        )
    return out


def tax_total(taxes: list[dict[str, Any]] | None, fallback: Any = None) -> int | None:
    """Sum of the tax amounts; without a list, the payload's own total (``tax`` of an
    invoice before 2019, when tax was a percentage with no rate objects)."""
    if taxes is None:
        return integer(fallback)
    return sum(t["amount_minor"] for t in taxes)


def all_lines(ctx: EventContext, owner: dict[str, Any], path: str) -> list[dict[str, Any]]:
    """Every line of an invoice or credit note.

    An event embeds the first page (``lines``); when it says ``has_more``, the rest
    come from the context's :class:`~stripe_pipeline.catalog.model.LineSource`
    (every page of ``path``; its failure is the event's, see ``PeerFailed``). Without
    one, the first page is stored with a note and the nightly lines listing adds the
    rest. A deletion event never asks (Stripe answers 404 for a deleted draft's
    lines): the lines it embeds are marked deleted, the nightly run marks the rest.
    """
    listed = owner.get("lines")
    lines = list_data(listed)
    if isinstance(listed, dict) and listed.get("has_more"):
        if ctx.line_source is not None and not ctx.event_type.endswith(".deleted"):
            try:
                lines = ctx.line_source.list_lines(path)
            except Exception as exc:
                raise PeerFailed(exc) from exc
        else:
            ctx.notes.append("lines truncated (has_more): the rest come from the lines listing")
    for line in lines:
        if not isinstance(line, dict):
            raise TypeError("a line is not an object")
    return lines
