"""Dunning against localstripe: real failed intents and invoices, retries, strategies.

localstripe emits ``payment_intent.payment_failed`` for a declined confirmation but
never an ``invoice.payment_failed`` for a subscription's first invoice, and never a
``decline_code``; those events are built from the real objects it returns.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import stripe
from sqlalchemy import text

from stripe_pipeline.recover.open import handle_events
from stripe_pipeline.recover.retry import run_due_retries
from stripe_pipeline.recover.strategies import DEFAULT_POLICY
from stripe_pipeline.stripe_api import StripeApi
from tests.support.localstripe_peer import localstripe_session
from tests.support.recovery_peers import (
    RecordingApi,
    customer_with_card,
    failed_subscription_invoice,
    ls_request,
    set_default_card,
)

pytestmark = pytest.mark.slow


class Notes:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def notify(self, title, body, priority, details) -> None:
        self.sent.append((title, dict(details)))


@pytest.fixture(scope="module")
def localstripe():
    yield from localstripe_session()


@pytest.fixture(scope="module")
def plan(localstripe) -> str:
    api = StripeApi(localstripe.api_key, api_base=localstripe.base_url, requests_per_second=500)
    product = ls_request(api, "post", "/v1/products", {"name": "Pro", "type": "service"})
    plan_id = f"plan_{time.time_ns()}"
    ls_request(
        api,
        "post",
        "/v1/plans",
        {
            "id": plan_id,
            "product": product["id"],
            "amount": 1500,
            "currency": "usd",
            "interval": "month",
        },
    )
    return plan_id


@pytest.fixture
def api(localstripe, engine) -> StripeApi:
    return StripeApi(
        localstripe.api_key,
        api_base=localstripe.base_url,
        requests_per_second=500,
        audit_engine=engine,
    )


def _invoice_failed_event(invoice: dict) -> dict:
    return {
        "id": f"evt_{invoice['id']}_failed",
        "type": "invoice.payment_failed",
        "created": int(time.time()),
        "data": {"object": invoice},
    }


def _recovery(engine, rid: int) -> dict:
    with engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT * FROM payment_recovery_attempts WHERE id = :i"), {"i": rid})
            .mappings()
            .one()
        )


def test_declined_card_produces_a_real_failed_intent_and_a_retry_later_recovery(
    api, engine
) -> None:
    customer, pm = customer_with_card(api, "pm_card_chargeCustomerFail")
    with pytest.raises(stripe.CardError):
        ls_request(
            api,
            "post",
            "/v1/payment_intents",
            {
                "amount": 2000,
                "currency": "usd",
                "customer": customer["id"],
                "payment_method": pm["id"],
                "confirm": "true",
            },
        )
    events = [
        e
        for e in api.list_all("events", params={"type": "payment_intent.payment_failed"})
        if e["data"]["object"]["customer"] == customer["id"]
    ]
    assert len(events) == 1
    now = datetime.now(UTC)
    [decision] = handle_events(engine, events * 2, now=now)[:1]  # a redelivery changes nothing
    row = _recovery(engine, decision.recovery_id)
    assert row["recovery_strategy"] == "retry_later"
    assert row["last_error_type"] == "card_declined"
    assert row["status"] == "open" and row["recovery_key"].startswith("payment_intent:")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM payment_recovery_attempts")).scalar() == 1


def test_retry_succeeds_after_the_customer_gets_a_working_card(api, engine, plan) -> None:
    customer, _ = customer_with_card(api, "pm_card_chargeCustomerFail")
    invoice = failed_subscription_invoice(api, customer["id"], plan)
    assert invoice["status"] == "open" and invoice["amount_due"] == 1500
    now = datetime.now(UTC)
    [opened] = handle_events(engine, [_invoice_failed_event(invoice)], now=now)
    assert opened.action == "opened" and opened.strategy == "retry_later"

    # not due yet: nothing happens
    assert run_due_retries(engine, api, now=now).claimed == 0
    # due, card still failing: one attempt, rescheduled by the retry schedule
    first_due = now + timedelta(days=1, seconds=1)
    summary = run_due_retries(engine, api, now=first_due)
    assert summary.outcomes["failed"] == 1
    row = _recovery(engine, opened.recovery_id)
    assert row["attempt_count"] == 1 and row["status"] == "open"

    good = ls_request(api, "get", "/v1/payment_methods/pm_card_visa")
    set_default_card(api, customer["id"], good["id"])
    summary = run_due_retries(engine, api, now=first_due + timedelta(days=3, seconds=1))
    assert summary.outcomes["succeeded"] == 1
    row = _recovery(engine, opened.recovery_id)
    assert row["status"] == "recovered" and row["closed_at"] is not None
    assert api.retrieve("invoices", invoice["id"])["status"] == "paid"
    with engine.connect() as conn:
        actions = [r[0] for r in conn.execute(text("SELECT action FROM audit_log ORDER BY id"))]
        keys = [r[0] for r in conn.execute(text("SELECT idempotency_key FROM payment_attempts"))]
    assert {"recovery_opened", "recovery_retry_failed", "recovery_recovered"} <= set(actions)
    assert keys == [
        f"recovery-{opened.recovery_id}-attempt-1",
        f"recovery-{opened.recovery_id}-attempt-2",
    ]


def test_3ds_card_ends_in_customer_action(api, engine, plan) -> None:
    customer, _ = customer_with_card(api, "4000002760003184")
    invoice = failed_subscription_invoice(api, customer["id"], plan)
    notes = Notes()
    now = datetime.now(UTC)
    [opened] = handle_events(engine, [_invoice_failed_event(invoice)], now=now)
    summary = run_due_retries(engine, api, now=now + timedelta(days=2), notifier=notes)
    assert summary.outcomes["customer_action"] == 1
    row = _recovery(engine, opened.recovery_id)
    assert row["recovery_strategy"] == "customer_action"
    assert row["status"] == "awaiting_customer" and row["next_attempt_at"] is None
    assert notes.sent and notes.sent[0][1]["audience"] == "customer"
    # no blind retry while waiting for the customer
    assert run_due_retries(engine, api, now=now + timedelta(days=30)).claimed == 0


def test_requires_action_failure_event_is_customer_action(engine) -> None:
    event = {
        "id": "evt_3ds",
        "type": "payment_intent.payment_failed",
        "data": {
            "object": {
                "id": "pi_3ds",
                "object": "payment_intent",
                "customer": "cus_3ds",
                "status": "requires_action",
                "amount": 500,
                "currency": "eur",
                "last_payment_error": {"code": "authentication_required"},
            }
        },
    }
    notes = Notes()
    [decision] = handle_events(engine, [event], notifier=notes)
    assert decision.strategy == "customer_action" and len(notes.sent) == 1


@pytest.mark.parametrize("decline", ["stolen_card", "fraudulent", "lost_card"])
def test_do_not_retry_opens_a_ticket_and_never_calls_the_api(engine, decline) -> None:
    event = {
        "id": f"evt_{decline}",
        "type": "payment_intent.payment_failed",
        "data": {
            "object": {
                "id": f"pi_{decline}",
                "customer": "cus_x",
                "status": "requires_payment_method",
                "last_payment_error": {"code": "card_declined", "decline_code": decline},
            }
        },
    }
    [decision] = handle_events(engine, [event])
    assert decision.status == "blocked" and decision.ticket_id is not None
    recording = RecordingApi()
    later = datetime.now(UTC) + timedelta(days=60)
    assert run_due_retries(engine, recording, now=later).claimed == 0
    assert recording.calls_made == []
    row = _recovery(engine, decision.recovery_id)
    assert row["support_ticket_id"] == decision.ticket_id
    with engine.connect() as conn:
        ticket = conn.execute(
            text("SELECT priority, issue_type FROM payment_support_tickets WHERE id = :i"),
            {"i": decision.ticket_id},
        ).one()
    assert ticket == ("high", "payment_recovery_blocked")


def test_exhausted_recovery_opens_a_linked_ticket(engine) -> None:
    class Declining(RecordingApi):
        def pay_invoice(self, invoice_id, **kw):
            super().pay_invoice(invoice_id, **kw)
            raise stripe.CardError("declined", None, "card_declined", http_status=402)

    event = _invoice_failed_event({"id": "in_ex", "customer": "cus_ex", "amount_due": 900})
    now = datetime.now(UTC)
    [opened] = handle_events(engine, [event], now=now)
    api = Declining()
    when = now
    for _ in range(len(DEFAULT_POLICY.strategies["retry_later"].retry_delays)):
        when += timedelta(days=8)
        run_due_retries(engine, api, now=when)
    row = _recovery(engine, opened.recovery_id)
    assert row["status"] == "exhausted" and row["attempt_count"] == 4
    assert row["support_ticket_id"] is not None
    assert len(api.calls_made) == 4


def test_success_event_closes_the_recovery(engine) -> None:
    event = _invoice_failed_event({"id": "in_ok", "customer": "cus_ok", "amount_due": 900})
    [opened] = handle_events(engine, [event])
    paid = {"id": "evt_paid", "type": "invoice.paid", "data": {"object": {"id": "in_ok"}}}
    [closed] = handle_events(engine, [paid])
    assert closed.recovery_id == opened.recovery_id and closed.status == "recovered"


def test_processing_hook_opens_then_closes_a_recovery(engine, stripe_fixtures) -> None:
    """Through the real appliers: the batch's live-recovery prefilter must not hide a
    recovery opened by an earlier batch; a batch that ends paid opens none."""
    import stripe_pipeline.recover.hook  # noqa: F401 - registers the post-apply hook
    from tests.support.events import apply_in_transaction, make_event

    base = {**stripe_fixtures["invoice"], "customer": "cus_hook", "amount_remaining": 700}
    t0 = 1_700_000_000

    def events(invoice_id: str) -> tuple[dict, dict]:
        inv = {**base, "id": invoice_id, "attempt_count": 1}
        failed = make_event("invoice.payment_failed", {**inv, "status": "open"}, t0)
        return failed, make_event("invoice.paid", {**inv, "status": "paid"}, t0 + 60)

    def recovery_statuses(invoice_id: str) -> list[str]:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    text("SELECT status FROM payment_recovery_attempts WHERE invoice_id = :i"),
                    {"i": invoice_id},
                ).scalars()
            )

    failed, paid = events("in_hook_two_batches")
    apply_in_transaction(engine, [failed])
    assert recovery_statuses("in_hook_two_batches") == ["open"]
    apply_in_transaction(engine, [paid])
    assert recovery_statuses("in_hook_two_batches") == ["recovered"]

    apply_in_transaction(engine, list(events("in_hook_one_batch")))
    assert recovery_statuses("in_hook_one_batch") == []
