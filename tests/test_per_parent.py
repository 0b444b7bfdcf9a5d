"""``Listing.per_parent``: children listed per parent object (an invoice's lines).

Which parents a run lists, what it does with a child the parent's complete list no
longer holds, and what a parent gone from Stripe means for its children; on both
backends against the in-memory Stripe.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, text

from stripe_pipeline.reconcile.run import RunConfig, run_reconciliation
from tests.support import billing_objects as bo
from tests.support.events import apply_in_transaction, make_event
from tests.support.reconciliation_traffic import MemoryApi

NOW = int(time.time())


class RecordingApi(MemoryApi):
    """The in-memory Stripe, remembering which paths were listed."""

    def __init__(self, data: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(data)
        self.listed: list[str] = []

    def list_all(self, resource: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.listed.append(self._path(resource))
        return super().list_all(resource, **kwargs)


def _rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(text(sql)).all()


def test_lines_of_listed_and_local_parents_only(engine: Engine, stripe_fixtures) -> None:
    """A nightly run lists the lines of the invoices it listed and of local invoices
    created in its window, not of older ones; a line its invoice's complete list no
    longer holds has left it (marked deleted, nothing ticketed); a credit note line
    cannot leave its note: that one is reported."""
    fx = stripe_fixtures
    recent = bo.invoice_basil(
        fx,
        "in_recent",
        [bo.line_basil(fx, "il_r1", "in_recent", amount=1000)],
        created=NOW - 3600,
    )
    old = bo.invoice_basil(
        fx, "in_old", [bo.line_basil(fx, "il_o1", "in_old", amount=700)], created=NOW - 90 * 86400
    )
    note = bo.credit_note_basil(
        fx,
        "cn_recent",
        "in_recent",
        [bo.credit_note_line_basil(fx, "cnli_r1", amount=300, invoice_line="il_r1")],
        created=NOW - 3600,
    )
    # locally: the draft had a second line, since removed; the note a line Stripe lacks
    with_removed = {
        **recent,
        "status": "draft",
        "lines": bo.listed(
            recent["lines"]["data"] + [bo.line_basil(fx, "il_r2", "in_recent", amount=50)],
            "/v1/invoices/in_recent/lines",
        ),
    }
    stray = bo.credit_note_line_basil(fx, "cnli_stray", amount=1, invoice_line=None)
    local_note = {
        **note,
        "lines": bo.listed(note["lines"]["data"] + [stray], "/v1/credit_notes/cn_recent/lines"),
    }
    apply_in_transaction(
        engine,
        [
            make_event("invoice.created", with_removed, NOW - 3600),
            make_event("invoice.paid", old, NOW - 90 * 86400),
            make_event("credit_note.created", local_note, NOW - 3600),
        ],
    )
    api = RecordingApi({"invoices": [recent, old], "credit_notes": [note]})
    result = run_reconciliation(engine, api, RunConfig(backfill=False, window_start=NOW - 86400))
    assert "/v1/invoices/in_recent/lines" in api.listed
    assert "/v1/credit_notes/cn_recent/lines" in api.listed
    assert "/v1/invoices/in_old/lines" not in api.listed  # outside the window
    assert result.counts["compare"]["listed"]["invoice_lines"] == 1
    lines = dict(
        _rows(
            engine,
            "SELECT stripe_line_item_id, deleted_at IS NOT NULL FROM stripe_invoice_line_items",
        )
    )
    assert lines == {"il_r1": False, "il_r2": True, "il_o1": False}
    found = _rows(
        engine,
        "SELECT object_type, object_id, kind, status FROM reconciliation_discrepancies "
        "WHERE object_type LIKE '%line_item' ORDER BY object_type, object_id",
    )
    assert found == [
        ("credit_note_line_item", "cnli_stray", "missing_in_stripe", "open"),
        ("invoice_line_item", "il_r2", "deleted_in_stripe", "repaired"),
    ]
    # the next run: the removed line is deleted, not unseen again; the stray stays open
    again = run_reconciliation(engine, api, RunConfig(backfill=False, window_start=NOW - 86400))
    assert again.counts["compare"]["found"] == {"missing_in_stripe": 1}


def test_a_listed_child_names_the_parent_it_was_listed_under(
    engine: Engine, stripe_fixtures
) -> None:
    """Credit note lines never name their note, invoice lines before 2022 not their
    invoice: the per-parent listing sets it, and the rows are built from it."""
    fx = stripe_fixtures
    line = bo.line_2024("il_p1", amount=1200)  # no ``invoice`` field
    invoice = bo.invoice_2024("in_p1", [line], created=NOW - 600)
    api = MemoryApi({"invoices": [invoice]})
    run_reconciliation(engine, api, RunConfig(backfill=False))
    assert _rows(
        engine, "SELECT invoice_id, amount_minor, currency FROM stripe_invoice_line_items"
    ) == [("in_p1", 1200, "eur")]
    note = bo.credit_note_basil(
        fx,
        "cn_p1",
        "in_p1",
        [bo.credit_note_line_basil(fx, "cnli_p1", amount=100, invoice_line="il_p1")],
        created=NOW - 600,
    )
    api.add("credit_notes", note)
    run_reconciliation(engine, api, RunConfig(backfill=False))
    assert _rows(engine, "SELECT credit_note_id FROM stripe_credit_note_line_items") == [("cn_p1",)]
