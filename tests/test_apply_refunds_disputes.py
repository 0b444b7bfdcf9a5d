"""Refunds from charge.refunded (listed, fetched, or neither) and the dispute lifecycle."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from stripe_pipeline.catalog.model import RefundSource
from stripe_pipeline.process.apply import apply_events
from tests.support.events import apply_in_transaction, fetch_row, make_event, queued

T0 = 1_700_000_000


def refund(fx, refund_id, amount, status="succeeded", charge="ch_1", pi="pi_1"):
    return {
        **copy.deepcopy(fx["refund"]),
        "id": refund_id,
        "amount": amount,
        "status": status,
        "charge": charge,
        "payment_intent": pi,
    }


def charge(fx, refunds=None, amount_refunded=300):
    obj = {
        **copy.deepcopy(fx["charge"]),
        "id": "ch_1",
        "payment_intent": "pi_1",
        "amount": 1000,
        "amount_refunded": amount_refunded,
        "refunded": False,
    }
    if refunds is None:
        obj.pop("refunds")  # API >= 2022-11-15: not included unless expanded
    else:
        obj["refunds"] = {"object": "list", "data": refunds, "has_more": False}
    return obj


class FakeRefundSource:
    """Stands in for the Stripe API client (built by another engineer), which lists a
    charge's refunds; it records the calls so the test sees the source was used."""

    def __init__(self, refunds=None, error=None):
        self.refunds, self.error, self.calls = refunds or [], error, []

    def list_charge_refunds(self, charge_id):
        self.calls.append(charge_id)
        if self.error:
            raise self.error
        return self.refunds


def test_fake_source_satisfies_the_protocol():
    assert isinstance(FakeRefundSource(), RefundSource)


def test_refunds_listed_on_the_charge_are_each_stored_once(engine, stripe_fixtures):
    fx = stripe_fixtures
    r1, r2 = refund(fx, "re_1", 100), refund(fx, "re_2", 200)
    result = apply_in_transaction(
        engine, [make_event("charge.refunded", charge(fx, [r1, r2, r1]), T0)]
    )
    assert result.rows_written["stripe_refunds"] == 2
    # the same refunds again, through refund.created and a later charge.refunded: still two rows
    apply_in_transaction(
        engine,
        [
            make_event("refund.created", r1, T0 - 1),
            make_event("charge.refunded", charge(fx, [r1, r2]), T0 + 1),
        ],
    )
    rows = [fetch_row(engine, "stripe_refunds", k) for k in ("re_1", "re_2")]
    assert [(r["amount_minor"], r["payment_intent_id"], r["charge_id"]) for r in rows] == [
        (100, "pi_1", "ch_1"),
        (200, "pi_1", "ch_1"),
    ]
    payment = fetch_row(engine, "stripe_payments", "pi_1")
    assert payment["amount_refunded_minor"] == 300 and payment["charge_id"] == "ch_1"


def test_refunds_fetched_when_not_expanded(engine, stripe_fixtures):
    fx = stripe_fixtures
    source = FakeRefundSource([refund(fx, "re_9", 300)])
    result = apply_in_transaction(
        engine, [make_event("charge.refunded", charge(fx), T0)], refund_source=source
    )
    assert source.calls == ["ch_1"] and result.failures == {}
    assert fetch_row(engine, "stripe_refunds", "re_9")["amount_minor"] == 300


def test_refund_source_failure_fails_only_that_event(engine, stripe_fixtures):
    fx = stripe_fixtures
    boom = ConnectionError("stripe unreachable")
    events = [
        queued(make_event("charge.refunded", charge(fx), T0)),
        queued(make_event("customer.created", fx["customer"], T0)),
    ]
    with engine.begin() as conn:
        result = apply_events(conn, events, refund_source=FakeRefundSource(error=boom))
    assert result.failures == {events[0].id: boom}  # the source's own exception, unwrapped
    assert result.outcomes == {events[1].id: "processed"}
    assert fetch_row(engine, "stripe_payments", "pi_1") is None


def test_without_source_only_the_refunded_amount_is_updated(engine, stripe_fixtures):
    result = apply_in_transaction(
        engine, [make_event("charge.refunded", charge(stripe_fixtures), T0)]
    )
    assert "refunds not expanded" in next(iter(result.notes.values()))
    assert fetch_row(engine, "stripe_payments", "pi_1")["amount_refunded_minor"] == 300
    assert result.rows_written.get("stripe_refunds", 0) == 0


