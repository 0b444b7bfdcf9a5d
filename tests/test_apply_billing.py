"""Billing, tax, checkout and fraud events through processing, on both backends.

Every event type of issue 17's second half, in today's (basil) shape built from
Stripe's fixtures and in the shapes older API versions sent; each row checked against
hand-computed values. An invoice or credit note event that embeds only the first page
of lines (``has_more``) gets the rest from the line source peer; its failure is the
event's, temporary.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, text

from stripe_pipeline.catalog.model import LineSource
from stripe_pipeline.process.errors import classify
from tests.support import billing_objects as bo
from tests.support.events import (
    LEGACY_API_VERSION,
    apply_in_transaction,
    fetch_row,
    make_event,
)
from tests.support.reconciliation_traffic import MemoryApi

C = 1_772_323_200  # 2026-03-01 00:00 UTC


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(text(sql)).all()


class MemoryLines:
    """A :class:`LineSource` over the in-memory Stripe (every page of a lines list)."""

    def __init__(self, api: MemoryApi) -> None:
        self.api, self.paths = api, []

    def list_lines(self, path: str) -> list[dict[str, Any]]:
        self.paths.append(path)
        return list(self.api.list_all(path))


def _tax(rate: str, amount: int, taxable: int, inclusive: bool, **place: Any) -> dict[str, Any]:
    return {
        "tax_rate_id": rate,
        "amount_minor": amount,
        "inclusive": inclusive,
        "taxable_amount_minor": taxable,
        "taxability_reason": "standard_rated",
        "country": place.get("country"),
        "state": place.get("state"),
        "jurisdiction": place.get("jurisdiction"),
    }


def _basil_invoice(fx: dict, **kwargs: Any) -> tuple[dict, list[dict]]:
    """in_b1: a 20.00 subscription line with 2.00 off and a 5.00 setup fee, 7.25 % tax."""
    lines = [
        bo.line_basil(fx, "il_b1", "in_b1", amount=2000, discount=200,
                      taxes=[bo.tax_basil(131, 1800)]),
        bo.line_basil(fx, "il_b2", "in_b1", amount=500, invoice_item="ii_b1",
                      price="price_setup", product="prod_setup",
                      taxes=[bo.tax_basil(36, 500)], proration=True),
    ]  # fmt: skip
    return bo.invoice_basil(fx, "in_b1", lines, created=C, **kwargs), lines


def test_basil_invoice_stores_totals_taxes_and_every_line(engine, stripe_fixtures) -> None:
    invoice, _ = _basil_invoice(stripe_fixtures)
    apply_in_transaction(engine, [make_event("invoice.paid", invoice, C + 60)])
    totals = fetch_row(engine, "stripe_invoice_totals", "in_b1")
    assert (totals["subtotal_minor"], totals["discount_minor"], totals["tax_minor"]) == (
        2500,
        200,
        167,
    )
    assert totals["total_minor"] == 2500 - 200 + 167 and totals["currency"] == "usd"
    assert totals["taxes"] == [
        _tax(bo.CA_SALES_TAX, 131, 1800, False),
        _tax(bo.CA_SALES_TAX, 36, 500, False),
    ]
    sub_line = fetch_row(engine, "stripe_invoice_line_items", "il_b1")
    assert {k: sub_line[k] for k in ("invoice_id", "type", "subscription_id")} == {
        "invoice_id": "in_b1",
        "type": "subscription",
        "subscription_id": "sub_b1",
    }
    assert (sub_line["subscription_item_id"], sub_line["invoice_item_id"]) == ("si_b1", None)
    assert (sub_line["price_id"], sub_line["product_id"]) == ("price_pro_monthly", "prod_pro")
    assert (sub_line["amount_minor"], sub_line["discount_minor"], sub_line["tax_minor"]) == (
        2000,
        200,
        131,
    )
    assert sub_line["period_start"] == at(1_772_323_200) and sub_line["proration"] is False
    assert sub_line["stripe_created"] == C and sub_line["deleted_at"] is None
    fee = fetch_row(engine, "stripe_invoice_line_items", "il_b2")
    assert (fee["type"], fee["invoice_item_id"], fee["subscription_item_id"]) == (
        "invoiceitem",
        "ii_b1",
        None,
    )
    assert (fee["price_id"], fee["proration"], fee["tax_minor"]) == ("price_setup", True, 36)
    assert fee["taxes"] == [_tax(bo.CA_SALES_TAX, 36, 500, False)]


def test_invoice_shapes_of_2019_to_2024(engine, stripe_fixtures) -> None:
    """price and plan on the line, tax_amounts with an expanded rate (its country and
    jurisdiction kept), total_tax_amounts; lines of API versions before 2019-12-03 are
    keyed with their invoice (``sub_...`` is on every invoice of the subscription)."""
    vat = bo.tax_rate(stripe_fixtures, bo.DE_VAT)
    modern = bo.invoice_2024(
        "in_old1",
        [
            bo.line_2024("il_old1", amount=2000, tax_amounts=[bo.tax_2024(319, 1681, vat)]),
            bo.line_2024(
                "il_old2",
                amount=-500,
                kind="invoiceitem",
                invoice_item="ii_credit",
                item=None,
                proration=True,
                discount=None,
            ),
        ],
    )
    ancient = bo.invoice_2024(
        "in_ancient",
        [
            bo.line_2024("sub_old", amount=3000, discount=None),
            bo.line_2024("ii_old9", amount=700, kind="invoiceitem", item=None, discount=None),
        ],
        itemised_discounts=False,
    )
    ancient.update(subtotal=3700, total=3400, tax=0)  # a coupon took 3.00 off
    del ancient["total_tax_amounts"]
    apply_in_transaction(
        engine,
        [
            make_event("invoice.payment_succeeded", modern, C, api_version=LEGACY_API_VERSION),
            make_event("invoice.payment_succeeded", ancient, C, api_version="2018-02-28"),
        ],
    )
    vat_tax = _tax(bo.DE_VAT, 319, 1681, True, country="DE", jurisdiction="DE")
    totals = fetch_row(engine, "stripe_invoice_totals", "in_old1")
    assert (totals["subtotal_minor"], totals["total_minor"], totals["tax_minor"]) == (
        1500,
        1500,
        319,
    )
    assert totals["discount_minor"] == 0 and totals["taxes"] == [vat_tax]
    line = fetch_row(engine, "stripe_invoice_line_items", "il_old1")
    assert (line["price_id"], line["product_id"], line["currency"]) == (
        "price_basic",
        "prod_basic",
        "eur",
    )
    assert (line["subscription_id"], line["subscription_item_id"]) == ("sub_old", "si_old")
    assert line["taxes"] == [vat_tax] and line["tax_minor"] == 319
    credit = fetch_row(engine, "stripe_invoice_line_items", "il_old2")
    assert (credit["amount_minor"], credit["type"], credit["invoice_item_id"]) == (
        -500,
        "invoiceitem",
        "ii_credit",
    )
    assert credit["discount_minor"] is None and credit["proration"] is True
    old_totals = fetch_row(engine, "stripe_invoice_totals", "in_ancient")
    assert (old_totals["discount_minor"], old_totals["tax_minor"]) == (300, 0)
    assert old_totals["taxes"] is None
    assert fetch_row(engine, "stripe_invoice_line_items", "sub_old") is None
    by_invoice = fetch_row(engine, "stripe_invoice_line_items", "in_ancient:sub_old")
    assert by_invoice["type"] == "subscription" and by_invoice["amount_minor"] == 3000
    item = fetch_row(engine, "stripe_invoice_line_items", "in_ancient:ii_old9")
    assert item["invoice_item_id"] == "ii_old9"


def test_deleted_draft_marks_its_lines_and_totals(engine, stripe_fixtures) -> None:
    draft, _ = _basil_invoice(stripe_fixtures, status="draft")
    apply_in_transaction(
        engine,
        [
            make_event("invoice.created", draft, C),
            make_event("invoice.deleted", draft, C + 30),
        ],
    )
    found = rows(
        engine,
        "SELECT stripe_line_item_id, deleted_at IS NOT NULL FROM stripe_invoice_line_items "
        "ORDER BY 1",
    )
    assert found == [("il_b1", True), ("il_b2", True)]
    assert fetch_row(engine, "stripe_invoice_totals", "in_b1")["deleted_at"] == at(C + 30)


def test_truncated_lines_are_fetched_through_the_line_source(engine, stripe_fixtures) -> None:
    fx = stripe_fixtures
    lines = [bo.line_basil(fx, f"il_m{i}", "in_many", amount=100 * (i + 1)) for i in range(3)]
    invoice = bo.invoice_basil(fx, "in_many", lines, has_more=True)
    assert len(invoice["lines"]["data"]) == 1 and invoice["lines"]["has_more"] is True
    api = MemoryApi()
    for line in lines:
        api.add("/v1/invoices/in_many/lines", line)
    source = MemoryLines(api)
    assert isinstance(source, LineSource)
    result = apply_in_transaction(
        engine,
        [make_event("invoice.finalized", invoice, C)],
        refund_source=None,
        line_source=source,
    )
    assert not result.failures and source.paths == ["/v1/invoices/in_many/lines"]
    found = rows(engine, "SELECT stripe_line_item_id, amount_minor FROM stripe_invoice_line_items")
    assert sorted(found) == [("il_m0", 100), ("il_m1", 200), ("il_m2", 300)]
    # the totals come from the invoice itself, whatever the embedded page holds
    assert fetch_row(engine, "stripe_invoice_totals", "in_many")["subtotal_minor"] == 600


def test_truncated_lines_without_a_source_keep_the_first_page(engine, stripe_fixtures) -> None:
    fx = stripe_fixtures
    lines = [bo.line_basil(fx, f"il_n{i}", "in_few", amount=100) for i in range(2)]
    invoice = bo.invoice_basil(fx, "in_few", lines, has_more=True)
    result = apply_in_transaction(engine, [make_event("invoice.finalized", invoice, C)])
    assert not result.failures
    assert "lines truncated" in next(iter(result.notes.values()))
    assert rows(engine, "SELECT stripe_line_item_id FROM stripe_invoice_line_items") == [("il_n0",)]


def test_line_source_failure_fails_only_that_event_as_temporary(engine, stripe_fixtures) -> None:
    fx = stripe_fixtures
    lines = [bo.line_basil(fx, f"il_f{i}", "in_fail", amount=100) for i in range(2)]
    truncated = bo.invoice_basil(fx, "in_fail", lines, has_more=True)
    whole, _ = _basil_invoice(fx)
    api = MemoryApi()
    api.fail_on = "lines"  # the peer answers with a connection error
    events = [make_event("invoice.paid", truncated, C), make_event("invoice.paid", whole, C)]
    result = apply_in_transaction(engine, events, line_source=MemoryLines(api))
    (failure,) = result.failures.values()
    assert isinstance(failure, ConnectionError) and classify(failure) == "temporary"
    assert fetch_row(engine, "stripe_invoices", "in_fail") is None  # nothing half-written
    assert fetch_row(engine, "stripe_invoice_totals", "in_fail") is None
    assert fetch_row(engine, "stripe_invoices", "in_b1") is not None


def test_credit_notes_and_their_lines(engine, stripe_fixtures) -> None:
    fx = stripe_fixtures
    note_line = bo.credit_note_line_basil(
        fx, "cnli_b1", amount=500, invoice_line="il_b2", taxes=[bo.tax_basil(36, 500)]
    )
    custom = bo.credit_note_line_basil(fx, "cnli_b2", amount=250, invoice_line=None)
    note = bo.credit_note_basil(fx, "cn_b1", "in_b1", [note_line, custom], refunds=["re_b1"])
    void_at = note["created"] + 7200
    voided = {**note, "status": "void", "voided_at": void_at, "reason": "order_change"}
    old = bo.credit_note_2023("cn_old1", "in_old1", amount=1190, refund="re_old1", tax=190)
    apply_in_transaction(
        engine,
        [
            make_event("credit_note.created", note, note["created"]),
            make_event("credit_note.updated", {**note, "reason": "order_change"}, void_at - 60),
            make_event("credit_note.voided", voided, void_at),
            make_event("credit_note.created", old, old["created"], api_version=LEGACY_API_VERSION),
        ],
    )
    row = fetch_row(engine, "stripe_credit_notes", "cn_b1")
    assert (row["invoice_id"], row["customer_id"], row["type"]) == (
        "in_b1",
        "cus_b1",
        "post_payment",
    )
    assert (row["amount_minor"], row["subtotal_minor"], row["total_minor"]) == (786, 750, 786)
    assert (row["tax_minor"], row["discount_minor"], row["refund_ids"]) == (36, 0, ["re_b1"])
    assert (row["status"], row["voided_at"]) == ("void", at(void_at))
    assert row["reason"] == "order_change"
    line = fetch_row(engine, "stripe_credit_note_line_items", "cnli_b1")
    assert (line["credit_note_id"], line["invoice_line_item_id"], line["type"]) == (
        "cn_b1",
        "il_b2",
        "invoice_line_item",
    )
    assert (line["amount_minor"], line["tax_minor"]) == (500, 36)
    custom_row = fetch_row(engine, "stripe_credit_note_line_items", "cnli_b2")
    assert (custom_row["type"], custom_row["unit_amount_minor"]) == ("custom_line_item", 250)
    old_row = fetch_row(engine, "stripe_credit_notes", "cn_old1")
    assert (old_row["refund_ids"], old_row["tax_minor"], old_row["status"]) == (
        ["re_old1"],
        190,
        "issued",
    )
    assert old_row["taxes"] == [_tax(bo.DE_VAT, 190, 1000, True)]
    assert fetch_row(engine, "stripe_credit_note_line_items", "cnli_old1")["tax_minor"] == 190


def test_truncated_credit_note_lines_are_fetched(engine, stripe_fixtures) -> None:
    fx = stripe_fixtures
    lines = [
        bo.credit_note_line_basil(fx, f"cnli_t{i}", amount=100, invoice_line=None) for i in range(3)
    ]
    note = bo.credit_note_basil(fx, "cn_many", "in_b1", lines, has_more=True)
    api = MemoryApi()
    for line in lines:
        api.add("/v1/credit_notes/cn_many/lines", line)
    apply_in_transaction(
        engine, [make_event("credit_note.created", note, C)], line_source=MemoryLines(api)
    )
    found = rows(
        engine, "SELECT credit_note_id, count(*) FROM stripe_credit_note_line_items GROUP BY 1"
    )
    assert found == [("cn_many", 3)]


def test_tax_rates(engine, stripe_fixtures) -> None:
    rate = bo.tax_rate(stripe_fixtures, bo.CA_SALES_TAX)
    archived = {**rate, "active": False, "display_name": "Sales Tax (old)"}
    apply_in_transaction(
        engine,
        [make_event("tax_rate.updated", archived, C + 10), make_event("tax_rate.created", rate, C)],
    )
    row = fetch_row(engine, "stripe_tax_rates", bo.CA_SALES_TAX)
    assert (row["percentage"], row["inclusive"], row["active"]) == (7.25, False, False)
    assert (row["country"], row["state"], row["jurisdiction"]) == ("US", "CA", "US - CA")
    assert (row["display_name"], row["tax_type"], row["jurisdiction_level"]) == (
        "Sales Tax (old)",
        "sales_tax",
        "state",
    )


def test_checkout_sessions_completed_async_and_expired(engine, stripe_fixtures) -> None:
    fx = stripe_fixtures
    paid = bo.checkout_session(fx, "cs_b1", payment_intent="pi_cs1")
    pending = bo.checkout_session(fx, "cs_b2", mode="payment", payment_status="unpaid")
    settled = {**pending, "payment_status": "paid"}
    failed = bo.checkout_session(fx, "cs_b3", payment_status="unpaid")
    expired = bo.checkout_session(fx, "cs_b4", status="expired")
    old = bo.checkout_session_2019("cs_old1")
    apply_in_transaction(
        engine,
        [
            make_event("checkout.session.completed", paid, C + 100),
            make_event("checkout.session.async_payment_succeeded", settled, C + 900),
            make_event("checkout.session.completed", pending, C + 100),  # arrives late
            make_event("checkout.session.completed", failed, C + 100),
            make_event("checkout.session.async_payment_failed", failed, C + 800),
            make_event("checkout.session.expired", expired, C + 86_400),
            make_event("checkout.session.completed", old, C, api_version="2019-05-16"),
        ],
    )
    row = fetch_row(engine, "stripe_checkout_sessions", "cs_b1")
    assert (row["status"], row["payment_status"], row["mode"]) == ("complete", "paid", "payment")
    assert (row["amount_total_minor"], row["currency"], row["payment_intent_id"]) == (
        4900,
        "usd",
        "pi_cs1",
    )
    assert (row["customer_email"], row["customer_name"]) == ("buyer@example.com", "Jordan Buyer")
    assert (row["completed_at"], row["expires_at"]) == (at(C + 100), at(C + 86_400))
    settled_row = fetch_row(engine, "stripe_checkout_sessions", "cs_b2")
    assert (settled_row["payment_status"], settled_row["completed_at"]) == ("paid", at(C + 100))
    failed_row = fetch_row(engine, "stripe_checkout_sessions", "cs_b3")
    assert (failed_row["status"], failed_row["payment_status"]) == ("complete", "unpaid")
    expired_row = fetch_row(engine, "stripe_checkout_sessions", "cs_b4")
    assert (expired_row["status"], expired_row["expired_at"]) == ("expired", at(C + 86_400))
    assert expired_row["customer_email"] is None and expired_row["completed_at"] is None
    old_row = fetch_row(engine, "stripe_checkout_sessions", "cs_old1")
    assert (old_row["status"], old_row["payment_status"], old_row["stripe_created"]) == (
        "complete",
        None,
        None,
    )
    assert (old_row["customer_email"], old_row["payment_intent_id"]) == (
        "old@example.com",
        "pi_old_checkout",
    )


def test_setup_intents_through_their_lifecycle_in_any_order(engine, stripe_fixtures) -> None:
    fx = stripe_fixtures
    created = bo.setup_intent(
        fx, "seti_b1", status="requires_payment_method", last_setup_error=None
    )
    failed = bo.setup_intent(fx, "seti_b1", status="requires_payment_method")
    succeeded = bo.setup_intent(fx, "seti_b1", status="succeeded")
    canceled = bo.setup_intent(fx, "seti_b2", status="canceled")
    apply_in_transaction(
        engine,
        [
            make_event("setup_intent.succeeded", succeeded, C + 20),
            make_event("setup_intent.setup_failed", failed, C + 10),
            make_event("setup_intent.created", created, C),
            make_event(
                "setup_intent.requires_action",
                {**created, "status": "requires_action", "next_action": {"type": "use_stripe_sdk"}},
                C + 3,
            ),
            make_event("setup_intent.canceled", canceled, C + 5),
        ],
    )
    row = fetch_row(engine, "stripe_setup_intents", "seti_b1")
    assert (row["status"], row["payment_method_id"], row["last_error_code"]) == (
        "succeeded",
        "pm_b1",
        None,
    )
    assert (row["customer_id"], row["usage"]) == ("cus_b1", "off_session")
    apply_in_transaction(engine, [make_event("setup_intent.setup_failed", failed, C + 30)])
    row = fetch_row(engine, "stripe_setup_intents", "seti_b1")
    assert (row["last_error_code"], row["last_error_decline_code"]) == (
        "card_declined",
        "insufficient_funds",
    )
    assert row["payment_method_id"] == "pm_b1"  # a failed attempt names none: kept
    other = fetch_row(engine, "stripe_setup_intents", "seti_b2")
    assert (other["status"], other["cancellation_reason"]) == ("canceled", "abandoned")


def test_early_fraud_warnings_and_reviews(engine, stripe_fixtures) -> None:
    fx = stripe_fixtures
    warning = bo.early_fraud_warning(fx, "issfr_b1")
    handled = {**warning, "actionable": False}
    # 2019: no payment_intent; the charge expanded names it
    old_warning = {
        "id": "issfr_old",
        "object": "radar.early_fraud_warning",
        "actionable": True,
        "charge": {"id": "ch_old", "object": "charge", "payment_intent": "pi_old"},
        "created": 1_560_000_000,
        "fraud_type": "card_never_received",
        "livemode": False,
    }
    opened = bo.review(fx, "prv_b1")
    closed = bo.review(fx, "prv_b1", open_=False)
    old_closed = bo.review_2019("prv_old", open_=False)
    apply_in_transaction(
        engine,
        [
            make_event("radar.early_fraud_warning.created", warning, C),
            make_event("radar.early_fraud_warning.updated", handled, C + 50),
            make_event(
                "radar.early_fraud_warning.created",
                old_warning,
                1_560_000_000,
                api_version="2019-05-16",
            ),
            make_event("review.closed", closed, C + 600),
            make_event("review.opened", opened, C),
            make_event("review.closed", old_closed, 1_709_900_000, api_version="2019-05-16"),
        ],
    )
    row = fetch_row(engine, "stripe_early_fraud_warnings", "issfr_b1")
    assert (row["charge_id"], row["payment_intent_id"], row["fraud_type"], row["actionable"]) == (
        "ch_b1",
        "pi_b1",
        "made_with_stolen_card",
        False,
    )
    old = fetch_row(engine, "stripe_early_fraud_warnings", "issfr_old")
    assert (old["charge_id"], old["payment_intent_id"]) == ("ch_old", "pi_old")
    review = fetch_row(engine, "stripe_reviews", "prv_b1")
    assert (review["open"], review["closed_reason"], review["opened_reason"]) == (
        False,
        "refunded_as_fraud",
        "rule",
    )
    assert review["closed_at"] == at(C + 600) and review["payment_intent_id"] == "pi_b1"
    old_review = fetch_row(engine, "stripe_reviews", "prv_old")
    assert (old_review["open"], old_review["closed_reason"]) == (False, "refunded_as_fraud")


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("invoice.paid", "checkout.session"),
        ("credit_note.created", "invoice"),
        ("checkout.session.completed", "invoice"),
        ("review.opened", "charge"),
    ],
)
def test_an_event_carrying_another_object_fails_alone(
    engine, stripe_fixtures, event_type: str, kind: str
) -> None:
    obj = copy.deepcopy(stripe_fixtures[kind])
    good = bo.tax_rate(stripe_fixtures)
    result = apply_in_transaction(
        engine, [make_event(event_type, obj, C), make_event("tax_rate.created", good, C)]
    )
    assert (
        len(result.failures) == 1 and classify(next(iter(result.failures.values()))) == "permanent"
    )
    assert fetch_row(engine, "stripe_tax_rates", bo.CA_SALES_TAX) is not None


@pytest.fixture(scope="module")
def localstripe():
    from tests.support.localstripe_peer import localstripe_session

    yield from localstripe_session()


@pytest.mark.slow
def test_thirteen_lines_from_localstripe_through_the_real_client(engine, localstripe) -> None:
    """localstripe embeds 10 lines and says has_more, as Stripe does; the pipeline's
    rate-limited client lists the rest (the peer the processing step hands in)."""
    from stripe_pipeline.stripe_api.client import StripeApi
    from tests.support.reconciliation_traffic import Traffic

    traffic = Traffic(localstripe)
    customer, _ = traffic.customer_with_card()
    traffic.subscription(customer, amount=1500)
    for i in range(12):
        traffic.post(
            "/v1/invoiceitems",
            {
                "customer": customer,
                "amount": str(100 + i),
                "currency": "usd",
                "description": f"seat {i}",
            },
        )
    invoice = traffic.post("/v1/invoices", {"customer": customer})
    assert len(invoice["lines"]["data"]) == 10 and invoice["lines"]["has_more"] is True
    client = StripeApi(localstripe.api_key, api_base=localstripe.base_url, requests_per_second=500)
    result = apply_in_transaction(
        engine,
        [
            make_event(
                "invoice.created", invoice, invoice["created"], api_version=LEGACY_API_VERSION
            )
        ],
        refund_source=client,  # the one peer processing passes; it lists lines too
    )
    assert not result.failures
    found = rows(
        engine,
        "SELECT type, count(*), sum(amount_minor) FROM stripe_invoice_line_items "
        f"WHERE invoice_id = '{invoice['id']}' GROUP BY type ORDER BY type",
    )
    assert found == [
        ("invoiceitem", 12, sum(100 + i for i in range(12))),
        ("subscription", 1, 1500),
    ]


def test_the_processing_steps_peer_lists_refunds_and_lines() -> None:
    from stripe_pipeline.catalog.model import RefundSource
    from stripe_pipeline.defs.processing.assets import LazyStripePeer

    peer = LazyStripePeer(api=None, database=None)  # type: ignore[arg-type]
    assert isinstance(peer, RefundSource) and isinstance(peer, LineSource)
