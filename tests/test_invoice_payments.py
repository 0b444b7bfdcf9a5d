"""Invoice payments (API 2025-03-31.basil): stored, linked both ways whatever the order,
reconciled, and one failed subscription payment opens one recovery.

Since basil an invoice names no PaymentIntent and a PaymentIntent no invoice; the
InvoicePayment objects built here follow Stripe's documented shape (fixtures3.json
has placeholders, see ``tests/support/basil.py``).
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text, update

from stripe_pipeline.catalog.model import InvoicePaymentSource
from stripe_pipeline.db.models import StripeInvoice
from stripe_pipeline.pipeline import build_processor
from stripe_pipeline.process.apply import apply_events
from stripe_pipeline.process.errors import PermanentError
from stripe_pipeline.process.runner import process_pending
from stripe_pipeline.reconcile.run import RunConfig, run_reconciliation
from stripe_pipeline.recover.retry import run_due_retries
from stripe_pipeline.stripe_api import StripeApi
from stripe_pipeline.support.notify import LogNotifier
from tests.support.basil import invoice_payment, payment_intent, subscription_invoice
from tests.support.events import (
    apply_in_transaction,
    domain_state,
    fetch_row,
    make_event,
    queued,
)
from tests.support.localstripe_peer import localstripe_session
from tests.support.queue_events import load, make_due
from tests.support.reconciliation_traffic import MemoryApi
from tests.support.recovery_peers import RecordingApi

T0 = 1_760_000_000


def _rows(engine: Engine, sql: str, **params: Any) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params).all()]


# --- the resource --------------------------------------------------------------------


def test_invoice_payment_events_are_stored_in_stripes_shape(engine, stripe_fixtures) -> None:
    fx = stripe_fixtures
    paid = invoice_payment(
        fx,
        "inpay_1",
        invoice="in_1",
        payment_intent="pi_1",
        status="paid",
        amount=1999,
        created=T0,
        paid_at=T0 + 5,
    )
    # fixtures3's own example is a placeholder ("currency": "currency"): it fails alone
    placeholder = make_event("invoice_payment.paid", fx["invoice_payment"], T0)
    result = apply_in_transaction(
        engine, [make_event("invoice_payment.paid", paid, T0 + 5), placeholder]
    )
    assert list(result.outcomes.values()) == ["processed"]
    [failure] = result.failures.values()
    assert isinstance(failure, PermanentError) and "currency" in str(failure)

    row = fetch_row(engine, "stripe_invoice_payments", "inpay_1")
    assert {
        k: row[k] for k in ("invoice_id", "payment_type", "payment_intent_id", "charge_id")
    } == {
        "invoice_id": "in_1",
        "payment_type": "payment_intent",
        "payment_intent_id": "pi_1",
        "charge_id": None,
    }
    assert (row["status"], row["is_default"], row["currency"]) == ("paid", True, "usd")
    assert (row["amount_requested_minor"], row["amount_paid_minor"]) == (1999, 1999)
    assert row["paid_at"] == datetime.fromtimestamp(T0 + 5, UTC) and row["canceled_at"] is None
    assert Decimal(str(row["amount"])) == Decimal("19.99")
    assert row["last_event_rank"] == 3  # "paid" outranks an ordinary update of the same second

    # an open one has no amount paid yet; the preview shape names its PaymentIntent on top
    preview = invoice_payment(fx, "inpay_2", invoice="in_2", payment_intent="pi_2", created=T0)
    preview.pop("payment")
    preview["payment_intent"] = "pi_2"
    apply_in_transaction(engine, [make_event("invoice_payment.updated", preview, T0 + 1)])
    row = fetch_row(engine, "stripe_invoice_payments", "inpay_2")
    assert (row["payment_intent_id"], row["status"], row["amount_paid_minor"]) == (
        "pi_2",
        "open",
        None,
    )


def test_an_invoices_expanded_payments_are_stored_and_decide_its_links(
    engine, stripe_fixtures
) -> None:
    """A detached (canceled) default payment and the one that paid: the paid one is the
    invoice's PaymentIntent; both PaymentIntents name the invoice."""
    fx = stripe_fixtures
    inv = subscription_invoice(fx, "in_x", customer="cus_x", subscription="sub_x", status="paid")
    first = invoice_payment(
        fx, "inpay_xa", invoice="in_x", payment_intent="pi_xa", status="canceled", canceled_at=T0
    )
    second = invoice_payment(
        fx,
        "inpay_xb",
        invoice="in_x",
        payment_intent="pi_xb",
        status="paid",
        is_default=False,
        paid_at=T0 + 9,
    )
    second.pop("invoice")  # an entry of an invoice's list may leave its invoice out
    inv["payments"] = {"object": "list", "data": [second, first], "has_more": False}
    stored = [
        make_event(
            "payment_intent.canceled",
            payment_intent(fx, "pi_xa", customer="cus_x", status="canceled"),
            T0,
        ),
        make_event(
            "payment_intent.succeeded",
            payment_intent(fx, "pi_xb", customer="cus_x", status="succeeded"),
            T0 + 9,
        ),
    ]
    apply_in_transaction(engine, stored)
    result = apply_in_transaction(engine, [make_event("invoice.updated", inv, T0 + 10)])
    assert not result.failures
    assert fetch_row(engine, "stripe_invoices", "in_x")["payment_intent_id"] == "pi_xb"
    assert fetch_row(engine, "stripe_payments", "pi_xa")["invoice_id"] == "in_x"
    assert fetch_row(engine, "stripe_payments", "pi_xb")["invoice_id"] == "in_x"
    assert fetch_row(engine, "stripe_invoice_payments", "inpay_xb")["invoice_id"] == "in_x"
    assert fetch_row(engine, "stripe_invoice_payments", "inpay_xa")["status"] == "canceled"


