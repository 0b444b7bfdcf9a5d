"""Erasure on both backends: nothing of the person left anywhere, figures unchanged,
repeatable, and an erased customer stays erased whatever arrives later.

The data is a whole customer story landed and processed the production way
(``tests/support/privacy_data.py``), plus a second customer who must be untouched.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from stripe_pipeline.audit import AUDIT_LOG
from stripe_pipeline.config import PrivacyOptions
from stripe_pipeline.db.models import metadata
from stripe_pipeline.model import load_project, run_project
from stripe_pipeline.privacy import guard
from stripe_pipeline.privacy.daily import run_daily_privacy
from stripe_pipeline.privacy.erase import ErasureError, erase_customer, erase_deleted_customers
from stripe_pipeline.privacy.redact import REDACTED
from stripe_pipeline.reconcile.run import RunConfig, run_reconciliation
from tests.support import privacy_data as pd
from tests.support.events import make_event
from tests.support.model_rows import assert_same_rows, fetch_rows
from tests.support.reconciliation_traffic import MemoryApi

PROJECT = load_project()
MARTS = ("payments_daily", "subscriptions_summary", "subscriptions_daily", "disputes_summary")
ADA, BOB = pd.ADA, pd.BOB


@pytest.fixture
def seeded(engine: Engine, stripe_fixtures: dict) -> Engine:
    pd.seed(engine, stripe_fixtures, [ADA, BOB])
    return engine


def stored_story(engine: Engine, fixtures: dict, person: pd.Person) -> dict[str, dict]:
    """The person's events as seeded (same ids, same times), by type."""
    t0 = pd.row(engine, "stripe_customers", "stripe_customer_id", person.customer_id)
    return {e["type"]: e for e in pd.story(fixtures, person, t0["stripe_created"])}


