"""Retention on both backends: old payloads dropped to their envelope, deliveries and
resolved tickets pruned on their own clocks, and never an event still needed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update

from stripe_pipeline.config import PrivacyOptions
from stripe_pipeline.db.models import metadata
from stripe_pipeline.land.envelope import envelope_from_event
from stripe_pipeline.privacy.retention import run_retention
from stripe_pipeline.support.tickets import resolve_ticket
from tests.support import privacy_data as pd
from tests.support import retention_data as rd

T = metadata.tables
EVENTS = T["stripe_events"]
NOW, OPTIONS, EVENT_CASES, DROPPED = rd.NOW, rd.OPTIONS, rd.EVENT_CASES, rd.DROPPED
seed_events = rd.seed_events


def seed_deliveries_and_tickets(engine: Engine) -> dict[str, int]:
    deliveries = T["webhook_deliveries"]
    tickets = T["payment_support_tickets"]
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        for n, when in enumerate([NOW - timedelta(days=40)] * 5 + [NOW - timedelta(days=5)] * 2):
            conn.execute(
                insert(deliveries).values(
                    received_at=when, outcome="stored", status_code=200, stripe_event_id=f"evt_d{n}"
                )
            )
        for name, status, resolved_at in (
            ("resolved_long_ago", "resolved", NOW - timedelta(days=400)),
            ("resolved_long_ago_2", "resolved", NOW - timedelta(days=380)),
            ("resolved_lately", "resolved", NOW - timedelta(days=30)),
            ("open_long_ago", "open", None),
        ):
            ids[name] = conn.execute(
                insert(tickets)
                .values(
                    issue_type="payment_recovery_exhausted",
                    status=status,
                    priority="medium",
                    dedupe_key=f"t:{name}",
                    title=name,
                    resolved_at=resolved_at,
                    created_at=NOW - timedelta(days=500),
                )
                .returning(tickets.c.id)
            ).scalar_one()
        # rows that point at a ticket about to go
        conn.execute(
            insert(T["payment_recovery_attempts"]).values(
                payment_intent_id="pi_r",
                status="exhausted",
                recovery_key="pi:pi_r",
                support_ticket_id=ids["resolved_long_ago"],
            )
        )
        conn.execute(
            insert(T["fraud_rule_hits"]).values(
                rule="velocity", dedupe_key="f1", support_ticket_id=ids["resolved_long_ago_2"]
            )
        )
    return ids


def payloads(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(EVENTS.c.stripe_event_id, EVENTS.c.payload)).all()
    return {stripe_id.removeprefix("evt_"): payload for stripe_id, payload in rows}


def test_dry_run_counts_what_a_run_then_does_and_changes_nothing(engine: Engine) -> None:
    seed_events(engine)
    seed_deliveries_and_tickets(engine)
    before = pd.dump(engine)

    dry = run_retention(engine, OPTIONS, dry_run=True, now=NOW)
    assert pd.dump(engine) == before  # nothing written, not even a run record
    assert (dry.payloads_dropped, dry.deliveries_deleted, dry.tickets_deleted) == (4, 5, 2)
    assert dry.payloads_held_by_tickets == 2

    real = run_retention(engine, OPTIONS, now=NOW, triggered_by="test")
    assert (real.payloads_dropped, real.deliveries_deleted, real.tickets_deleted) == (4, 5, 2)
    assert real.transactions > 3  # batches of 3 rows
    run = pd.row(engine, "retention_runs", "id", real.run_id)
    assert run["status"] == "succeeded" and run["counts"]["payloads_dropped"] == 4


def test_payloads_past_their_age_keep_only_their_envelope(engine: Engine) -> None:
    seed_events(engine)
    original = payloads(engine)
    run_retention(engine, OPTIONS, now=NOW)
    after = payloads(engine)

    for name, status, _ in EVENT_CASES:
        if name not in DROPPED:
            assert after[name] == original[name], f"{name} ({status}) must keep its payload"
    for name in DROPPED:
        envelope = after[name]
        assert envelope["pruned"]["reason"] == "retention"
        assert envelope["id"] == f"evt_{name}" and envelope["type"] == original[name]["type"]
        assert envelope["created"] == original[name]["created"]
        assert envelope["data"]["object"] == {
            "id": original[name]["data"]["object"]["id"],
            "object": "payment_intent",
        }
        assert "receipt_email" not in str(envelope)
        envelope_from_event(envelope)  # still a well-formed event envelope
    with engine.connect() as conn:  # rows, statuses and errors stay
        statuses = dict(conn.execute(select(EVENTS.c.stripe_event_id, EVENTS.c.status)).all())
    assert len(statuses) == len(EVENT_CASES)
    assert statuses["evt_old_processed"] == "processed"


def test_held_events_are_dropped_once_their_ticket_is_resolved(engine: Engine) -> None:
    seed_events(engine)
    first = run_retention(engine, OPTIONS, now=NOW)
    assert first.payloads_dropped == 4
    again = run_retention(engine, OPTIONS, now=NOW)
    assert again.payloads_dropped == 0
    assert again.events_scanned_from_id == first.events_scanned_to_id  # incremental

    tickets = T["payment_support_tickets"]
    with engine.begin() as conn:
        for key in ("retention:open", "retention:details"):
            ticket_id = conn.execute(
                select(tickets.c.id).where(tickets.c.dedupe_key == key)
            ).scalar_one()
            resolve_ticket(conn, ticket_id, resolution="manual", note="fixed", actor="t")
    later = run_retention(engine, OPTIONS, now=NOW + timedelta(minutes=1))
    assert later.payloads_dropped == 2
    after = payloads(engine)
    assert "pruned" in after["old_open_ticket"] and "pruned" in after["old_ticket_details"]
    # queued and dead-lettered events are never touched, whatever their age
    for name in ("old_pending", "old_retry", "old_processing", "old_dead_letter"):
        assert "pruned" not in after[name]


def test_queued_events_hold_the_watermark_until_processed(engine: Engine) -> None:
    seed_events(engine)
    first = run_retention(engine, OPTIONS, now=NOW)
    with engine.connect() as conn:
        pending = conn.execute(
            select(EVENTS.c.id).where(EVENTS.c.stripe_event_id == "evt_old_pending")
        ).scalar_one()
    assert first.events_scanned_to_id == pending  # the oldest queued event
    with engine.begin() as conn:
        conn.execute(
            update(EVENTS)
            .where(EVENTS.c.status.in_(("pending", "retry", "processing")))
            .values(status="processed")
        )
    later = run_retention(engine, OPTIONS, now=NOW)
    assert later.payloads_dropped == 3
    assert later.events_scanned_to_id > pending


def test_deliveries_and_resolved_tickets_follow_their_own_clocks(engine: Engine) -> None:
    ids = seed_deliveries_and_tickets(engine)
    result = run_retention(engine, OPTIONS, now=NOW)
    assert (result.deliveries_deleted, result.tickets_deleted) == (5, 2)
    tickets = T["payment_support_tickets"]
    with engine.connect() as conn:
        left = set(conn.execute(select(tickets.c.title)).scalars())
        deliveries = conn.execute(select(T["webhook_deliveries"].c.received_at)).scalars().all()
        recovery_link = conn.execute(
            select(T["payment_recovery_attempts"].c.support_ticket_id)
        ).scalar_one()
        fraud_link = conn.execute(select(T["fraud_rule_hits"].c.support_ticket_id)).scalar_one()
    assert left == {"resolved_lately", "open_long_ago"}
    assert len(deliveries) == 2
    assert recovery_link is None and fraud_link is None  # links to deleted tickets cleared
    assert ids["open_long_ago"] not in (recovery_link, fraud_link)


@pytest.mark.parametrize(
    "options",
    [
        PrivacyOptions(payload_days=None, delivery_days=None, ticket_days=None),
        PrivacyOptions(payload_days=1000, delivery_days=1000, ticket_days=1000),
    ],
    ids=["off", "long"],
)
def test_clocks_turned_off_or_long_keep_everything(engine: Engine, options) -> None:
    seed_events(engine)
    seed_deliveries_and_tickets(engine)
    result = run_retention(engine, options, now=NOW)
    assert result.rows_changed == 0
