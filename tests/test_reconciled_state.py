"""The defects behind "every ticket the nightly run opened was false", one test each.

Canceled subscriptions are listed with ``status=all``; an uncaptured payment is
``requires_capture`` and the charges listing never overwrites its PaymentIntent;
two events of one second that their lifecycle cannot order leave a guess that the
nightly run replaces with Stripe's state; hostile but signed payloads fail alone.
Every test runs on SQLite and PostgreSQL against an in-memory Stripe that hides
what Stripe hides.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from sqlalchemy import Engine, text

from stripe_pipeline.reconcile.run import RunConfig, run_reconciliation
from stripe_pipeline.reconcile.window import to_unix
from tests.support.events import apply_in_transaction, fetch_row, make_event
from tests.support.reconciliation_traffic import MemoryApi

NOW = int(time.time())
T0 = NOW - 3000


def _rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).all()


def _obj(fx: dict, kind: str, object_id: str, **changes: Any) -> dict[str, Any]:
    found = copy.deepcopy(fx[kind])
    found.update(id=object_id, created=T0, livemode=False, **changes)
    return found


def _open_discrepancies(engine: Engine) -> list[Any]:
    return _rows(
        engine,
        "SELECT object_type, object_id, kind, field FROM reconciliation_discrepancies "
        "WHERE status IN ('open', 'ticketed') ORDER BY 1, 2, 3, 4",
    )


def test_canceled_subscription_whose_deletion_was_lost_is_repaired_not_missing(
    engine: Engine, stripe_fixtures: dict
) -> None:
    sub = _obj(stripe_fixtures, "subscription", "sub_gone", status="active")
    sub.update(canceled_at=None, ended_at=None, cancel_at=None, cancel_at_period_end=False)
    apply_in_transaction(engine, [make_event("customer.subscription.created", sub, T0)])
    # customer.subscription.deleted was lost; Stripe lists the subscription only with
    # status=all, which the declaration sends
    canceled = {**sub, "status": "canceled", "canceled_at": T0 + 60, "ended_at": T0 + 60}
    api = MemoryApi({"subscriptions": [canceled]})
    assert list(api.list_all("subscriptions")) == []  # hidden, as Stripe hides it
    result = run_reconciliation(engine, api, RunConfig(backfill=False))
    assert result.counts["compare"]["found"].get("missing_in_stripe", 0) == 0
    row = _rows(
        engine,
        "SELECT status, canceled_at IS NOT NULL, deleted_at IS NOT NULL FROM stripe_subscriptions",
    )
    assert [tuple(r) for r in row] == [("canceled", True, True)]
    assert _open_discrepancies(engine) == []
    # a late customer.subscription.updated of the live subscription changes nothing
    apply_in_transaction(engine, [make_event("customer.subscription.updated", sub, T0 + 30)])
    assert _rows(engine, "SELECT status FROM stripe_subscriptions") == [("canceled",)]


def test_uncaptured_payment_is_requires_capture_and_charges_listing_keeps_it(
    engine: Engine, stripe_fixtures: dict
) -> None:
    pi = _obj(
        stripe_fixtures,
        "payment_intent",
        "pi_auth",
        status="requires_capture",
        amount=5000,
        amount_capturable=5000,
        amount_received=0,
        latest_charge="ch_auth",
        last_payment_error=None,
    )
    charge = _obj(
        stripe_fixtures,
        "charge",
        "ch_auth",
        payment_intent="pi_auth",
        status="succeeded",
        captured=False,
        amount=5000,
        amount_captured=0,
        amount_refunded=0,
    )
    charge.pop("refunds", None)
    # charge.succeeded (captured: false) outranks amount_capturable_updated in the
    # same second; both say requires_capture
    apply_in_transaction(
        engine,
        [
            make_event("payment_intent.amount_capturable_updated", pi, T0),
            make_event("charge.succeeded", charge, T0),
        ],
    )
    assert _rows(engine, "SELECT status, amount_received_minor FROM stripe_payments") == [
        ("requires_capture", 0)
    ]
    api = MemoryApi({"payment_intents": [pi], "charges": [charge]})
    result = run_reconciliation(engine, api, RunConfig(backfill=False))
    assert result.counts["compare"]["found"] == {}
    with engine.begin() as conn:  # corrupt: the nightly run repairs from the PaymentIntent
        conn.execute(text("UPDATE stripe_payments SET status = 'succeeded'"))
    run_reconciliation(engine, api, RunConfig(backfill=False))
    assert _rows(engine, "SELECT status FROM stripe_payments") == [("requires_capture",)]
    assert _open_discrepancies(engine) == []


def test_same_second_disagreement_is_queued_and_replaced_by_stripes_state(
    engine: Engine, stripe_fixtures: dict
) -> None:
    cus = _obj(stripe_fixtures, "customer", "cus_tie", email="first@example.com")
    apply_in_transaction(engine, [make_event("customer.created", cus, T0)])
    a = make_event("customer.updated", {**cus, "email": "a@example.com"}, T0 + 5, "evt_tie_b")
    b = make_event("customer.updated", {**cus, "email": "b@example.com"}, T0 + 5, "evt_tie_a")
    apply_in_transaction(engine, [a])
    result = apply_in_transaction(engine, [b])  # same second, same stage, other state
    assert result.stale_objects == 1
    assert _rows(engine, "SELECT object_type, object_id, reason FROM stale_objects") == [
        ("customer", "cus_tie", "same-second events disagree")
    ]
    # the same disagreement inside one batch is seen too
    other = _obj(stripe_fixtures, "customer", "cus_tie2")
    batch = [
        make_event("customer.updated", {**other, "name": "X"}, T0 + 7, "evt_t2_a"),
        make_event("customer.updated", {**other, "name": "Y"}, T0 + 7, "evt_t2_b"),
    ]
    assert apply_in_transaction(engine, batch).stale_objects == 1
    assert _rows(engine, "SELECT count(*) FROM stale_objects") == [(2,)]

    # Stripe says the customer's email is b@: the nightly run fetches both queued ones
    stripe_state = {**cus, "email": "b@example.com"}
    api = MemoryApi({"customers": [stripe_state, {**other, "name": "Y"}]})
    result = run_reconciliation(
        engine, api, RunConfig(backfill=False, object_types=("customer",), window_start=NOW)
    )
    assert result.counts["compare"]["fetched"] == {"customer": 2}
    emails = dict(_rows(engine, "SELECT stripe_customer_id, email FROM stripe_customers"))
    names = dict(_rows(engine, "SELECT stripe_customer_id, name FROM stripe_customers"))
    assert emails["cus_tie"] == "b@example.com" and names["cus_tie2"] == "Y"
    assert _rows(engine, "SELECT count(*) FROM stale_objects") == [(0,)]
    assert _open_discrepancies(engine) == []


def test_same_second_events_older_than_the_row_queue_nothing(
    engine: Engine, stripe_fixtures: dict
) -> None:
    """Drill finding: both webhooks of two quick updates were lost; the nightly run
    repaired the customer and backfilled both. Processed together they disagree within
    their second, yet both are older than the repaired row and change nothing: no guess
    was made, so nothing may be queued for a fetch."""
    cus = _obj(stripe_fixtures, "customer", "cus_old_pair", email="final@example.com")
    apply_in_transaction(engine, [make_event("customer.updated", cus, T0 + 100)])
    pair = [
        make_event("customer.updated", {**cus, "email": "a@example.com"}, T0 + 5, "evt_op_a"),
        make_event("customer.updated", {**cus, "email": "b@example.com"}, T0 + 5, "evt_op_b"),
    ]
    assert apply_in_transaction(engine, pair).stale_objects == 0
    assert _rows(engine, "SELECT count(*) FROM stale_objects") == [(0,)]
    assert fetch_row(engine, "stripe_customers", "cus_old_pair")["email"] == "final@example.com"


def test_same_second_events_that_agree_queue_nothing(engine: Engine, stripe_fixtures: dict):
    inv = _obj(stripe_fixtures, "invoice", "in_same", status="open")
    events = [
        make_event("invoice.finalized", inv, T0, "evt_s_1"),
        make_event("invoice.sent", inv, T0, "evt_s_2"),
    ]
    assert apply_in_transaction(engine, events).stale_objects == 0
    assert _rows(engine, "SELECT count(*) FROM stale_objects") == [(0,)]


def test_deleted_customers_payment_methods_are_fetched_when_their_list_answers_404(
    engine: Engine, stripe_fixtures: dict
) -> None:
    """Drill finding: customer.deleted lost, the nightly run fetches the customer (deleted)
    and then lists its payment methods, which Stripe answers with 404 (no such customer).
    That failed the whole run; now the customer's local methods are fetched by id."""
    cus = _obj(stripe_fixtures, "customer", "cus_gone", email="gone@example.com")
    pm = _obj(stripe_fixtures, "payment_method", "pm_gone", customer="cus_gone", type="card")
    apply_in_transaction(
        engine,
        [
            make_event("customer.created", cus, T0),
            make_event("payment_method.attached", pm, T0 + 1),
        ],
    )
    api = MemoryApi({"payment_methods": [pm]})
    api.deleted["cus_gone"] = "customer"
    result = run_reconciliation(
        engine, api, RunConfig(backfill=False, object_types=("customer", "payment_method"))
    )
    assert result.counts["compare"]["fetched"] == {"customer": 1, "payment_method": 1}
    assert _rows(engine, "SELECT deleted_at IS NOT NULL FROM stripe_customers") == [(True,)]
    assert _rows(engine, "SELECT customer_id, attached FROM stripe_payment_methods") == [
        ("cus_gone", True)
    ]
    assert _open_discrepancies(engine) == []