def marts(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    run_project(engine, PROJECT)
    return {name: sorted(fetch_rows(engine, name), key=repr) for name in MARTS}


def test_after_erasure_no_table_holds_the_person_and_marts_are_unchanged(seeded: Engine) -> None:
    assert pd.leaks(seeded, ADA.secrets())  # the story put them everywhere
    before = marts(seeded)
    assert any(r["gross_minor"] for r in before["payments_daily"])

    result = erase_customer(seeded, ADA.customer_id, actor="operator:test")

    assert pd.leaks(seeded, ADA.secrets()) == []
    assert result.first_erasure and result.counts["stripe_events"] == 10
    after = marts(seeded)
    for name in MARTS:
        assert_same_rows(before[name], after[name], name)
    # the other customer is untouched
    bob_left = {(t, c) for t, c, _ in pd.leaks(seeded, BOB.secrets())}
    assert ("stripe_customers", "email") in bob_left and ("stripe_events", "payload") in bob_left


def test_erasure_keeps_ids_amounts_statuses_and_dates(seeded: Engine) -> None:
    ids = ADA.ids()
    before = pd.row(seeded, "stripe_payments", "payment_intent_id", ids["payment_intent"])
    erase_customer(seeded, ADA.customer_id, actor="operator:test")

    customer = pd.row(seeded, "stripe_customers", "stripe_customer_id", ADA.customer_id)
    assert (customer["email"], customer["name"]) == (None, None)
    assert customer["stripe_created"] is not None and customer["last_event_id"] is not None
    payment = pd.row(seeded, "stripe_payments", "payment_intent_id", ids["payment_intent"])
    assert payment["description"] is None
    kept = (
        "status",
        "amount_minor",
        "amount_received_minor",
        "amount_refunded_minor",
        "currency",
        "customer_id",
        "charge_id",
        "card_fingerprint",
        "stripe_created",
    )
    assert {k: payment[k] for k in kept} == {k: before[k] for k in kept}
    card = pd.row(
        seeded, "stripe_payment_methods", "stripe_payment_method_id", ids["payment_method"]
    )
    assert (card["card_last4"], card["card_exp_month"], card["card_exp_year"]) == (None,) * 3
    assert (card["card_brand"], card["card_fingerprint"]) == ("visa", f"fp{ADA.tag}")
    dispute = pd.row(seeded, "stripe_disputes", "stripe_dispute_id", ids["dispute"])
    assert dispute["evidence"]["customer_name"] is None
    assert dispute["evidence"]["uncategorized_text"] is None
    assert dispute["evidence"]["shipping_carrier"] == "Royal Mail"  # not about the person
    assert (dispute["amount_minor"], dispute["status"]) == (2000, "needs_response")

    with seeded.connect() as conn:
        payload = conn.execute(
            text("SELECT payload FROM stripe_events WHERE object_id = :id"),
            {"id": ids["charge"]},
        ).scalar_one()
    payload = payload if isinstance(payload, dict) else json.loads(payload)
    charge = payload["data"]["object"]
    assert charge["billing_details"] is None and charge["receipt_email"] is None
    assert (charge["id"], charge["amount"], charge["status"]) == (ids["charge"], 5000, "succeeded")
    assert charge["payment_method_details"]["card"]["fingerprint"] == f"fp{ADA.tag}"
    assert payload["erased"] is True and payload["created"] > 0


def test_erasure_is_recorded_repeatable_and_dry_run_changes_nothing(seeded: Engine) -> None:
    dump = pd.dump(seeded)
    dry = erase_customer(seeded, ADA.customer_id, actor="operator:test", dry_run=True)
    assert dry.dry_run and dry.counts["stripe_events"] == 10
    assert pd.dump(seeded) == dump  # not even an erasures row

    first = erase_customer(seeded, ADA.customer_id, actor="operator:ann")
    again = erase_customer(seeded, ADA.customer_id, actor="operator:bob")
    assert first.first_erasure and not again.first_erasure
    assert again.rows_changed == 0  # nothing new arrived
    record = pd.row(seeded, "erasures", "customer_id", ADA.customer_id)
    assert (record["status"], record["runs"], record["reason"]) == ("erased", 2, "request")
    assert (record["requested_by"], record["erased_by"]) == ("operator:ann", "operator:bob")
    assert record["counts"] == again.counts
    a = AUDIT_LOG.c
    with seeded.connect() as conn:
        trail = conn.execute(
            select(a.actor, a.object_id, a.details)
            .where(a.action == "customer_erased")
            .order_by(a.id)
        ).all()
    assert [(t.actor, t.object_id) for t in trail] == [
        ("operator:ann", ADA.customer_id),
        ("operator:bob", ADA.customer_id),
    ]
    assert trail[0].details["counts"]["stripe_customers"] == 1


def test_a_customer_with_nothing_stored_is_still_recorded(engine: Engine) -> None:
    result = erase_customer(engine, "cus_Nobody01", actor="operator:test")
    assert result.rows_changed == 0
    assert pd.row(engine, "erasures", "customer_id", "cus_Nobody01")["status"] == "erased"
    with pytest.raises(ErasureError, match="not a Stripe customer id"):
        erase_customer(engine, "jane@example.com", actor="operator:test")


@pytest.mark.parametrize("in_memory", [guard.ERASED_IN_MEMORY, 0], ids=["few", "many"])
def test_late_and_replayed_events_never_bring_the_person_back(
    seeded: Engine, stripe_fixtures: dict, monkeypatch: pytest.MonkeyPatch, in_memory: int
) -> None:
    # "many": more erasures than the guard keeps in memory, so the database checks rows
    monkeypatch.setattr(guard, "ERASED_IN_MEMORY", in_memory)
    erase_customer(seeded, ADA.customer_id, actor="operator:test")
    ids = ADA.ids()
    story = stored_story(seeded, stripe_fixtures, ADA)

    def obj(event_type: str) -> dict:
        return story[event_type]["data"]["object"]

    newer = 2_000_000_000
    late = [
        # a newer update still carrying the email (Stripe still has the customer)
        make_event("customer.updated", obj("customer.updated"), newer),
        # an older copy of the PaymentIntent: its description would fill a NULL
        make_event("payment_intent.succeeded", obj("payment_intent.succeeded"), 1),
        make_event("payment_method.updated", obj("payment_method.attached"), newer),
        make_event("charge.dispute.updated", obj("charge.dispute.created"), newer),
    ]
    pd.land(seeded, late)
    pd.process(seeded)

    customer = pd.row(seeded, "stripe_customers", "stripe_customer_id", ADA.customer_id)
    assert (customer["email"], customer["name"]) == (None, None)
    assert customer["last_event_created"] == newer  # the event itself was applied
    payment = pd.row(seeded, "stripe_payments", "payment_intent_id", ids["payment_intent"])
    assert payment["description"] is None
    card = pd.row(
        seeded, "stripe_payment_methods", "stripe_payment_method_id", ids["payment_method"]
    )
    assert card["card_last4"] is None
    dispute = pd.row(seeded, "stripe_disputes", "stripe_dispute_id", ids["dispute"])
    assert dispute["evidence"]["customer_email_address"] is None
    # only the new raw payloads still hold the person; the daily run blanks them
    leaks = {(t, c) for t, c, _ in pd.leaks(seeded, ADA.secrets())}
    assert leaks == {("stripe_events", "payload")}
    run_daily_privacy(seeded, PrivacyOptions(), actor="privacy_schedule")
    assert pd.leaks(seeded, ADA.secrets()) == []


def test_reconciliation_repairs_and_backfill_keep_the_customer_erased(
    seeded: Engine, stripe_fixtures: dict
) -> None:
    erase_customer(seeded, ADA.customer_id, actor="operator:test")
    ids = ADA.ids()
    story = stored_story(seeded, stripe_fixtures, ADA)
    api = MemoryApi()
    pi = story["payment_intent.succeeded"]["data"]["object"]
    dispute = story["charge.dispute.created"]["data"]["object"]
    api.add("payment_intents", pi)
    api.add("disputes", {**dispute, "status": "under_review"})  # stale locally: repaired
    missed = make_event(
        "customer.updated", story["customer.updated"]["data"]["object"], pi["created"]
    )
    api.add("events", missed)  # a webhook the receiver never got
    with seeded.begin() as conn:  # a lost row: rebuilt from the API object
        conn.execute(
            text("DELETE FROM stripe_payments WHERE payment_intent_id = :i"), {"i": pi["id"]}
        )

    # the objects this story stores (its API knows no catalog of prices or products)
    kinds = ("customer", "payment_method", "payment", "refund", "dispute", "subscription")
    result = run_reconciliation(seeded, api, RunConfig(server_filter=False, object_types=kinds))
    assert result.counts["heal"]["repaired_objects"] == 2
    assert result.counts["backfill"]["events_backfilled"] == 1
    payment = pd.row(seeded, "stripe_payments", "payment_intent_id", ids["payment_intent"])
    assert (payment["amount_minor"], payment["description"]) == (5000, None)
    disputed = pd.row(seeded, "stripe_disputes", "stripe_dispute_id", ids["dispute"])
    assert disputed["status"] == "under_review" and disputed["evidence"]["customer_name"] is None
    pd.process(seeded)  # the backfilled event goes through processing as usual
    assert pd.leaks(seeded, ADA.secrets()) == []


def test_deleted_customers_are_erased_after_the_delay_only(
    seeded: Engine, stripe_fixtures: dict
) -> None:
    deleted = pd.story(stripe_fixtures, BOB, 0)[1]
    deleted = make_event("customer.deleted", deleted["data"]["object"], 2_000_000_000)
    pd.land(seeded, [deleted])
    pd.process(seeded)
    from datetime import UTC, datetime, timedelta

    at_deletion = datetime.fromtimestamp(2_000_000_000, UTC)
    options = PrivacyOptions(erase_after_delete_days=30)
    assert (
        erase_deleted_customers(seeded, options, actor="t", now=at_deletion + timedelta(days=29))
        == []
    )
    assert (
        erase_deleted_customers(
            seeded,
            PrivacyOptions(erase_after_delete_days=None),
            actor="t",
            now=at_deletion + timedelta(days=300),
        )
        == []
    )
    done = erase_deleted_customers(seeded, options, actor="t", now=at_deletion + timedelta(days=31))
    assert [(r.customer_id, r.reason) for r in done] == [(BOB.customer_id, "customer_deleted")]
    assert pd.leaks(seeded, BOB.secrets()) == []
    assert pd.leaks(seeded, ADA.secrets())  # only the deleted one
    assert (
        erase_deleted_customers(seeded, options, actor="t", now=at_deletion + timedelta(days=32))
        == []
    )


def test_audit_rows_name_personal_fields_without_their_values(
    engine: Engine, stripe_fixtures: dict
) -> None:
    created, updated = pd.story(stripe_fixtures, ADA, 1_700_000_000)[:2]
    for event in (created, updated):  # two runs: two audit rows
        pd.land(engine, [event])
        pd.process(engine)
    a = AUDIT_LOG.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(a.actor, a.stripe_event_id, a.before, a.after, a.details)
            .where(a.object_type == "customer", a.object_id == ADA.customer_id)
            .order_by(a.id)
        ).all()
    first, second = rows
    assert (first.actor, first.stripe_event_id) == (f"event:{created['id']}", created["id"])
    assert first.before is None
    assert first.after["email"] == REDACTED and first.after["name"] == REDACTED
    assert first.details["personal_fields_changed"] == ["email", "name"]
    assert second.before["email"] == REDACTED and second.after["email"] == REDACTED
    assert second.details["personal_fields_changed"] == ["email"]  # the name did not change
    assert second.after["deleted_at"] is None  # other fields keep their values
    everything = json.dumps([tuple(r) for r in rows], default=str)
    assert ADA.email not in everything and ADA.old_email not in everything
    assert ADA.name not in everything