def test_a_late_invoice_payment_links_stored_rows_for_the_audit_and_the_hooks(
    engine, stripe_fixtures
) -> None:
    fx = stripe_fixtures
    inv = subscription_invoice(fx, "in_l", customer="cus_l", subscription="sub_l", status="paid")
    pi = payment_intent(fx, "pi_l", customer="cus_l", status="succeeded")
    apply_in_transaction(
        engine,
        [make_event("invoice.paid", inv, T0), make_event("payment_intent.succeeded", pi, T0)],
    )
    assert fetch_row(engine, "stripe_invoices", "in_l")["payment_intent_id"] is None
    seen = []

    def hook(conn, changes):
        seen.extend(changes)
        return []

    ip = invoice_payment(
        fx, "inpay_l", invoice="in_l", payment_intent="pi_l", status="paid", paid_at=T0
    )
    event = make_event("invoice_payment.paid", ip, T0 + 1)
    apply_in_transaction(engine, [event], hooks=[hook])
    assert fetch_row(engine, "stripe_invoices", "in_l")["payment_intent_id"] == "pi_l"
    assert fetch_row(engine, "stripe_payments", "pi_l")["invoice_id"] == "in_l"
    linked = {(c.table, c.object_id): c for c in seen if c.table != "stripe_invoice_payments"}
    assert set(linked) == {("stripe_invoices", "in_l"), ("stripe_payments", "pi_l")}
    payment = linked[("stripe_payments", "pi_l")]
    assert payment.stripe_event_id == event["id"]
    assert (payment.before["invoice_id"], payment.after["invoice_id"]) == (None, "in_l")
    invoice = linked[("stripe_invoices", "in_l")]
    assert (invoice.before["payment_intent_id"], invoice.after["payment_intent_id"]) == (
        None,
        "pi_l",
    )
    audit = _rows(
        engine,
        "SELECT object_type, object_id, actor FROM audit_log WHERE action = 'link' "
        "ORDER BY object_type",
    )
    assert audit == [
        ("invoice", "in_l", f"event:{event['id']}"),
        ("payment", "pi_l", f"event:{event['id']}"),
    ]