def test_a_state_the_nightly_run_found_right_is_kept_against_its_seconds_older_events(
    engine: Engine, stripe_fixtures: dict
) -> None:
    """Drill finding: two quick updates of a customer share a second; the second one's
    webhook arrived, the first one's was lost. The nightly run found the row equal to
    Stripe, then backfilled the lost event; processing it, the older change won the
    second's tie on its event id, reverted the name and queued a guess for the next
    night. A row found equal is now confirmed at the observation time."""
    cus = _obj(stripe_fixtures, "customer", "cus_twice", email="old@example.com", name="Old")
    first = {**cus, "email": "new@example.com"}  # the earlier change (its webhook lost)
    second = {**first, "name": "New"}  # the later change: Stripe's state
    apply_in_transaction(
        engine,
        [
            make_event("customer.created", cus, T0),
            make_event("customer.updated", second, T0 + 5, "evt_twice_a"),
        ],
    )
    result = run_reconciliation(
        engine,
        MemoryApi({"customers": [second]}),
        RunConfig(backfill=False, object_types=("customer",), window_start=T0 - 60),
    )
    assert result.counts["compare"]["found"] == {}
    assert result.counts["heal"]["confirmed_objects"] == 1
    late = apply_in_transaction(
        engine, [make_event("customer.updated", first, T0 + 5, "evt_twice_b")]
    )
    assert late.stale_objects == 0
    row = fetch_row(engine, "stripe_customers", "cus_twice")
    assert (row["email"], row["name"]) == ("new@example.com", "New")
    assert _rows(engine, "SELECT count(*) FROM stale_objects") == [(0,)]
    # an event of the observation second or later is newer than the confirmation
    newer = {**second, "name": "Newer"}
    apply_in_transaction(engine, [make_event("customer.updated", newer, int(time.time()) + 60)])
    assert fetch_row(engine, "stripe_customers", "cus_twice")["name"] == "Newer"


