"""Drill: a fifth of the billing, tax, checkout and fraud events are lost; one nightly
run restores every object field by field.

Stripe's side is the in-memory API (``MemoryApi``): the objects' final states in
their listings (lines per invoice and credit note, only open reviews, an open checkout
session no event ever announced) and every event in ``/v1/events``. The receiver side
lands four events in five through the real queue and processing; then one
reconciliation run (backfill included) must leave every row equal to what Stripe
states, column by column, on both backends, and a second run must find nothing. The
backfilled events, processed afterwards, add the facts only events carry (when a
session completed, a review closed).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from stripe_pipeline.catalog import CATALOG
from stripe_pipeline.catalog.model import Resource, same_value
from stripe_pipeline.land.envelope import envelope_from_event
from stripe_pipeline.land.store import insert_events
from stripe_pipeline.process.runner import process_pending
from stripe_pipeline.reconcile.compare import local_value
from stripe_pipeline.reconcile.parse import row_from_api_object, stated
from stripe_pipeline.reconcile.run import RunConfig, run_reconciliation
from tests.support import billing_objects as bo
from tests.support.events import make_event
from tests.support.reconciliation_traffic import MemoryApi

NOW = int(time.time())
T0 = NOW - 20 * 3600  # within the 30 days /v1/events keeps
MINE = (
    "invoice_totals",
    "invoice_line_item",
    "tax_rate",
    "credit_note",
    "credit_note_line_item",
    "checkout_session",
    "setup_intent",
    "early_fraud_warning",
    "review",
)


class Story:
    """Objects as Stripe ends up holding them, and the events that told it, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.clock = T0

    def event(self, event_type: str, obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.clock += 37
        self.events.append(make_event(event_type, obj, self.clock, **kwargs))
        return obj


def _story(fx: dict[str, Any]) -> tuple[Story, dict[str, list[dict[str, Any]]]]:
    s = Story()
    # tax rates: one renamed after creation
    ca = bo.tax_rate(fx, bo.CA_SALES_TAX, created=T0)
    s.event("tax_rate.created", ca)
    ca = s.event("tax_rate.updated", {**ca, "display_name": "CA Sales Tax"})
    de = s.event("tax_rate.created", bo.tax_rate(fx, bo.DE_VAT, created=T0))

    # invoices: a basil one through its lifecycle, one with 3 lines of which events
    # embed one (no line source: the rest only from the lines listing), a 2024 one
    lines1 = [
        bo.line_basil(fx, "il_d1", "in_d1", amount=2000, discount=200,
                      taxes=[bo.tax_basil(131, 1800)]),
        bo.line_basil(fx, "il_d2", "in_d1", amount=500, invoice_item="ii_d1",
                      price="price_setup", product="prod_setup", taxes=[bo.tax_basil(36, 500)]),
    ]  # fmt: skip
    in1 = dict(created=s.clock, customer="cus_d1", subscription="sub_d1")
    s.event("invoice.created", bo.invoice_basil(fx, "in_d1", lines1, status="draft", **in1))
    s.event("invoice.finalized", bo.invoice_basil(fx, "in_d1", lines1, status="open", **in1))
    in_d1 = s.event("invoice.paid", bo.invoice_basil(fx, "in_d1", lines1, **in1))
    lines2 = [bo.line_basil(fx, f"il_m{i}", "in_d2", amount=1000 + i) for i in range(3)]
    in2 = dict(created=s.clock, has_more=True, customer="cus_d2", subscription="sub_d2")
    s.event("invoice.finalized", bo.invoice_basil(fx, "in_d2", lines2, status="open", **in2))
    in_d2 = s.event("invoice.paid", bo.invoice_basil(fx, "in_d2", lines2, **in2))
    vat = bo.tax_2024(319, 1681, bo.DE_VAT)
    in_d3 = bo.invoice_2024(
        "in_d3",
        [bo.line_2024("il_d3", amount=2000, tax_amounts=[vat], invoice="in_d3")],
        created=s.clock,
    )
    s.event("invoice.payment_succeeded", in_d3, api_version="2023-10-16")

    # credit notes: one issued then voided, one refunded in the 2023 shape
    note_lines = [bo.credit_note_line_basil(fx, "cnli_d1", amount=500, invoice_line="il_d2",
                                            taxes=[bo.tax_basil(36, 500)])]  # fmt: skip
    note = bo.credit_note_basil(fx, "cn_d1", "in_d1", note_lines, customer="cus_d1",
                                created=s.clock)  # fmt: skip
    s.event("credit_note.created", note)
    cn_d1 = s.event("credit_note.voided", {**note, "status": "void", "voided_at": s.clock + 37})
    cn_d2 = bo.credit_note_2023("cn_d2", "in_d3", amount=1190, refund="re_d2", tax=190,
                                created=s.clock)  # fmt: skip
    s.event("credit_note.created", cn_d2, api_version="2023-10-16")

    # checkout: completed, paid later (async), expired, and one still open (no event)
    cs1 = s.event(
        "checkout.session.completed",
        bo.checkout_session(fx, "cs_d1", created=s.clock, payment_intent="pi_d1"),
    )
    pending = bo.checkout_session(fx, "cs_d2", created=s.clock, payment_status="unpaid")
    s.event("checkout.session.completed", pending)
    cs2 = s.event("checkout.session.async_payment_succeeded", {**pending, "payment_status": "paid"})
    cs3 = s.event(
        "checkout.session.expired",
        bo.checkout_session(fx, "cs_d3", status="expired", created=s.clock),
    )
    cs4 = bo.checkout_session(fx, "cs_d4", status="open", created=s.clock)

    # setup intents: fails then succeeds; another canceled
    base = dict(created=s.clock)
    s.event("setup_intent.created",
            bo.setup_intent(fx, "seti_d1", status="requires_payment_method",
                            last_setup_error=None, **base))  # fmt: skip
    s.event("setup_intent.setup_failed",
            bo.setup_intent(fx, "seti_d1", status="requires_payment_method", **base))  # fmt: skip
    seti1 = s.event("setup_intent.succeeded", bo.setup_intent(fx, "seti_d1", **base))
    s.event("setup_intent.created",
            bo.setup_intent(fx, "seti_d2", status="requires_payment_method",
                            last_setup_error=None, **base))  # fmt: skip
    seti2 = s.event(
        "setup_intent.canceled", bo.setup_intent(fx, "seti_d2", status="canceled", **base)
    )

    # Radar: a warning acted upon; a review closed as fraud, one still open
    warning = bo.early_fraud_warning(fx, "issfr_d1", created=s.clock)
    s.event("radar.early_fraud_warning.created", warning)
    efw = s.event("radar.early_fraud_warning.updated", {**warning, "actionable": False})
    s.event("review.opened", bo.review(fx, "prv_d1", created=s.clock))
    prv1 = s.event("review.closed", bo.review(fx, "prv_d1", open_=False, created=s.clock - 37))
    prv2 = s.event("review.opened", bo.review(fx, "prv_d2", created=s.clock, charge="ch_d2"))

    stripe = {
        "tax_rates": [ca, de],
        "invoices": [in_d1, in_d2, in_d3],
        "/v1/invoices/in_d2/lines": lines2,
        "credit_notes": [cn_d1, cn_d2],
        "checkout/sessions": [cs1, cs2, cs3, cs4],
        "setup_intents": [seti1, seti2],
        "radar/early_fraud_warnings": [efw],
        "reviews": [prv1, prv2],
        "events": s.events,
    }
    return s, stripe


def _deliver(engine: Engine, events: list[dict[str, Any]], source: str = "webhook") -> None:
    with engine.begin() as conn:
        insert_events(conn, [envelope_from_event(e) for e in events], source=source)
    report = process_pending(engine)
    assert report.dead_lettered == 0


def _expected_rows(api: MemoryApi) -> dict[tuple[str, str], tuple[Resource, dict[str, Any]]]:
    """What Stripe states for every object of these resources, as (type, key) -> values."""
    out = {}
    for object_type in MINE:
        resource = CATALOG.by_type[object_type]
        for listing in resource.listings:
            spec = listing.per_parent
            if spec is None:
                objects = [
                    o
                    for o in api.data.get(listing.path, [])
                    if object_type != "review" or o["id"] in ("prv_d1", "prv_d2")
                ]
            else:
                parent = CATALOG.by_type[spec.parent]
                parents = [o["id"] for o in api.data[parent.listings[0].path]]
                objects = [
                    {**child, spec.field: p}
                    for p in parents
                    for child in api.list_all(listing.path.replace("{id}", p))
                ]
            for obj in objects:
                write = row_from_api_object(
                    CATALOG, resource, listing.read_as, obj, observed_at=NOW
                )
                out[(object_type, write.key)] = (resource, stated(resource, write))
    return out


def _differences(engine: Engine, expected: dict) -> list[tuple[str, str, str, Any, Any]]:
    found = []
    with engine.connect() as conn:
        for (object_type, key), (resource, values) in expected.items():
            table = resource.table
            row = conn.execute(select(table).where(table.c[resource.key] == key)).mappings().first()
            if row is None:
                found.append((object_type, key, "<row>", None, "missing"))
                continue
            for column, want in values.items():
                got = local_value(resource, column, row[column])
                if not same_value(got, want):
                    found.append((object_type, key, column, got, want))
    return found


@pytest.mark.parametrize("offset", range(5))
def test_a_fifth_lost_one_nightly_run_restores_every_field(
    engine: Engine, stripe_fixtures, offset: int
) -> None:
    """Five drills: every event is among the lost ones in one of them."""
    story, stripe = _story(stripe_fixtures)
    api = MemoryApi(stripe)
    lost = story.events[offset::5]
    delivered = [e for e in story.events if e not in lost]
    assert len(lost) in (len(story.events) // 5, len(story.events) // 5 + 1)
    _deliver(engine, delivered)
    expected = _expected_rows(api)
    # totals 3, invoice lines 2 + 3 + 1, rates 2, credit notes 2 and their lines 2,
    # sessions 4, setup intents 2, a warning, reviews 2
    assert len(expected) == 3 + 6 + 2 + 2 + 2 + 4 + 2 + 1 + 2
    before = _differences(engine, expected)
    assert before, "the lost events must leave something to restore"
    lost_objects = {(d[0], d[1]) for d in before}
    # open session cs_d4 never had an event; in_d2's lines beyond the first page
    assert {("checkout_session", "cs_d4"), ("invoice_line_item", "il_m2")} <= lost_objects

    result = run_reconciliation(engine, api, RunConfig())
    assert result.counts["backfill"]["events_backfilled"] == len(lost)
    assert _differences(engine, expected) == []
    with engine.connect() as conn:
        unresolved = conn.execute(
            text(
                "SELECT object_type, object_id, kind, field FROM reconciliation_discrepancies "
                "WHERE status IN ('open', 'ticketed')"
            )
        ).all()
    assert unresolved == []
    clean = run_reconciliation(engine, api, RunConfig(backfill=False))
    assert {k: v for k, v in clean.counts["compare"]["found"].items() if v} == {}

    # the backfilled events add what only events say, and change no restored field
    report = process_pending(engine)
    assert report.processed == len(lost) and report.dead_lettered == 0
    assert _differences(engine, expected) == []
    facts = {
        "cs_d1": ("stripe_checkout_sessions", "stripe_checkout_session_id", "completed_at"),
        "cs_d3": ("stripe_checkout_sessions", "stripe_checkout_session_id", "expired_at"),
        "prv_d1": ("stripe_reviews", "stripe_review_id", "closed_at"),
    }
    with engine.connect() as conn:
        for key, (table, column, fact) in facts.items():
            value = conn.execute(
                text(f"SELECT {fact} FROM {table} WHERE {column} = :k"), {"k": key}
            ).scalar_one()
            assert value is not None, (key, fact)
        lines = conn.execute(
            text("SELECT count(*) FROM stripe_invoice_line_items WHERE invoice_id = 'in_d2'")
        ).scalar_one()
    assert lines == 3