def test_the_paid_invoice_payment_decides_the_link_over_an_invoice_payload(
    engine, stripe_fixtures
) -> None:
    """An older-version invoice payload names the PaymentIntent it was created with; the
    invoice payment that paid it names another one (the customer paid another way):
    the paid one is the link, whichever arrives last."""
    fx = stripe_fixtures
    ip = invoice_payment(
        fx, "inpay_o", invoice="in_o", payment_intent="pi_o2", status="paid", paid_at=T0
    )
    legacy = {
        **subscription_invoice(fx, "in_o", customer="cus_o", subscription="sub_o"),
        "payment_intent": "pi_o1",
    }
    apply_in_transaction(engine, [make_event("invoice_payment.paid", ip, T0)])
    apply_in_transaction(engine, [make_event("invoice.updated", legacy, T0 + 5)])
    assert fetch_row(engine, "stripe_invoices", "in_o")["payment_intent_id"] == "pi_o2"
    after = _rows(
        engine,
        "SELECT after FROM audit_log WHERE object_type = 'invoice' AND object_id = 'in_o'",
    )
    assert len(after) == 1  # the insert; its payment_intent_id never showed as pi_o1
    assert '"pi_o2"' in str(after[0][0]).replace("'", '"')


# --- links, whatever the order -------------------------------------------------------


def link_stream(fx: dict) -> tuple[list[dict], MemoryApi]:
    """Three invoices of one customer, each paid another way, and the lookup's answer.

    - in_p: a subscription payment that failed, then succeeded (pi_p); its failure's
      invoice payment comes from the lookup (open), its success as invoice_payment.paid;
    - in_q: paid out of band by a legacy charge (no PaymentIntent): linked by charge;
    - in_r: its default PaymentIntent (pi_r1) was canceled and detached, pi_r2 paid it
      (the invoice's expanded list states both, then pi_r2's payment is paid).
    """
    cus = "cus_p"
    e = make_event
    inv_p = subscription_invoice(fx, "in_p", customer=cus, subscription="sub_p", created=T0)
    pi_p = payment_intent(fx, "pi_p", customer=cus, status="requires_payment_method", created=T0)
    ip_p_open = invoice_payment(fx, "inpay_p", invoice="in_p", payment_intent="pi_p", created=T0)
    ip_p_paid = invoice_payment(
        fx,
        "inpay_p",
        invoice="in_p",
        payment_intent="pi_p",
        status="paid",
        created=T0,
        paid_at=T0 + 20,
    )
    inv_q = subscription_invoice(
        fx, "in_q", customer=cus, subscription="sub_p", status="paid", amount=900
    )
    charge_q = {
        **fx["charge"],
        "id": "ch_q",
        "payment_intent": None,
        "customer": cus,
        "amount": 900,
        "amount_captured": 900,
        "amount_refunded": 0,
        "status": "succeeded",
        "refunds": None,
    }
    charge_q.pop("invoice", None)
    ip_q = invoice_payment(
        fx,
        "inpay_q",
        invoice="in_q",
        charge="ch_q",
        status="paid",
        amount=900,
        created=T0 + 30,
        paid_at=T0 + 31,
    )
    inv_r = subscription_invoice(fx, "in_r", customer=cus, subscription="sub_r", created=T0 + 40)
    ip_r1 = invoice_payment(
        fx,
        "inpay_r1",
        invoice="in_r",
        payment_intent="pi_r1",
        status="canceled",
        created=T0 + 40,
        canceled_at=T0 + 41,
    )
    ip_r2 = invoice_payment(
        fx, "inpay_r2", invoice="in_r", payment_intent="pi_r2", is_default=False, created=T0 + 42
    )
    expanded_r = {
        **inv_r,
        "payments": {"object": "list", "data": [ip_r2, ip_r1], "has_more": False},
    }
    paid_r = subscription_invoice(
        fx, "in_r", customer=cus, subscription="sub_r", status="paid", created=T0 + 40
    )
    stream = [
        e("invoice.finalized", inv_p, T0),
        e("payment_intent.created", pi_p, T0 + 1),
        e(
            "payment_intent.payment_failed",
            payment_intent(
                fx,
                "pi_p",
                customer=cus,
                status="requires_payment_method",
                decline_code="insufficient_funds",
                created=T0,
            ),
            T0 + 10,
        ),
        e("invoice.payment_failed", {**inv_p, "attempt_count": 1}, T0 + 10),
        e(
            "payment_intent.succeeded",
            payment_intent(fx, "pi_p", customer=cus, status="succeeded", created=T0),
            T0 + 20,
        ),
        e("invoice_payment.paid", ip_p_paid, T0 + 20),
        e(
            "invoice.paid",
            {
                **inv_p,
                "status": "paid",
                "amount_paid": 1500,
                "amount_remaining": 0,
                "attempt_count": 2,
            },
            T0 + 21,
        ),
        e("charge.succeeded", charge_q, T0 + 30),
        e("invoice.paid", inv_q, T0 + 31),
        e("invoice_payment.paid", ip_q, T0 + 31),
        e("invoice.updated", expanded_r, T0 + 43),
        e(
            "payment_intent.canceled",
            payment_intent(fx, "pi_r1", customer=cus, status="canceled", created=T0 + 40),
            T0 + 41,
        ),
        e(
            "payment_intent.succeeded",
            payment_intent(fx, "pi_r2", customer=cus, status="succeeded", created=T0 + 42),
            T0 + 50,
        ),
        e(
            "invoice_payment.paid",
            {
                **ip_r2,
                "status": "paid",
                "amount_paid": 1500,
                "status_transitions": {"paid_at": T0 + 50, "canceled_at": None},
            },
            T0 + 50,
        ),
        e("invoice.paid", paid_r, T0 + 51),
    ]
    return stream, MemoryApi({"invoice_payments": [ip_p_open]})