def test_refund_lifecycle_events(engine, stripe_fixtures):
    fx = stripe_fixtures
    apply_in_transaction(
        engine,
        [
            make_event("refund.created", refund(fx, "re_5", 50, status="pending"), T0),
            make_event("charge.refund.updated", refund(fx, "re_5", 50, status="succeeded"), T0 + 1),
        ],
    )
    apply_in_transaction(
        engine,
        [
            make_event(
                "refund.failed",
                {
                    **refund(fx, "re_5", 50, status="failed"),
                    "failure_reason": "expired_or_canceled_card",
                },
                T0 + 2,
            )
        ],
    )
    row = fetch_row(engine, "stripe_refunds", "re_5")
    assert (row["status"], row["failure_reason"]) == ("failed", "expired_or_canceled_card")


def dispute(fx, status, txns=(), **extra):
    obj = {
        **copy.deepcopy(fx["dispute"]),
        "id": "dp_1",
        "status": status,
        "balance_transactions": list(txns),
    }
    obj.update(extra)
    return obj


@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_dispute_lifecycle(engine, stripe_fixtures, outcome):
    fx = stripe_fixtures
    withdrawal = {"object": "balance_transaction", "amount": -1000, "currency": "usd", "fee": 1500}
    reinstatement = {"object": "balance_transaction", "amount": 1000, "currency": "usd"}
    evidence = {**fx["dispute"]["evidence"], "uncategorized_text": "shipped, tracking attached"}
    steps = [
        ("charge.dispute.created", dispute(fx, "needs_response")),
        (
            "charge.dispute.updated",
            dispute(
                fx,
                "under_review",
                evidence=evidence,
                evidence_details={"due_by": 0, "has_evidence": True},
            ),
        ),
        (
            "charge.dispute.funds_withdrawn",
            dispute(fx, "under_review", [withdrawal], evidence=evidence),
        ),
    ]
    closed_txns = [withdrawal, reinstatement] if outcome == "won" else [withdrawal]
    steps.append(("charge.dispute.closed", dispute(fx, outcome, closed_txns, evidence=evidence)))
    if outcome == "won":
        steps.append(
            ("charge.dispute.funds_reinstated", dispute(fx, "won", closed_txns, evidence=evidence))
        )
    seen = []
    for i, (event_type, obj) in enumerate(steps):
        apply_in_transaction(engine, [make_event(event_type, obj, T0 + i)])
        row = fetch_row(engine, "stripe_disputes", "dp_1")
        seen.append(row["status"])
        if event_type == "charge.dispute.updated":
            assert row["due_by"] is None and row["has_evidence"] is True
            assert row["evidence"]["uncategorized_text"] == "shipped, tracking attached"
    assert seen[:3] == ["needs_response", "under_review", "under_review"]
    assert row["status"] == outcome
    assert row["funds_withdrawn_minor"] == 1000
    assert row["funds_reinstated_minor"] == (1000 if outcome == "won" else 0)
    assert row["closed_at"] == datetime.fromtimestamp(T0 + 3, UTC)
    # a late duplicate of "created" changes nothing
    apply_in_transaction(
        engine, [make_event("charge.dispute.created", dispute(fx, "needs_response"), T0)]
    )
    assert fetch_row(engine, "stripe_disputes", "dp_1")["status"] == outcome


def test_funds_withdrawn_without_balance_transactions_uses_the_amount(engine, stripe_fixtures):
    apply_in_transaction(
        engine,
        [
            make_event(
                "charge.dispute.funds_withdrawn",
                dispute(stripe_fixtures, "needs_response", amount=777),
                T0,
            )
        ],
    )
    assert fetch_row(engine, "stripe_disputes", "dp_1")["funds_withdrawn_minor"] == 777


@pytest.mark.parametrize(
    "status", ["warning_needs_response", "warning_under_review", "warning_closed", "prevented"]
)
def test_every_dispute_status_is_stored(engine, stripe_fixtures, status):
    apply_in_transaction(
        engine, [make_event("charge.dispute.updated", dispute(stripe_fixtures, status), T0)]
    )
    assert fetch_row(engine, "stripe_disputes", "dp_1")["status"] == status
