"""Payloads of the oldest API versions (2013-2017), as real accounts still replay them:
disputes and refunds without ids, invoices without statuses or paid amounts, deleted
drafts, and legacy card sources. Each lands complete, or fails alone with a reason."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.support.events import apply_in_transaction, fetch_row, make_event

T0 = 1_380_000_000  # 2013
V2013 = "2013-08-13"


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_a_2013_dispute_without_id_is_keyed_by_its_charge_and_keeps_its_deadline(engine):
    dispute = {
        "object": "dispute",
        "charge": "ch_2013",
        "amount": 1500,
        "currency": "usd",
        "status": "needs_response",
        "reason": "general",
        "evidence": "The customer signed for it.",
        "evidence_due_by": T0 + 7 * 86400,
        "created": T0,
        "livemode": False,
    }
    result = apply_in_transaction(
        engine, [make_event("charge.dispute.created", dispute, T0, api_version=V2013)]
    )
    assert result.failures == {}
    row = fetch_row(engine, "stripe_disputes", "ch_2013")
    assert (row["payment_intent_id"], row["status"]) == ("ch_2013", "needs_response")
    assert row["due_by"] == at(T0 + 7 * 86400)
    assert row["evidence"] == {"uncategorized_text": "The customer signed for it."}


def test_a_2013_charge_refunded_with_id_less_refunds_keeps_the_payments_refund(engine):
    charge = {
        "id": "ch_r2013",
        "object": "charge",
        "paid": True,
        "captured": True,
        "refunded": True,
        "amount": 3000,
        "amount_refunded": 3000,
        "currency": "usd",
        "created": T0,
        "livemode": False,
        "refunds": [
            {"object": "refund", "amount": 1000, "currency": "usd", "created": T0 + 5},
            {"id": "re_r2013", "object": "refund", "amount": 2000, "currency": "usd"},
        ],
    }
    result = apply_in_transaction(
        engine, [make_event("charge.refunded", charge, T0 + 10, api_version=V2013)]
    )
    assert result.failures == {}
    (note,) = result.notes.values()
    assert "without an id" in note
    payment = fetch_row(engine, "stripe_payments", "ch_r2013")
    assert (payment["status"], payment["amount_refunded_minor"]) == ("succeeded", 3000)
    refund = fetch_row(engine, "stripe_refunds", "re_r2013")
    assert (refund["amount_minor"], refund["status"]) == (2000, "succeeded")


def test_legacy_invoices_get_statuses_and_paid_amounts(engine):
    base = {
        "object": "invoice",
        "customer": "cus_2013",
        "currency": "usd",
        "amount_due": 900,
        "total": 900,
        "date": T0,
        "livemode": False,
    }
    unpaid = {**base, "id": "in_unpaid", "paid": False, "closed": False, "attempted": True}
    closed = {**base, "id": "in_closed", "paid": False, "closed": True, "attempted": True}
    paid = {**base, "id": "in_paid", "paid": True, "closed": True, "attempted": True}
    forgiven = {**base, "id": "in_forgiven", "paid": False, "forgiven": True, "closed": True}
    events = [
        make_event("invoice.payment_failed", unpaid, T0 + 1, api_version=V2013),
        make_event("invoice.payment_failed", closed, T0 + 1, api_version=V2013),
        make_event("invoice.payment_succeeded", paid, T0 + 2, api_version=V2013),
        make_event("invoice.updated", forgiven, T0 + 3, api_version=V2013),
    ]
    assert apply_in_transaction(engine, events).failures == {}
    expected = {
        # unpaid: open; "closed" before 2018 meant retries stopped, not void
        "in_unpaid": ("open", 0, 900),
        "in_closed": ("open", 0, 900),
        "in_paid": ("paid", 900, 0),
        "in_forgiven": ("uncollectible", 0, 900),
    }
    for invoice_id, (status, paid_minor, remaining) in expected.items():
        row = fetch_row(engine, "stripe_invoices", invoice_id)
        got = (row["status"], row["amount_paid_minor"], row["amount_remaining_minor"])
        assert got == (status, paid_minor, remaining), invoice_id
        assert row["stripe_created"] == T0


def test_a_deleted_draft_is_marked_deleted_for_good(engine):
    draft = {
        "id": "in_draft",
        "object": "invoice",
        "status": "draft",
        "customer": "cus_1",
        "currency": "usd",
        "amount_due": 500,
        "created": T0,
    }
    events = [
        make_event("invoice.deleted", draft, T0 + 20),
        make_event("invoice.updated", draft, T0 + 10),  # older, arriving later
    ]
    assert apply_in_transaction(engine, events).failures == {}
    late = make_event("invoice.updated", {**draft, "amount_due": 700}, T0 + 30)
    apply_in_transaction(engine, [late])  # a deletion is terminal
    row = fetch_row(engine, "stripe_invoices", "in_draft")
    assert row["status"] == "draft" and row["deleted_at"] == at(T0 + 20)
    assert row["amount_due_minor"] == 500


def test_legacy_card_sources_reach_the_payment_methods(engine):
    card = {
        "id": "card_2013",
        "object": "card",
        "customer": "cus_2013",
        "brand": "Visa",
        "last4": "4242",
        "exp_month": 8,
        "exp_year": 2016,
        "fingerprint": "fp_2013",
    }
    bank = {"id": "ba_2013", "object": "bank_account", "customer": "cus_2013"}
    events = [
        make_event("customer.source.created", card, T0, api_version=V2013),
        make_event("customer.source.created", bank, T0, api_version=V2013),
    ]
    result = apply_in_transaction(engine, events)
    assert result.failures == {}
    row = fetch_row(engine, "stripe_payment_methods", "card_2013")
    assert (row["type"], row["card_last4"], row["card_fingerprint"], row["attached"]) == (
        "card",
        "4242",
        "fp_2013",
        True,
    )
    assert any("not a card" in n for n in result.notes.values())
    apply_in_transaction(
        engine, [make_event("customer.source.deleted", card, T0 + 60, api_version=V2013)]
    )
    row = fetch_row(engine, "stripe_payment_methods", "card_2013")
    assert row["attached"] is False and row["detached_at"] == at(T0 + 60)