def _apply_batches(conn, batches: list[list[dict]], api: MemoryApi) -> None:
    for batch in batches:
        result = apply_events(conn, [queued(e) for e in batch], invoice_payment_source=api)
        assert not result.failures, result.failures


def test_links_are_the_same_whatever_the_order_and_the_batches(engine, stripe_fixtures) -> None:
    stream, api = link_stream(stripe_fixtures)
    assert isinstance(api, InvoicePaymentSource)
    ordered = sorted(stream, key=lambda ev: (ev["created"], ev["id"]))
    with engine.connect() as conn:
        outer = conn.begin()
        _apply_batches(conn, [[event] for event in ordered], api)
        expected = domain_state(conn)
        outer.rollback()
    payments, invoices = expected["stripe_payments"], expected["stripe_invoices"]
    assert {k: payments[k]["invoice_id"] for k in ("pi_p", "ch_q", "pi_r1", "pi_r2")} == {
        "pi_p": "in_p",
        "ch_q": "in_q",
        "pi_r1": "in_r",
        "pi_r2": "in_r",
    }
    assert {k: (v["payment_intent_id"], v["charge_id"]) for k, v in invoices.items()} == {
        "in_p": ("pi_p", None),
        "in_q": (None, "ch_q"),
        "in_r": ("pi_r2", None),
    }
    assert expected["stripe_invoice_payments"]["inpay_p"]["status"] == "paid"

    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def run(data) -> None:
        events = data.draw(st.permutations(stream))
        events += data.draw(st.lists(st.sampled_from(stream), max_size=4))  # redeliveries
        cuts = sorted(data.draw(st.sets(st.integers(1, len(events) - 1), max_size=5)))
        batches = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
        with engine.connect() as conn:
            tx = conn.begin()
            try:
                _apply_batches(conn, batches, api)
                assert domain_state(conn) == expected
            finally:
                tx.rollback()

    run()


# --- reconciliation ------------------------------------------------------------------


