"""The pure redaction rules: personal paths of every object type, quotes, audit entries."""

from __future__ import annotations

import copy

from stripe_pipeline.audit import AuditEntry
from stripe_pipeline.privacy.redact import (
    REDACTED,
    Quoted,
    blank_personal,
    quoted_in_payload,
    redact_audit_entry,
    redact_payload,
)
from tests.support.events import make_event


def test_every_personal_path_of_the_legacy_and_current_shapes(stripe_fixtures: dict) -> None:
    card = {
        "object": "card",
        "id": "card_1AbC",
        "name": "Ann Lee",
        "address_line1": "1 Elm St",
        "address_zip": "12345",
        "last4": "4242",
        "exp_month": 1,
        "exp_year": 2030,
        "brand": "Visa",
        "fingerprint": "fpAbC1",
    }
    customer = {
        **stripe_fixtures["customer"],
        "email": "ann@example.test",
        "name": "Ann Lee",
        "sources": {"object": "list", "data": [card]},
    }
    intent = {
        **stripe_fixtures["payment_intent"],
        "receipt_email": "ann@example.test",
        "charges": {
            "data": [{**stripe_fixtures["charge"], "billing_details": {"name": "Ann Lee"}}]
        },
        "last_payment_error": {
            "code": "card_declined",
            "payment_method": {
                **stripe_fixtures["payment_method"],
                "billing_details": {"email": "ann@example.test"},
            },
        },
    }
    legacy_dispute = {**stripe_fixtures["dispute"], "evidence": "Ann Lee signed for it"}
    session = {
        "object": "checkout.session",
        "id": "cs_test_a1B2",
        "customer_email": "ann@example.test",
        "customer_details": {"email": "ann@example.test", "name": "Ann Lee"},
        "amount_total": 500,
    }
    events = [
        make_event(
            "customer.updated", customer, 1, previous_attributes={"email": "old@example.test"}
        ),
        make_event("payment_intent.payment_failed", intent, 2),
        make_event("charge.dispute.created", legacy_dispute, 3),
        make_event("checkout.session.completed", session, 4),
        make_event("customer.source.created", card, 5),
    ]
    for event in events:
        original = copy.deepcopy(event)
        quoted = Quoted.of(quoted_in_payload(event))
        redacted, blanked = redact_payload(event, quoted)
        assert event == original  # the input is never mutated
        text = str(redacted)
        for secret in ("ann@example.test", "Ann Lee", "1 Elm St", "4242", "old@example.test"):
            assert secret not in text, (event["type"], secret)
        assert blanked > 0 and redacted["erased"] is True
        obj = redacted["data"]["object"]
        assert obj["id"] == event["data"]["object"]["id"]  # ids stay
    customer_out = redact_payload(events[0], Quoted.of(()))[0]["data"]["object"]
    assert customer_out["sources"]["data"][0]["fingerprint"] == "fpAbC1"
    assert customer_out["sources"]["data"][0]["brand"] == "Visa"
    intent_out = redact_payload(events[1], Quoted.of(()))[0]["data"]["object"]
    assert intent_out["last_payment_error"]["code"] == "card_declined"
    assert intent_out["amount"] == stripe_fixtures["payment_intent"]["amount"]


def test_quotes_are_replaced_but_ids_and_short_numbers_never() -> None:
    quoted = Quoted.of(
        ["ann@example.test", "Ann Lee", "US", "2024", "cus_AbC123", None, "+15550100"]
    )
    assert quoted.values == frozenset({"ann@example.test", "Ann Lee", "+15550100"})
    doc = {
        "note": "Mail ANN@example.test or call +15550100 (Ann Lee)",
        "id": "cus_AbC123",
        "date": "2024-05-01",
        "n": 2024,
        "list": ["Ann Lee"],
    }
    assert quoted.in_value(doc) == {
        "note": f"Mail {REDACTED} or call {REDACTED} ({REDACTED})",
        "id": "cus_AbC123",
        "date": "2024-05-01",
        "n": 2024,
        "list": [REDACTED],
    }


def test_blank_personal_columns_and_evidence() -> None:
    row = {
        "stripe_dispute_id": "dp_1",
        "amount_minor": 500,
        "evidence": {"customer_name": "Ann", "receipt": "file_1", "shipping_carrier": "UPS"},
    }
    out = blank_personal("stripe_disputes", row)
    assert out["evidence"] == {
        "customer_name": None,
        "receipt": "file_1",
        "shipping_carrier": "UPS",
    }
    assert blank_personal("stripe_customers", {"email": "a@b.c", "currency": "usd"}) == {
        "email": None,
        "currency": "usd",
    }
    assert blank_personal("stripe_refunds", {"reason": "duplicate"}) == {"reason": "duplicate"}


def test_audit_entries_of_objects_without_personal_fields_are_left_alone() -> None:
    entry = AuditEntry("event:evt_1", "upsert", "payment", "pi_1", "evt_1", None, {"status": "ok"})
    assert redact_audit_entry(entry) is entry
    card = AuditEntry(
        "event:evt_2",
        "upsert",
        "payment_method",
        "pm_1",
        "evt_2",
        {"card_last4": None, "attached": False},
        {"card_last4": "4242", "attached": True},
    )
    out = redact_audit_entry(card)
    assert out.before == {"card_last4": None, "attached": False}
    assert out.after == {"card_last4": REDACTED, "attached": True}
    assert out.details == {"personal_fields_changed": ["card_last4"]}