def test_every_table_is_covered_by_the_dump(seeded: Engine) -> None:
    """The leak scan reads every table of the schema (a new table cannot hide from it)."""
    scanned = {table for table, _, _ in pd.dump(seeded)}
    with_text = {
        "stripe_customers",
        "stripe_events",
        "webhook_deliveries",
        "audit_log",
        "payment_support_tickets",
        "fraud_rule_hits",
        "reconciliation_discrepancies",
        "payment_recovery_attempts",
        "stripe_disputes",
        "stripe_payments",
    }
    assert with_text <= scanned
    assert set(metadata.tables) - {"alembic_version"} <= set(pd.table_names(seeded))


def test_nightly_runs_after_erasure_find_nothing_to_report(
    seeded: Engine, stripe_fixtures: dict
) -> None:
    """Stripe still returns the erased person: the nightly comparison sees the row as it
    would be stored (blank), so it neither repairs nor reports anything, night after night."""
    story = stored_story(seeded, stripe_fixtures, ADA)
    api = MemoryApi()
    customer = story["customer.updated"]["data"]["object"]
    api.add("customers", customer)
    api.add("payment_intents", story["payment_intent.succeeded"]["data"]["object"])
    api.add("disputes", story["charge.dispute.created"]["data"]["object"])
    config = RunConfig(
        backfill=False, object_types=("customer", "payment", "dispute"), full_run=True
    )
    run_reconciliation(seeded, api, config)
    erase_customer(seeded, ADA.customer_id, actor="operator:test")
    for _night in range(2):
        result = run_reconciliation(seeded, api, config)
        assert result.counts["compare"]["found"].get("field_mismatch", 0) == 0
        assert result.counts["heal"]["repaired_objects"] == 0
    assert pd.leaks(seeded, ADA.secrets()) == []