def test_reconciliation_lands_invoice_payments_and_never_erases_a_link(
    engine, stripe_fixtures
) -> None:
    """Processing saw a basil failure (no link); the nightly run lists the invoice
    payment, repairs invoice and payment and links them; a clean second run finds
    nothing, and a later repair of the invoice keeps its link."""
    fx = stripe_fixtures
    now = int(time.time())
    created = now - 600
    inv = subscription_invoice(
        fx, "in_n", customer="cus_n", subscription="sub_n", attempt_count=1, created=created
    )
    pi = payment_intent(
        fx,
        "pi_n",
        customer="cus_n",
        status="requires_payment_method",
        decline_code="card_velocity_exceeded",
        created=created,
    )
    apply_in_transaction(
        engine,
        [
            make_event("invoice.payment_failed", inv, created + 1),
            make_event("payment_intent.payment_failed", pi, created + 1),
        ],
    )
    assert fetch_row(engine, "stripe_payments", "pi_n")["invoice_id"] is None
    ip = invoice_payment(
        fx,
        "inpay_n",
        invoice="in_n",
        payment_intent="pi_n",
        status="paid",
        created=created,
        paid_at=now - 60,
    )
    api = MemoryApi(
        {
            "invoices": [
                subscription_invoice(
                    fx,
                    "in_n",
                    customer="cus_n",
                    subscription="sub_n",
                    status="paid",
                    attempt_count=2,
                    created=created,
                )
            ],
            "payment_intents": [
                payment_intent(fx, "pi_n", customer="cus_n", status="succeeded", created=created)
            ],
            "invoice_payments": [ip],
        }
    )
    config = RunConfig(backfill=False, object_types=("payment", "invoice", "invoice_payment"))
    first = run_reconciliation(engine, api, config)
    assert first.counts["compare"]["found"]["missing_locally"] == 1  # the invoice payment
    assert fetch_row(engine, "stripe_payments", "pi_n")["invoice_id"] == "in_n"
    assert fetch_row(engine, "stripe_invoices", "in_n")["payment_intent_id"] == "pi_n"
    assert fetch_row(engine, "stripe_invoice_payments", "inpay_n")["status"] == "paid"
    linked = _rows(
        engine,
        "SELECT object_type, object_id FROM audit_log "
        "WHERE action = 'reconciliation_link' ORDER BY 1",
    )
    assert linked == [("invoice", "in_n"), ("payment", "pi_n")]

    clean = run_reconciliation(engine, api, config)
    assert clean.counts["compare"]["found"] == {}

    table = StripeInvoice.__table__
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.stripe_invoice_id == "in_n").values(status="open"))
    repaired = run_reconciliation(engine, api, config)
    assert repaired.counts["heal"]["repaired_objects"] == 1
    row = fetch_row(engine, "stripe_invoices", "in_n")
    assert (row["status"], row["payment_intent_id"]) == ("paid", "pi_n")


def test_the_nightly_run_settles_a_link_concurrent_batches_could_not_see(
    engine, stripe_fixtures
) -> None:
    """Two concurrent PostgreSQL batches, one writing the invoice payment and one its
    payment, cannot see each other's uncommitted row: the link stays empty (made here by
    clearing it). The nightly run recomputes the links of every row it lists."""
    fx = stripe_fixtures
    now = int(time.time())
    inv = subscription_invoice(
        fx, "in_c", customer="cus_c", subscription="sub_c", status="paid", created=now - 600
    )
    pi = payment_intent(fx, "pi_c", customer="cus_c", status="succeeded", created=now - 600)
    ip = invoice_payment(
        fx, "inpay_c", invoice="in_c", payment_intent="pi_c", status="paid", created=now - 600,
        paid_at=now - 500,
    )  # fmt: skip
    apply_in_transaction(
        engine,
        [
            make_event("invoice.paid", inv, now - 500),
            make_event("payment_intent.succeeded", pi, now - 500),
            make_event("invoice_payment.paid", ip, now - 500),
        ],
    )
    with engine.begin() as conn:
        conn.execute(text("UPDATE stripe_payments SET invoice_id = NULL"))
        conn.execute(text("UPDATE stripe_invoices SET payment_intent_id = NULL"))
    api = MemoryApi({"invoices": [inv], "payment_intents": [pi], "invoice_payments": [ip]})
    config = RunConfig(backfill=False, object_types=("payment", "invoice", "invoice_payment"))
    result = run_reconciliation(engine, api, config)
    assert result.counts["compare"]["found"] == {}  # nothing the API states differs
    assert result.counts["heal"]["links_settled"] == 2
    assert fetch_row(engine, "stripe_payments", "pi_c")["invoice_id"] == "in_c"
    assert fetch_row(engine, "stripe_invoices", "in_c")["payment_intent_id"] == "pi_c"
    again = run_reconciliation(engine, api, config)
    assert again.counts["heal"]["links_settled"] == 0


class UnreachableInvoicePayments:
    """A lookup peer whose connection fails (the real client raises the same class for
    an unreachable API); then it answers. localstripe has no such endpoint to break."""

    def __init__(self, answer: list[dict]) -> None:
        self.answer = answer
        self.down = True

    def list_payment_intent_invoice_payments(self, payment_intent_id: str) -> list[dict]:
        if self.down:
            import stripe

            raise stripe.APIConnectionError("connection refused")
        return self.answer


