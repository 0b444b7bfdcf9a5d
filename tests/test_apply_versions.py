"""Version tolerance: localstripe-era (2017) shapes against today's, ids against expanded
objects, missing optional fields, and zero- and three-decimal currencies.

The 2017 objects are hand-written after localstripe's resources.py (the shapes it
serves): ``invoice.charge`` / ``invoice.subscription``, ``subscription.plan`` with
``current_period_*`` at the top, charges with their ``refunds`` list, PaymentIntents
with a ``charges`` list.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.support.events import LEGACY_API_VERSION, apply_in_transaction, fetch_row, make_event

T0 = 1_500_000_000


def at(seconds):
    return datetime.fromtimestamp(seconds, UTC)


PLAN_2017 = {
    "id": "gold",
    "object": "plan",
    "amount": 2500,
    "currency": "eur",
    "interval": "month",
    "interval_count": 1,
    "product": "prod_gold",
}
SUB_2017 = {
    "id": "sub_old",
    "object": "subscription",
    "customer": "cus_old",
    "plan": PLAN_2017,
    "quantity": 2,
    "items": {
        "object": "list",
        "data": [{"id": "si_1", "object": "subscription_item", "plan": PLAN_2017, "quantity": 2}],
    },
    "status": "trialing",
    "current_period_start": T0,
    "current_period_end": T0 + 2_592_000,
    "trial_start": T0,
    "trial_end": T0 + 1_209_600,
    "cancel_at_period_end": False,
    "canceled_at": None,
    "ended_at": None,
    "created": T0,
}
INVOICE_2017 = {
    "id": "in_old",
    "object": "invoice",
    "customer": "cus_old",
    "subscription": "sub_old",
    "charge": "ch_old",
    "payment_intent": None,
    "amount_due": 5000,
    "attempt_count": 1,
    "attempted": True,
    "paid": True,
    "currency": "eur",
    "date": T0,
    "period_start": T0,
    "period_end": T0 + 2_592_000,
    "status_transitions": {"finalized_at": T0, "paid_at": T0 + 5, "voided_at": None},
}
REFUND_2017 = {
    "id": "re_old",
    "object": "refund",
    "amount": 500,
    "currency": "eur",
    "charge": "ch_old",
    "status": "succeeded",
    "created": T0 + 9,
}
CHARGE_2017 = {
    "id": "ch_old",
    "object": "charge",
    "amount": 5000,
    "amount_refunded": 500,
    "currency": "eur",
    "customer": "cus_old",
    "invoice": "in_old",
    "payment_intent": None,
    "payment_method": "pm_old",
    "status": "succeeded",
    "paid": True,
    "captured": True,
    "refunded": False,
    "failure_code": None,
    "failure_message": None,
    "refunds": {
        "object": "list",
        "data": [REFUND_2017],
        "has_more": False,
        "url": "/v1/charges/ch_old/refunds",
    },
    "created": T0 + 1,
}


def test_localstripe_era_subscription(engine):
    apply_in_transaction(
        engine,
        [make_event("customer.subscription.created", SUB_2017, T0, api_version=LEGACY_API_VERSION)],
    )
    row = fetch_row(engine, "stripe_subscriptions", "sub_old")
    assert (row["price_id"], row["product_id"], row["quantity"], row["unit_amount_minor"]) == (
        "gold",
        "prod_gold",
        2,
        2500,
    )
    assert (row["currency"], row["billing_interval"], row["billing_interval_count"]) == (
        "eur",
        "month",
        1,
    )
    assert row["current_period_start"] == at(T0) and row["current_period_end"] == at(T0 + 2_592_000)
    assert row["trial_end"] == at(T0 + 1_209_600)


def test_oldest_subscription_shape_without_items(engine):
    sub = {k: v for k, v in SUB_2017.items() if k != "items"}
    apply_in_transaction(engine, [make_event("customer.subscription.updated", sub, T0)])
    row = fetch_row(engine, "stripe_subscriptions", "sub_old")
    assert row["items"][0]["price_id"] == "gold" and row["quantity"] == 2


def test_localstripe_era_invoice(engine):
    apply_in_transaction(
        engine,
        [
            make_event(
                "invoice.payment_succeeded", INVOICE_2017, T0 + 5, api_version=LEGACY_API_VERSION
            )
        ],
    )
    row = fetch_row(engine, "stripe_invoices", "in_old")
    assert (row["subscription_id"], row["charge_id"], row["status"]) == (
        "sub_old",
        "ch_old",
        "paid",
    )
    assert row["paid_at"] == at(T0 + 5) and row["stripe_created"] == T0


def test_new_invoice_shape_reads_parent_and_payments(engine, stripe_fixtures):
    invoice = {
        **stripe_fixtures["invoice"],
        "status": "paid",
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": "sub_new"},
        },
        "payments": {
            "object": "list",
            "data": [
                {
                    "payment": {"type": "payment_intent", "payment_intent": "pi_first"},
                    "status": "canceled",
                },
                {
                    "payment": {
                        "type": "payment_intent",
                        "payment_intent": {"id": "pi_paid", "object": "payment_intent"},
                    },
                    "status": "paid",
                },
            ],
        },
        "status_transitions": {"paid_at": T0 + 7, "marked_uncollectible_at": None},
    }
    apply_in_transaction(engine, [make_event("invoice.paid", invoice, T0 + 7)])
    row = fetch_row(engine, "stripe_invoices", invoice["id"])
    assert (row["subscription_id"], row["payment_intent_id"], row["paid_at"]) == (
        "sub_new",
        "pi_paid",
        at(T0 + 7),
    )


def test_marked_uncollectible_without_transition_time_uses_event_time(engine, stripe_fixtures):
    invoice = {**stripe_fixtures["invoice"], "status": "uncollectible"}
    apply_in_transaction(engine, [make_event("invoice.marked_uncollectible", invoice, T0 + 3)])
    assert fetch_row(engine, "stripe_invoices", invoice["id"])["marked_uncollectible_at"] == at(
        T0 + 3
    )


def test_legacy_charge_without_payment_intent_keys_the_payment_by_charge(engine):
    apply_in_transaction(
        engine,
        [make_event("charge.refunded", CHARGE_2017, T0 + 10, api_version=LEGACY_API_VERSION)],
    )
    payment = fetch_row(engine, "stripe_payments", "ch_old")
    assert (
        payment["status"],
        payment["amount_received_minor"],
        payment["amount_refunded_minor"],
    ) == ("succeeded", 5000, 500)
    assert (payment["invoice_id"], payment["customer_id"], payment["stripe_created"]) == (
        "in_old",
        "cus_old",
        T0 + 1,
    )
    refund = fetch_row(engine, "stripe_refunds", "re_old")
    assert (refund["payment_intent_id"], refund["charge_id"], refund["amount_minor"]) == (
        "ch_old",
        "ch_old",
        500,
    )


def test_old_payment_intent_with_charges_list(engine):
    pi = {
        "id": "pi_old",
        "object": "payment_intent",
        "amount": 5000,
        "currency": "eur",
        "status": "succeeded",
        "amount_received": 5000,
        "customer": "cus_old",
        "payment_method": "pm_old",
        "created": T0,
        "charges": {
            "object": "list",
            "data": [
                {
                    **CHARGE_2017,
                    "payment_intent": "pi_old",
                    "payment_method_details": {"card": {"fingerprint": "fp_old"}},
                }
            ],
        },
    }
    apply_in_transaction(
        engine, [make_event("payment_intent.succeeded", pi, T0, api_version=LEGACY_API_VERSION)]
    )
    row = fetch_row(engine, "stripe_payments", "pi_old")
    assert (row["charge_id"], row["card_fingerprint"], row["amount_refunded_minor"]) == (
        "ch_old",
        "fp_old",
        500,
    )


def test_expanded_objects_read_like_ids(engine, stripe_fixtures):
    by_id = {
        **stripe_fixtures["payment_intent"],
        "id": "pi_a",
        "customer": "cus_1",
        "payment_method": "pm_1",
        "latest_charge": "ch_1",
    }
    expanded = {
        **by_id,
        "id": "pi_b",
        "customer": {"id": "cus_1", "object": "customer"},
        "payment_method": {
            "id": "pm_1",
            "object": "payment_method",
            "card": {"fingerprint": "fp_1"},
        },
        "latest_charge": {"id": "ch_1", "object": "charge"},
    }
    apply_in_transaction(
        engine,
        [
            make_event("payment_intent.created", by_id, T0),
            make_event("payment_intent.created", expanded, T0),
        ],
    )
    a, b = (
        fetch_row(engine, "stripe_payments", "pi_a"),
        fetch_row(engine, "stripe_payments", "pi_b"),
    )
    for column in ("customer_id", "payment_method_id", "charge_id"):
        assert a[column] == b[column] != None  # noqa: E711
    assert b["card_fingerprint"] == "fp_1"


def test_missing_optional_fields_are_null_not_errors(engine):
    minimal = [
        make_event(
            "payment_intent.created",
            {
                "id": "pi_min",
                "object": "payment_intent",
                "amount": 100,
                "currency": "usd",
                "status": "requires_payment_method",
            },
            T0,
        ),
        make_event("customer.created", {"id": "cus_min", "object": "customer"}, T0),
        make_event(
            "customer.subscription.created",
            {"id": "sub_min", "object": "subscription", "status": "incomplete"},
            T0,
        ),
        make_event("invoice.created", {"id": "in_min", "object": "invoice"}, T0),
        make_event("payment_method.attached", {"id": "pm_min", "object": "payment_method"}, T0),
        make_event(
            "charge.dispute.created",
            {
                "id": "dp_min",
                "object": "dispute",
                "amount": 5,
                "currency": "usd",
                "status": "needs_response",
                "charge": "ch_min",
            },
            T0,
        ),
    ]
    result = apply_in_transaction(engine, minimal)
    assert result.failures == {} and set(result.outcomes.values()) == {"processed"}
    assert fetch_row(engine, "stripe_subscriptions", "sub_min")["items"] == []
    # no status: an invoice from before statuses existed, unpaid, so open
    assert fetch_row(engine, "stripe_invoices", "in_min")["status"] == "open"
    assert fetch_row(engine, "stripe_disputes", "dp_min")["due_by"] is None


@pytest.mark.parametrize(
    ("code", "minor", "major"),
    [
        ("jpy", 1500, Decimal("1500")),
        ("kwd", 1234, Decimal("1.234")),
        ("usd", 1099, Decimal("10.99")),
    ],
)
def test_currency_exponents(engine, stripe_fixtures, code, minor, major):
    pi = {**stripe_fixtures["payment_intent"], "amount": minor, "currency": code.upper()}
    apply_in_transaction(engine, [make_event("payment_intent.succeeded", pi, T0)])
    row = fetch_row(engine, "stripe_payments", pi["id"])
    assert (row["amount_minor"], row["currency"]) == (minor, code)
    assert Decimal(str(row["amount"])) == major
