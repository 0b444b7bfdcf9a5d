"""Property: a shuffled stream with duplicates, applied in random batch splits, ends in
exactly the state of the ordered stream (Stripe delivers at least once, in any order)."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stripe_pipeline.process.apply import apply_events
from tests.support.events import domain_state, make_event, queued

T0 = 1_700_000_000


def lifecycle_stream(fx: dict) -> list[dict]:
    """Events about a handful of objects, several families per object, some in the same second."""
    pi = {
        **copy.deepcopy(fx["payment_intent"]),
        "id": "pi_p",
        "amount": 1000,
        "customer": "cus_p",
        "description": "order 7",
    }
    charge = {
        **copy.deepcopy(fx["charge"]),
        "payment_intent": "pi_p",
        "amount": 1000,
        "customer": "cus_p",
    }
    charge.pop("refunds")
    ch1 = {
        **charge,
        "id": "ch_p1",
        "status": "failed",
        "amount_captured": 0,
        "payment_method": "pm_p1",
        "failure_code": "card_declined",
        "outcome": {"type": "issuer_declined", "reason": "insufficient_funds"},
        "payment_method_details": {"card": {"fingerprint": "fp_A"}},
    }
    ch2 = {
        **charge,
        "id": "ch_p2",
        "status": "succeeded",
        "amount_captured": 1000,
        "payment_method": "pm_p2",
        "payment_method_details": {"card": {"fingerprint": "fp_B"}},
    }
    refund = {
        **copy.deepcopy(fx["refund"]),
        "id": "re_p",
        "charge": "ch_p2",
        "payment_intent": "pi_p",
        "amount": 400,
    }
    refunded = {
        **ch2,
        "amount_refunded": 400,
        "refunds": {"object": "list", "data": [{**refund, "status": "pending"}], "has_more": False},
    }
    dispute = {
        **copy.deepcopy(fx["dispute"]),
        "id": "dp_p",
        "charge": "ch_p2",
        "payment_intent": "pi_p",
        "amount": 600,
    }
    withdrawal = {"amount": -600, "currency": "usd"}
    cus = {**copy.deepcopy(fx["customer"]), "id": "cus_p"}
    sub = {**copy.deepcopy(fx["subscription"]), "id": "sub_p", "customer": "cus_p"}
    inv = {**copy.deepcopy(fx["invoice"]), "id": "in_p", "customer": "cus_p"}
    pm = {**copy.deepcopy(fx["payment_method"]), "id": "pm_p2"}
    e = make_event
    return [
        e("customer.created", cus, T0),
        e(
            "payment_intent.created",
            {
                **pi,
                "status": "requires_payment_method",
                "amount_received": 0,
                "last_payment_error": None,
            },
            T0,
        ),
        e("payment_method.attached", {**pm, "customer": "cus_p"}, T0 + 1),
        e("charge.failed", ch1, T0 + 2),
        e(
            "payment_intent.payment_failed",
            {
                **pi,
                "latest_charge": "ch_p1",
                "payment_method": None,
                "last_payment_error": {
                    "code": "card_declined",
                    "decline_code": "insufficient_funds",
                    "payment_method": {"id": "pm_p1"},
                },
            },
            T0 + 2,
        ),
        e(
            "payment_intent.requires_action",
            {
                **pi,
                "status": "requires_action",
                "payment_method": "pm_p2",
                "last_payment_error": None,
            },
            T0 + 3,
        ),
        e("charge.succeeded", ch2, T0 + 4),
        e(
            "payment_intent.succeeded",
            {
                **pi,
                "status": "succeeded",
                "amount_received": 1000,
                "latest_charge": "ch_p2",
                "payment_method": "pm_p2",
                "last_payment_error": None,
            },
            T0 + 4,
        ),
        e("charge.refunded", refunded, T0 + 6),
        e("charge.refund.updated", {**refund, "status": "succeeded"}, T0 + 7),
        e("charge.dispute.created", {**dispute, "status": "needs_response"}, T0 + 8),
        e(
            "charge.dispute.funds_withdrawn",
            {**dispute, "status": "needs_response", "balance_transactions": [withdrawal]},
            T0 + 9,
        ),
        e(
            "charge.dispute.updated",
            {**dispute, "status": "under_review", "balance_transactions": [withdrawal]},
            T0 + 9,
        ),
        e(
            "charge.dispute.closed",
            {**dispute, "status": "lost", "balance_transactions": [withdrawal]},
            T0 + 12,
        ),
        e("customer.subscription.created", {**sub, "status": "trialing"}, T0 + 1),
        e("customer.subscription.trial_will_end", {**sub, "status": "trialing"}, T0 + 5),
        e(
            "customer.subscription.updated",
            {**sub, "status": "past_due", "cancel_at_period_end": False},
            T0 + 8,
        ),
        e("customer.subscription.deleted", {**sub, "status": "canceled"}, T0 + 11),
        e("invoice.finalized", {**inv, "status": "open"}, T0 + 2),
        e("invoice.payment_failed", {**inv, "status": "open", "attempt_count": 1}, T0 + 3),
        e(
            "invoice.paid",
            {
                **inv,
                "status": "paid",
                "attempt_count": 2,
                "amount_paid": 1000,
                "amount_remaining": 0,
                "next_payment_attempt": None,
                "status_transitions": {"paid_at": T0 + 4},
            },
            T0 + 4,
        ),
        e(
            "payment_method.detached",
            {**pm, "customer": None},
            T0 + 5,
            previous_attributes={"customer": "cus_p"},
        ),
        e("payment_method.attached", {**pm, "customer": "cus_q"}, T0 + 7),
        e("customer.updated", {**cus, "email": "p@example.com"}, T0 + 10),
        e("customer.deleted", {**cus, "email": "p@example.com", "deleted": True}, T0 + 13),
        e("customer.updated", {**cus, "email": "late@example.com"}, T0 + 13),
        e("balance.available", {"object": "balance"}, T0 + 3),
    ]


def test_shuffled_duplicated_batched_stream_ends_in_ordered_state(engine, stripe_fixtures):
    stream = lifecycle_stream(stripe_fixtures)
    ordered = sorted(stream, key=lambda ev: (ev["created"], ev["id"]))
    with engine.connect() as conn:
        outer = conn.begin()
        for event in ordered:
            result = apply_events(conn, [queued(event)])
            assert not result.failures, result.failures
        expected = domain_state(conn)
        outer.rollback()
    assert expected["stripe_payments"]["pi_p"]["card_fingerprint"] == "fp_B"
    assert expected["stripe_customers"]["cus_p"]["deleted_at"] is not None

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def check(data):
        duplicates = data.draw(st.lists(st.sampled_from(stream), max_size=10))
        shuffled = data.draw(st.permutations(stream + duplicates))
        cuts = sorted(data.draw(st.sets(st.integers(1, len(shuffled) - 1), max_size=6)))
        batches = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
        with engine.connect() as conn:
            outer = conn.begin()
            for batch in batches:
                result = apply_events(conn, [queued(ev) for ev in batch])
                assert not result.failures, result.failures
            actual = domain_state(conn)
            outer.rollback()
        assert actual == expected

    check()