def test_a_failed_lookup_retries_the_event_until_the_api_answers(engine, stripe_fixtures) -> None:
    basil = Basil(stripe_fixtures, "down")
    peer = UnreachableInvoicePayments([basil.open_ip])
    failure = make_event(
        "payment_intent.payment_failed",
        basil.pi("requires_payment_method", "insufficient_funds"),
        basil.created + 60,
    )
    load(engine, [failure])
    report = process_pending(engine, processor=build_processor(LogNotifier(), peer=peer))
    assert report.retries_scheduled == 1 and report.dead_lettered == 0
    assert fetch_row(engine, "stripe_payments", basil.pi_id) is None
    [(status, context)] = _rows(
        engine,
        "SELECT status, error_context FROM stripe_events WHERE stripe_event_id = :e",
        e=failure["id"],
    )
    assert status == "retry" and "APIConnectionError" in str(context)

    peer.down = False
    make_due(engine)
    assert (
        process_pending(engine, processor=build_processor(LogNotifier(), peer=peer)).processed == 1
    )
    assert fetch_row(engine, "stripe_payments", basil.pi_id)["invoice_id"] == basil.invoice_id


@pytest.fixture(scope="module")
def localstripe():
    yield from localstripe_session()


@pytest.mark.slow
def test_an_api_without_invoice_payments_answers_none_and_processing_notes_it(
    localstripe, engine, stripe_fixtures
) -> None:
    """localstripe (a real HTTP peer) has no /v1/invoice_payments: the client answers
    None instead of failing the payment's event, which is stored with a note."""
    api = StripeApi(localstripe.api_key, api_base=localstripe.base_url, requests_per_second=500)
    assert api.list_payment_intent_invoice_payments("pi_unknown") is None
    pi = payment_intent(
        stripe_fixtures,
        "pi_ls",
        customer="cus_ls",
        status="requires_payment_method",
        decline_code="generic_decline",
    )
    with engine.begin() as conn:
        result = apply_events(
            conn,
            [queued(make_event("payment_intent.payment_failed", pi, T0))],
            invoice_payment_source=api,
        )
    assert list(result.outcomes.values()) == ["processed"]
    assert "cannot list invoice payments" in next(iter(result.notes.values()))


# --- dunning: one failure, one recovery ----------------------------------------------


class Basil:
    """One subscription payment of a basil account that fails, then succeeds."""

    def __init__(self, fx: dict, suffix: str) -> None:
        self.fx = fx
        self.invoice_id, self.pi_id = f"in_d{suffix}", f"pi_d{suffix}"
        self.customer = f"cus_d{suffix}"
        self.created = int(time.time()) - 900
        self.open_ip = invoice_payment(
            fx,
            f"inpay_d{suffix}",
            invoice=self.invoice_id,
            payment_intent=self.pi_id,
            created=self.created,
        )

    def invoice(self, **changes: Any) -> dict:
        inv = subscription_invoice(
            self.fx,
            self.invoice_id,
            customer=self.customer,
            subscription="sub_d",
            created=self.created,
        )
        return {**inv, **changes}

    def pi(self, status: str, decline_code: str | None = None) -> dict:
        return payment_intent(
            self.fx,
            self.pi_id,
            customer=self.customer,
            status=status,
            decline_code=decline_code,
            created=self.created,
        )

    def failure(self, order: str) -> list[dict]:
        """invoice.payment_failed and payment_intent.payment_failed, the first of
        ``order`` one second earlier (the queue claims by event time)."""
        t = self.created + 60
        invoice = make_event("invoice.payment_failed", self.invoice(attempt_count=1), t)
        pi = make_event(
            "payment_intent.payment_failed",
            self.pi("requires_payment_method", "insufficient_funds"),
            t,
        )
        first, second = (invoice, pi) if order == "invoice_first" else (pi, invoice)
        first["created"] -= 1
        return [first, second]

    def success(self) -> list[dict]:
        t = self.created + 120
        paid_ip = {
            **self.open_ip,
            "status": "paid",
            "amount_paid": 1500,
            "status_transitions": {"paid_at": t, "canceled_at": None},
        }
        return [
            make_event("payment_intent.succeeded", self.pi("succeeded"), t),
            make_event("invoice_payment.paid", paid_ip, t),
            make_event(
                "invoice.paid",
                self.invoice(status="paid", amount_paid=1500, amount_remaining=0, attempt_count=2),
                t + 1,
            ),
        ]


