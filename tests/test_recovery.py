"""Dunning against localstripe: real failed intents and invoices, retries, strategies.

Every failure event goes through the real processing path (queue, appliers, the
processor's recovery hook, notifications after commit), as in production.
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

from stripe_pipeline.pipeline import build_processor
from stripe_pipeline.process.runner import process_pending
from stripe_pipeline.recover.retry import run_due_retries
from stripe_pipeline.recover.strategies import DEFAULT_POLICY
from stripe_pipeline.stripe_api import StripeApi
from stripe_pipeline.support.notify import Notification
from tests.support.localstripe_peer import localstripe_session
from tests.support.queue_events import load
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

    def notify(self, note: Notification) -> None:
        self.sent.append((note.title, dict(note.details)))


def _process(engine, events: list[dict], notifier: Notes | None = None) -> list[dict]:
    """Land the events and run the processor every entry point builds; returns the
    recoveries (oldest first)."""
    load(engine, events)
    report = process_pending(engine, processor=build_processor(notifier or Notes()))
    assert report.dead_lettered == 0 and report.retries_scheduled == 0
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM payment_recovery_attempts ORDER BY id"))
        return [dict(r) for r in rows.mappings()]


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
        "object": "event",
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
    [row] = _process(engine, events * 2)  # a redelivery changes nothing
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
    [opened] = _process(engine, [_invoice_failed_event(invoice)])
    assert opened["status"] == "open" and opened["recovery_strategy"] == "retry_later"

    # not due yet: nothing happens
    assert run_due_retries(engine, api, now=now).claimed == 0
    # due, card still failing: one attempt, rescheduled by the retry schedule
    first_due = now + timedelta(days=1, seconds=1)
    summary = run_due_retries(engine, api, now=first_due)
    assert summary.outcomes["failed"] == 1
    row = _recovery(engine, opened["id"])
    assert row["attempt_count"] == 1 and row["status"] == "open"

    good = ls_request(api, "get", "/v1/payment_methods/pm_card_visa")
    set_default_card(api, customer["id"], good["id"])
    summary = run_due_retries(engine, api, now=first_due + timedelta(days=3, seconds=1))
    assert summary.outcomes["succeeded"] == 1
    row = _recovery(engine, opened["id"])
    assert row["status"] == "recovered" and row["closed_at"] is not None
    assert api.retrieve("invoices", invoice["id"])["status"] == "paid"
    with engine.connect() as conn:
        actions = [r[0] for r in conn.execute(text("SELECT action FROM audit_log ORDER BY id"))]
        keys = [r[0] for r in conn.execute(text("SELECT idempotency_key FROM payment_attempts"))]
    assert {"recovery_opened", "recovery_retry_failed", "recovery_recovered"} <= set(actions)
    assert keys == [
        f"recovery-{opened['id']}-attempt-1",
        f"recovery-{opened['id']}-attempt-2",
    ]


def test_3ds_card_ends_in_customer_action(api, engine, plan) -> None:
    customer, _ = customer_with_card(api, "4000002760003184")
    invoice = failed_subscription_invoice(api, customer["id"], plan)
    notes = Notes()
    now = datetime.now(UTC)
    [opened] = _process(engine, [_invoice_failed_event(invoice)])
    summary = run_due_retries(engine, api, now=now + timedelta(days=2), notifier=notes)
    assert summary.outcomes["customer_action"] == 1
    row = _recovery(engine, opened["id"])
    assert row["recovery_strategy"] == "customer_action"
    assert row["status"] == "awaiting_customer" and row["next_attempt_at"] is None
    assert notes.sent and notes.sent[0][1]["audience"] == "customer"
    # no blind retry while waiting for the customer
    assert run_due_retries(engine, api, now=now + timedelta(days=30)).claimed == 0


def test_requires_action_failure_event_is_customer_action(engine) -> None:
    event = {
        "id": "evt_3ds",
        "object": "event",
        "type": "payment_intent.payment_failed",
        "created": int(time.time()),
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
    [row] = _process(engine, [event], notes)
    assert row["recovery_strategy"] == "customer_action" and row["status"] == "awaiting_customer"
    [(title, details)] = notes.sent
    assert title.startswith("Customer action needed") and details["recovery_id"] == row["id"]


@pytest.mark.parametrize("decline", ["stolen_card", "fraudulent", "lost_card"])
def test_do_not_retry_opens_a_ticket_and_never_calls_the_api(engine, decline) -> None:
    event = {
        "id": f"evt_{decline}",
        "object": "event",
        "type": "payment_intent.payment_failed",
        "created": int(time.time()),
        "data": {
            "object": {
                "id": f"pi_{decline}",
                "object": "payment_intent",
                "amount": 900,
                "currency": "usd",
                "customer": "cus_x",
                "status": "requires_payment_method",
                "last_payment_error": {"code": "card_declined", "decline_code": decline},
            }
        },
    }
    notes = Notes()
    [row] = _process(engine, [event], notes)
    assert row["status"] == "blocked" and row["support_ticket_id"] is not None
    assert [title for title, _ in notes.sent] == [
        f"Hard decline ({decline}) on {row['recovery_key']}: never retried"
    ]
    recording = RecordingApi()
    later = datetime.now(UTC) + timedelta(days=60)
    assert run_due_retries(engine, recording, now=later).claimed == 0
    assert recording.calls_made == []
    with engine.connect() as conn:
        ticket = conn.execute(
            text("SELECT priority, issue_type FROM payment_support_tickets WHERE id = :i"),
            {"i": row["support_ticket_id"]},
        ).one()
    assert ticket == ("high", "payment_recovery_blocked")


def test_exhausted_recovery_opens_a_linked_ticket(engine) -> None:
    class Declining(RecordingApi):
        def pay_invoice(self, invoice_id, **kw):
            super().pay_invoice(invoice_id, **kw)
            raise stripe.CardError("declined", None, "card_declined", http_status=402)

    event = _invoice_failed_event(_open_invoice("in_ex", "cus_ex"))
    now = datetime.now(UTC)
    [opened] = _process(engine, [event])
    api = Declining()
    when = now
    for _ in range(len(DEFAULT_POLICY.strategies["retry_later"].retry_delays)):
        when += timedelta(days=8)
        run_due_retries(engine, api, now=when)
    row = _recovery(engine, opened["id"])
    assert row["status"] == "exhausted" and row["attempt_count"] == 4
    assert row["support_ticket_id"] is not None
    assert len(api.calls_made) == 4


def _open_invoice(invoice_id: str, customer_id: str) -> dict:
    """An invoice whose first automatic payment attempt failed."""
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer_id,
        "status": "open",
        "attempt_count": 1,
        "amount_due": 900,
        "amount_remaining": 900,
        "currency": "usd",
    }


def _event(event_id: str, event_type: str, obj: dict, **extra) -> dict:
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": obj, **extra},
    }


def test_paid_invoice_closes_the_recovery(engine) -> None:
    [opened] = _process(engine, [_invoice_failed_event(_open_invoice("in_ok", "cus_ok"))])
    paid = {**_open_invoice("in_ok", "cus_ok"), "status": "paid", "amount_remaining": 0}
    [closed] = _process(engine, [_event("evt_paid", "invoice.paid", paid)])
    assert closed["id"] == opened["id"] and closed["status"] == "recovered"


def _failed_intent(pi_id: str, customer_id: str, status: str = "requires_action") -> dict:
    return {
        "id": pi_id,
        "object": "payment_intent",
        "customer": customer_id,
        "status": status,
        "amount": 500,
        "currency": "eur",
        "last_payment_error": {"code": "authentication_required"},
    }


def test_payment_success_closes_the_recovery_of_its_payment_intent(engine) -> None:
    """The hook's payment branch: a failure opens, a later success of the same
    PaymentIntent closes, and a success with no recovery waiting opens nothing."""
    failed = _failed_intent("pi_close", "cus_close", "requires_payment_method")
    failed["last_payment_error"] = {"code": "card_declined", "decline_code": "insufficient_funds"}
    [opened] = _process(engine, [_event("evt_pi_failed", "payment_intent.payment_failed", failed)])
    assert opened["status"] == "open" and opened["payment_intent_id"] == "pi_close"
    succeeded = {**failed, "status": "succeeded", "last_payment_error": None}
    later = _event("evt_pi_ok", "payment_intent.succeeded", succeeded)
    later["created"] += 60
    [closed] = _process(engine, [later])
    assert closed["status"] == "recovered" and closed["closed_at"] is not None
    other = {**succeeded, "id": "pi_fine", "customer": "cus_fine"}
    assert len(_process(engine, [_event("evt_fine", "payment_intent.succeeded", other)])) == 1


def test_a_new_default_card_resumes_a_recovery_waiting_for_the_customer(engine) -> None:
    """The hook's customer branch: ``customer.updated`` with a new default payment method
    makes the awaiting recovery due again now, with that card."""
    notes = Notes()
    failed = _event("evt_wait", "payment_intent.payment_failed", _failed_intent("pi_w", "cus_w"))
    [waiting] = _process(engine, [failed], notes)
    assert waiting["status"] == "awaiting_customer" and len(notes.sent) == 1
    customer = {"id": "cus_w", "object": "customer", "email": None}
    created = _event("evt_cus_w", "customer.created", customer)
    updated = _event(
        "evt_cus_w2",
        "customer.updated",
        {**customer, "invoice_settings": {"default_payment_method": "pm_new"}},
        previous_attributes={"invoice_settings": {"default_payment_method": None}},
    )
    updated["created"] += 60
    _process(engine, [created])
    [resumed] = _process(engine, [updated], notes)
    assert resumed["status"] == "open" and resumed["next_attempt_at"] is not None
    assert resumed["payment_method_id"] == "pm_new"
    assert len(notes.sent) == 1  # resuming tells no one; the retry run takes it from here


def test_an_attached_card_resumes_a_recovery_waiting_for_the_customer(engine) -> None:
    """The hook's payment-method branch: ``payment_method.attached`` to the waiting
    customer resumes the recovery; a card attached to someone else changes nothing."""
    failed = _event("evt_wait2", "payment_intent.payment_failed", _failed_intent("pi_a", "cus_a"))
    [waiting] = _process(engine, [failed])
    assert waiting["status"] == "awaiting_customer"

    def card(pm_id: str, customer_id: str) -> dict:
        return {
            "id": pm_id,
            "object": "payment_method",
            "type": "card",
            "customer": customer_id,
            "card": {"brand": "visa", "last4": "4242", "fingerprint": f"fp_{pm_id}"},
        }

    elsewhere = _event("evt_pm_b", "payment_method.attached", card("pm_b", "cus_b"))
    assert _process(engine, [elsewhere])[0]["status"] == "awaiting_customer"
    attached = _event("evt_pm_a", "payment_method.attached", card("pm_a", "cus_a"))
    [resumed] = _process(engine, [attached])
    assert resumed["status"] == "open" and resumed["payment_method_id"] == "pm_a"


def test_processing_hook_opens_then_closes_a_recovery(engine, stripe_fixtures) -> None:
    """Through the real appliers: the batch's live-recovery prefilter must not hide a
    recovery opened by an earlier batch; a batch that ends paid opens none."""
    from stripe_pipeline.recover.hook import RecoveryHook
    from tests.support.events import apply_in_transaction, make_event

    hooks = [RecoveryHook()]

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
    apply_in_transaction(engine, [failed], hooks=hooks)
    assert recovery_statuses("in_hook_two_batches") == ["open"]
    apply_in_transaction(engine, [paid], hooks=hooks)
    assert recovery_statuses("in_hook_two_batches") == ["recovered"]

    apply_in_transaction(engine, list(events("in_hook_one_batch")), hooks=hooks)
    assert recovery_statuses("in_hook_one_batch") == []