def test_a_deleted_customer_states_its_deletion_only(engine: Engine, stripe_fixtures: dict):
    """Drill finding: Stripe answers a deleted customer by id with ``{"id", "object",
    "deleted": true}``. Read as a full object, that stub "stated" an empty email, name
    and card: the nightly run erased what a customer whose deletion event was lost had
    said (and kept it for one whose deletion arrived), and a refresh of a customer
    already deleted moved its deletion time to the refresh."""
    kept = _obj(stripe_fixtures, "customer", "cus_kept", email="kept@example.com", name="K")
    lost = _obj(stripe_fixtures, "customer", "cus_lost", email="lost@example.com", name="L")
    apply_in_transaction(
        engine,
        [
            make_event("customer.created", kept, T0),
            make_event("customer.deleted", {**kept, "deleted": True}, T0 + 5),
            make_event("customer.created", lost, T0),  # its customer.deleted was lost
        ],
    )
    with engine.begin() as conn:  # a same-second guess about the deleted one, queued
        conn.execute(
            text(
                "INSERT INTO stale_objects (object_type, object_id, reason) "
                "VALUES ('customer', 'cus_kept', 'same-second events disagree')"
            )
        )
    api = MemoryApi()
    api.deleted.update({"cus_kept": "customer", "cus_lost": "customer"})
    result = run_reconciliation(
        engine, api, RunConfig(backfill=False, object_types=("customer",), window_start=T0 - 60)
    )
    assert result.counts["compare"]["fetched"] == {"customer": 2}
    rows = {key: fetch_row(engine, "stripe_customers", key) for key in ("cus_kept", "cus_lost")}
    assert to_unix(rows["cus_kept"]["deleted_at"]) == T0 + 5
    assert rows["cus_lost"]["deleted_at"] is not None
    assert [(r["email"], r["name"]) for r in rows.values()] == [
        ("kept@example.com", "K"),
        ("lost@example.com", "L"),
    ]
    found = _rows(engine, "SELECT object_id, kind, field, status FROM reconciliation_discrepancies")
    assert found == [("cus_lost", "field_mismatch", "deleted_at", "repaired")]