def _deliver(engine: Engine, events: list[dict], batches: str, peer: Any) -> None:
    """Through the queue and the real processing path (hooks included)."""
    groups = [events] if batches == "one_batch" else [[e] for e in events]
    for group in groups:
        load(engine, group)
        report = process_pending(
            engine, processor=build_processor(LogNotifier(), peer=peer), batch_size=50
        )
        assert report.dead_lettered == 0 and report.retries_scheduled == 0


def _recoveries(engine: Engine, basil: Basil) -> list[tuple]:
    return _rows(
        engine,
        "SELECT status, recovery_key, invoice_id, payment_intent_id FROM payment_recovery_attempts "
        "WHERE invoice_id = :i OR payment_intent_id = :p ORDER BY id",
        i=basil.invoice_id,
        p=basil.pi_id,
    )


LIVE = ("open", "awaiting_customer", "blocked", "exhausted")


@pytest.mark.parametrize("batches", ["one_batch", "separate_batches"])
@pytest.mark.parametrize("order", ["invoice_first", "payment_intent_first"])
def test_with_the_lookup_one_failure_opens_one_recovery_and_its_success_closes_it(
    engine, stripe_fixtures, order: str, batches: str
) -> None:
    basil = Basil(stripe_fixtures, f"{order[:3]}{batches[:3]}")
    api = MemoryApi({"invoice_payments": [basil.open_ip]})
    _deliver(engine, basil.failure(order), batches, api)
    assert _recoveries(engine, basil) == [
        ("open", f"invoice:{basil.invoice_id}", basil.invoice_id, basil.pi_id)
    ]
    assert fetch_row(engine, "stripe_payments", basil.pi_id)["invoice_id"] == basil.invoice_id
    assert api.calls == 1  # one lookup: the payment failure's

    retries = RecordingApi()
    run_due_retries(engine, retries, now=datetime.now(UTC) + timedelta(days=30))
    assert retries.calls_made == [("pay_invoice", basil.invoice_id)]

    basil2 = Basil(stripe_fixtures, f"{order[:3]}{batches[:3]}s")
    api2 = MemoryApi({"invoice_payments": [basil2.open_ip]})
    _deliver(engine, basil2.failure(order), batches, api2)
    success = basil2.success()
    random.Random(order + batches).shuffle(success)
    _deliver(engine, success, batches, api2)
    assert [r[0] for r in _recoveries(engine, basil2)] == ["recovered"]


@pytest.mark.parametrize("batches", ["one_batch", "separate_batches"])
@pytest.mark.parametrize("order", ["invoice_first", "payment_intent_first"])
def test_without_the_lookup_the_link_merges_the_two_recoveries_before_any_retry(
    engine, stripe_fixtures, order: str, batches: str
) -> None:
    """No API client for processing: the failure's two events cannot be linked and each
    opens a recovery (the parser notes why). The nightly listing of invoice payments brings
    the link, and the retry run merges them before it claims: one card attempt."""
    basil = Basil(stripe_fixtures, f"n{order[:3]}{batches[:3]}")
    _deliver(engine, basil.failure(order), batches, None)
    found = _recoveries(engine, basil)
    assert sorted(r[1] for r in found) == [
        f"invoice:{basil.invoice_id}",
        f"payment_intent:{basil.pi_id}",
    ]

    api = MemoryApi({"invoice_payments": [basil.open_ip]})
    run_reconciliation(engine, api, RunConfig(backfill=False, object_types=("invoice_payment",)))
    retries = RecordingApi()
    summary = run_due_retries(engine, retries, now=datetime.now(UTC) + timedelta(days=30))
    assert summary.merged == 1
    assert retries.calls_made == [("pay_invoice", basil.invoice_id)]
    after = _recoveries(engine, basil)
    assert [r for r in after if r[0] in LIVE] == []  # the retry succeeded
    assert sorted(r[0] for r in after) == ["canceled", "recovered"]
    merged = _rows(
        engine,
        "SELECT count(*) FROM audit_log "
        "WHERE action = 'recovery_merged' AND object_type = 'payment_recovery'",
    )
    assert merged == [(2,)]  # the duplicate's closing and the survivor's update


@pytest.mark.parametrize("first", ["payment_intent", "invoice_payment", "invoice"])
@pytest.mark.parametrize("batches", ["one_batch", "separate_batches"])
def test_without_the_lookup_the_success_merges_then_closes_the_one_recovery(
    engine, stripe_fixtures, batches: str, first: str
) -> None:
    """Whichever success event comes first (each closes what it can see), the case ends
    recovered once: the link, when it arrives, merges the other half into it."""
    basil = Basil(stripe_fixtures, f"ns{batches[:3]}{first[:3]}")
    _deliver(engine, basil.failure("invoice_first"), batches, None)
    assert len([r for r in _recoveries(engine, basil) if r[0] in LIVE]) == 2
    success = basil.success()
    success.sort(key=lambda e: not e["type"].startswith(first + "."))
    for n, event in enumerate(success):  # the queue claims by event time
        event["created"] = basil.created + 120 + n
    _deliver(engine, success, batches, None)
    after = _recoveries(engine, basil)
    assert sorted(r[0] for r in after) == ["canceled", "recovered"]
    recovered = next(r for r in after if r[0] == "recovered")
    assert recovered[2:] == (basil.invoice_id, basil.pi_id)


def test_a_charge_failure_processed_first_still_opens_one_recovery(engine, stripe_fixtures) -> None:
    """charge.failed usually comes with the PaymentIntent's failure and may be processed
    in an earlier batch: it looks the invoice payment up too."""
    fx = stripe_fixtures
    basil = Basil(fx, "ch")
    api = MemoryApi({"invoice_payments": [basil.open_ip]})
    charge = {
        **fx["charge"],
        "id": "ch_dch",
        "payment_intent": basil.pi_id,
        "customer": basil.customer,
        "status": "failed",
        "paid": False,
        "amount": 1500,
        "amount_captured": 0,
        "failure_code": "card_declined",
        "outcome": {"type": "issuer_declined", "reason": "insufficient_funds"},
        "refunds": None,
    }
    charge.pop("invoice", None)
    _deliver(
        engine, [make_event("charge.failed", charge, basil.created + 58)], "separate_batches", api
    )
    _deliver(engine, basil.failure("payment_intent_first"), "separate_batches", api)
    assert [r[:2] for r in _recoveries(engine, basil)] == [("open", f"invoice:{basil.invoice_id}")]


def test_a_hard_decline_on_one_half_is_never_retried_through_the_other(
    engine, stripe_fixtures
) -> None:
    """Without the lookup the PaymentIntent's half sees the issuer's "stolen card" and
    blocks; the invoice's half (no decline code on an invoice) would retry. Once the
    link is known the survivor takes the most severe strategy: nothing is charged."""
    basil = Basil(stripe_fixtures, "hard")
    t = basil.created + 60
    _deliver(
        engine,
        [
            make_event("invoice.payment_failed", basil.invoice(attempt_count=1), t),
            make_event(
                "payment_intent.payment_failed",
                basil.pi("requires_payment_method", "stolen_card"),
                t,
            ),
        ],
        "separate_batches",
        None,
    )
    assert sorted(r[0] for r in _recoveries(engine, basil)) == ["blocked", "open"]
    api = MemoryApi({"invoice_payments": [basil.open_ip]})
    run_reconciliation(engine, api, RunConfig(backfill=False, object_types=("invoice_payment",)))
    retries = RecordingApi()
    summary = run_due_retries(engine, retries, now=datetime.now(UTC) + timedelta(days=30))
    assert summary.merged == 1 and retries.calls_made == []
    after = _recoveries(engine, basil)
    assert sorted(r[:2] for r in after) == [
        ("blocked", f"invoice:{basil.invoice_id}"),
        ("canceled", f"payment_intent:{basil.pi_id}"),
    ]
    tickets = _rows(
        engine,
        "SELECT dedupe_key, status FROM payment_support_tickets "
        "WHERE issue_type = 'payment_recovery_blocked' ORDER BY id",
    )
    assert tickets == [
        (f"payment_recovery_blocked:payment_intent:{basil.pi_id}", "resolved"),
        (f"payment_recovery_blocked:invoice:{basil.invoice_id}", "open"),
    ]