def test_a_late_detach_event_dates_a_detachment_the_nightly_run_repaired(
    engine: Engine, stripe_fixtures: dict
) -> None:
    """Drill finding: payment_method.detached was lost; the nightly run repaired
    ``attached`` from the API (a newer version) and backfilled the event, which then
    was older than the row and left ``detached_at`` empty for good."""
    pm = _obj(stripe_fixtures, "payment_method", "pm_late", customer="cus_pm", type="card")
    apply_in_transaction(engine, [make_event("payment_method.attached", pm, T0)])
    detached = {**pm, "customer": None}
    run_reconciliation(
        engine,
        MemoryApi({"payment_methods": [detached]}),
        RunConfig(backfill=False, object_types=("payment_method",), window_start=T0 - 60),
    )
    row = fetch_row(engine, "stripe_payment_methods", "pm_late")
    assert (row["attached"], row["detached_at"]) == (False, None)
    late = make_event(
        "payment_method.detached", detached, T0 + 10, previous_attributes={"customer": "cus_pm"}
    )
    apply_in_transaction(engine, [late])
    row = fetch_row(engine, "stripe_payment_methods", "pm_late")
    assert (row["attached"], to_unix(row["detached_at"])) == (False, T0 + 10)
    # an older detachment of the same state does not move it back; attaching clears it
    apply_in_transaction(engine, [make_event("payment_method.detached", detached, T0 + 5)])
    assert to_unix(fetch_row(engine, "stripe_payment_methods", "pm_late")["detached_at"]) == T0 + 10
    again = make_event(
        "payment_method.attached", {**pm, "customer": "cus_pm"}, int(time.time()) + 60
    )
    apply_in_transaction(engine, [again])
    row = fetch_row(engine, "stripe_payment_methods", "pm_late")
    assert (row["attached"], row["detached_at"]) == (True, None)


@pytest.mark.parametrize(
    ("event_type", "kind", "change", "reason"),
    [
        ("charge.dispute.created", "charge", {}, "carries a 'charge' object"),
        ("payment_intent.succeeded", "payment_intent", {"amount": -5}, "negative amount"),
        ("charge.succeeded", "charge", {"amount_refunded": -1}, "negative amount"),
        ("customer.updated", "customer", {"livemode": "false"}, "expected a boolean"),
        ("payment_intent.succeeded", "payment_intent", {"amount": 2**64}, "64-bit"),
        ("refund.updated", "refund", {"currency": "ÜSD"}, "not a currency code"),
        ("customer.updated", "customer", {"id": "cus_" + "x" * 300}, "longer than 255"),
        ("payment_intent.succeeded", "payment_intent", {"customer": "cus_" + "y" * 300}, "255"),
        ("invoice.paid", "invoice", {"attempt_count": 2**40}, "out of range"),
    ],
)
def test_hostile_signed_payloads_fail_alone(
    engine: Engine,
    stripe_fixtures: dict,
    event_type: str,
    kind: str,
    change: dict,
    reason: str,
) -> None:
    hostile = make_event(event_type, {**copy.deepcopy(stripe_fixtures[kind]), **change}, T0)
    good = make_event("customer.created", _obj(stripe_fixtures, "customer", "cus_ok"), T0)
    result = apply_in_transaction(engine, [hostile, good])
    failures = {type(e).__name__: str(e) for e in result.failures.values()}
    assert len(result.failures) == 1 and reason in next(iter(failures.values())), failures
    assert list(result.outcomes.values()) == ["processed"]
    assert _rows(engine, "SELECT stripe_customer_id FROM stripe_customers") == [("cus_ok",)]
    for table in ("stripe_payments", "stripe_disputes", "stripe_refunds", "stripe_invoices"):
        assert _rows(engine, f"SELECT count(*) FROM {table}") == [(0,)]
