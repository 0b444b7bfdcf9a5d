"""Poison pills: one hostile event never stops processing, and tickets group by cause.

Events enter as the receiver lands them (signature verified, envelope parsed, the
lander's insert), then the real ``process_pending`` runs, with the real appliers
unless a test needs a failure they never produce on purpose (``MarkingApply``).
Where the database must refuse a ticket or a failure record, a trigger makes it
refuse: the same error a real constraint raises, from the real database.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, text

from stripe_pipeline.db.statuses import IssueType
from stripe_pipeline.land.envelope import parse_envelope
from stripe_pipeline.land.lander import EventLander
from stripe_pipeline.land.signature import sign, verify_signature
from stripe_pipeline.land.store import Delivery
from stripe_pipeline.process.backoff import RetryPolicy
from stripe_pipeline.process.errors import PermanentError
from stripe_pipeline.process.runner import process_pending
from stripe_pipeline.support import workflow
from stripe_pipeline.support.tickets import EVENT_IDS_KEPT
from tests.support.queue_events import MarkingApply, event_doc, marks, statuses

SECRET = "whsec_poison_pills"
POLICY = RetryPolicy(max_retries=2)


def land_signed(engine: Engine, events: list[dict[str, Any]]) -> None:
    """What the receiver does with each delivery: verify, parse, land (and commit)."""
    lander = EventLander(engine)
    for event in events:
        body = json.dumps(event).encode()
        verify_signature(body, sign(body, SECRET), [SECRET])
        envelope = parse_envelope(body)
        lander.land(envelope, Delivery("default", "127.0.0.1", "stored", 200))
    pooled = getattr(lander._local, "pooled", None)
    if pooled is not None:
        pooled.invalidate()  # the lander's thread connection (PostgreSQL fast path)


def rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        found = [dict(r) for r in conn.execute(text(sql), params).mappings()]
    for row in found:
        for key in ("details", "error_context"):
            if isinstance(row.get(key), str):
                row[key] = json.loads(row[key])
    return found


def good_payments(count: int, start: int = 100) -> list[dict[str, Any]]:
    return [event_doc(n) for n in range(start, start + count)]


def applied_payments(engine: Engine) -> int:
    return rows(engine, "SELECT count(*) AS n FROM stripe_payments")[0]["n"]


# ---- item 1: a failure while recording a failure never takes the batch down ----


def test_an_over_long_customer_id_dead_letters_one_event_and_the_rest_goes_through(
    engine: Engine,
) -> None:
    long_id = "cus_" + "x" * 300  # 304 characters, over every VARCHAR(255) id column
    dispute = {
        "id": "dp_hostile",
        "object": "dispute",
        "amount": 100,
        "currency": "usd",
        "status": "needs_response",
        "customer": long_id,
    }  # names no charge: the applier refuses it, on both databases
    hostile = event_doc(1, event_type="charge.dispute.created", obj=dispute)
    land_signed(engine, [hostile, *good_payments(40)])

    report = process_pending(engine, policy=POLICY, batch_size=100)

    assert (report.processed, report.dead_lettered, report.tickets_opened) == (40, 1, 1)
    assert applied_payments(engine) == 40
    assert statuses(engine)["evt_000001"] == "dead_letter"
    (ticket,) = rows(engine, "SELECT * FROM payment_support_tickets")
    assert ticket["customer_id"] is None and ticket["payment_intent_id"] is None
    assert ticket["dedupe_key"] == f"{IssueType.EVENT_PERMANENT_ERROR}:object:dp_hostile"
    assert ticket["details"]["unusable_ids"]["customer_id"].endswith("(304 characters)")
    (event,) = rows(
        engine,
        "SELECT error_context, support_ticket_id FROM stripe_events WHERE status = 'dead_letter'",
    )
    assert event["support_ticket_id"] == ticket["id"]
    assert "dispute without a charge" in event["error_context"]["message"]
    # nothing is left to retry: a second run has nothing to do
    assert process_pending(engine, policy=POLICY).claimed == 0


def test_the_issue_case_a_payment_with_a_304_character_customer(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # the parser refuses a value its column cannot hold (catalog.model.check_fits), on
    # both databases alike: the event fails alone, before any write; its ticket once
    # overflowed too, rolling the batch back on every run
    pi = {
        "id": "pi_long_customer",
        "object": "payment_intent",
        "amount": 500,
        "currency": "usd",
        "status": "succeeded",
        "customer": "cus_" + "z" * 300,
    }
    land_signed(engine, [event_doc(1, obj=pi), *good_payments(40)])
    report = process_pending(engine, policy=POLICY, batch_size=100)
    assert (report.processed, report.dead_lettered, report.tickets_opened) == (40, 1, 1)
    (ticket,) = rows(engine, "SELECT * FROM payment_support_tickets")
    assert ticket["payment_intent_id"] == "pi_long_customer"
    assert ticket["customer_id"] is None
    (event,) = rows(engine, "SELECT error_context FROM stripe_events WHERE status = 'dead_letter'")
    assert event["error_context"]["exception"] == "stripe_pipeline.process.errors.PermanentError"
    assert "customer_id longer than 255 characters" in event["error_context"]["message"]
    # the payload's values never reach the error context nor the logs
    assert "z" * 50 not in json.dumps(event["error_context"])
    assert "z" * 50 not in caplog.text
    assert rows(engine, "SELECT count(*) AS n FROM stripe_payments")[0]["n"] == 40


def test_a_255_character_event_id_is_processed(engine: Engine) -> None:
    event_id = "evt_" + "L" * 251
    assert len(event_id) == 255  # the longest id the receiver accepts
    land_signed(engine, [event_doc(1) | {"id": event_id}])
    report = process_pending(engine, policy=POLICY)
    assert (report.processed, report.dead_lettered) == (1, 0)
    assert statuses(engine)[event_id] == "processed"
    audit = rows(engine, "SELECT actor FROM audit_log WHERE stripe_event_id = :e", e=event_id)
    assert audit, "the event's changes are audited"
    # "event:<id>" (261 characters) fits audit_log.actor
    assert {a["actor"] for a in audit} == {f"event:{event_id}"}


def test_a_255_character_event_id_that_fails_still_gets_its_ticket(engine: Engine) -> None:
    event_id = "evt_" + "F" * 251
    land_signed(engine, [event_doc(1, obj={"object": "payment_intent"}) | {"id": event_id}])
    report = process_pending(engine, policy=POLICY)
    assert (report.dead_lettered, report.tickets_opened) == (1, 1)
    (ticket,) = rows(engine, "SELECT stripe_event_id, details FROM payment_support_tickets")
    assert ticket["stripe_event_id"] == event_id
    assert ticket["details"]["stripe_event_ids"] == [event_id]


def _refuse(engine: Engine, table: str, when: str, name: str) -> None:
    """A trigger making the database refuse some rows of ``table`` (as a constraint would).

    ``when`` is a boolean SQL expression over NEW that both dialects understand.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(
                text(
                    f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
                    f"IF {when} THEN RAISE EXCEPTION 'refused by {name}' "
                    "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$ "
                    "LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    f"CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION {name}()"
                )
            )
        else:
            for operation in ("INSERT", "UPDATE"):
                conn.execute(
                    text(
                        f"CREATE TRIGGER {name}_{operation.lower()} BEFORE {operation} ON "
                        f"{table} WHEN {when} BEGIN SELECT RAISE(ABORT, 'refused by {name}'); "
                        "END"
                    )
                )


def _poisoned(marker: str):
    return MarkingApply(
        decide=lambda e: (
            PermanentError(marker) if e.stripe_event_id == "evt_000001" else "processed"
        )
    )


def test_a_refused_ticket_falls_back_to_a_bare_one(engine: Engine) -> None:
    _refuse(engine, "payment_support_tickets", "NEW.title LIKE 'Events%'", "no_full_tickets")
    land_signed(engine, [event_doc(1), *good_payments(10)])
    report = process_pending(engine, policy=POLICY, apply=_poisoned("broken"))
    assert (report.processed, report.dead_lettered, report.tickets_opened) == (10, 1, 1)
    (ticket,) = rows(engine, "SELECT * FROM payment_support_tickets")
    assert ticket["details"] == {"bare": True, "stripe_event_ids": ["evt_000001"]}
    (event,) = rows(
        engine,
        "SELECT error_context, support_ticket_id FROM stripe_events WHERE status = 'dead_letter'",
    )
    assert event["support_ticket_id"] == ticket["id"]
    assert "while opening the ticket" in event["error_context"]["ticket_error"]
    assert event["error_context"]["message"] == "broken"


def test_when_no_ticket_can_be_opened_the_event_is_still_dead_lettered(engine: Engine) -> None:
    _refuse(engine, "payment_support_tickets", "NEW.dedupe_key LIKE '%pi_1%'", "no_pi_1")
    land_signed(engine, [event_doc(1), *good_payments(10)])
    report = process_pending(engine, policy=POLICY, apply=_poisoned("broken"))
    assert (report.processed, report.dead_lettered, report.tickets_opened) == (10, 1, 0)
    assert len(marks(engine)) == 10
    (event,) = rows(
        engine,
        "SELECT error_context, support_ticket_id FROM stripe_events WHERE status = 'dead_letter'",
    )
    assert event["support_ticket_id"] is None
    assert event["error_context"]["ticket_error"].count("while opening the ticket") == 2
    assert process_pending(engine, policy=POLICY, apply=MarkingApply()).claimed == 0


def test_a_refused_failure_record_dead_letters_with_a_minimal_context(engine: Engine) -> None:
    # the database refuses every failure record of evt_000001 but a minimal one
    context = (
        "NEW.error_context::text" if engine.dialect.name == "postgresql" else ("NEW.error_context")
    )
    when = (
        "NEW.stripe_event_id = 'evt_000001' AND NEW.status = 'dead_letter' "
        f"AND {context} NOT LIKE '%Unrecordable%'"
    )
    _refuse(engine, "stripe_events", when, "only_minimal_records")
    land_signed(engine, [event_doc(1), *good_payments(10)])
    report = process_pending(engine, policy=POLICY, apply=_poisoned("broken"))
    assert (report.processed, report.dead_lettered, report.apply_crashes) == (10, 1, 1)
    assert len(marks(engine)) == 10
    (event,) = rows(
        engine,
        "SELECT error_context, support_ticket_id FROM stripe_events WHERE status = 'dead_letter'",
    )
    error = event["error_context"]
    assert error["exception"].endswith("_Unrecordable") and error["kind"] == "permanent"
    assert "IntegrityError: the failure could not be recorded as it is" in error["message"]
    assert event["support_ticket_id"] is not None


# ---- item 3: tickets per cause, not per event ----


def test_25_events_failing_for_one_reason_make_one_ticket(engine: Engine) -> None:
    # no usable object id: grouped by issue and root cause; the message carries ids
    # and numbers that differ per event and do not split the group
    docs = [
        event_doc(n, event_type="invoice.paid", obj={"object": "invoice", "lines": n})
        for n in range(1, 26)
    ]
    land_signed(engine, [*docs, *good_payments(5)])
    apply = MarkingApply(
        decide=lambda e: (
            PermanentError(f"line {e.id * 7} of {e.stripe_event_id} has no price (in_{e.id}x9)")
            if e.event_type == "invoice.paid"
            else "processed"
        )
    )
    # several batches: occurrences add up within a batch and across batches
    report = process_pending(engine, policy=POLICY, batch_size=7, apply=apply)
    assert (report.dead_lettered, report.tickets_opened, report.processed) == (25, 1, 5)
    (ticket,) = rows(engine, "SELECT * FROM payment_support_tickets")
    assert ticket["occurrences"] == 25
    assert ticket["details"]["grouped_by"] == "cause"
    assert ticket["priority"] == "critical"  # invoice.paid moves money
    latest = ticket["details"]["stripe_event_ids"]
    assert latest == [f"evt_{n:06d}" for n in range(26 - EVENT_IDS_KEPT, 26)]
    shown = workflow.show_ticket(engine, ticket["id"])
    assert shown["events_by_status"] == {"dead_letter": 25}

    # AutoRetry re-queues every event of the ticket, not only the ones it names
    result = workflow.requeue_ticket_events(engine, ticket["id"], "operator:test")
    assert (result.events_requeued, result.ticket_status) == (25, "investigating")
    fixed = process_pending(engine, policy=POLICY, batch_size=10, apply=MarkingApply())
    assert fixed.processed == 25 and fixed.tickets_resolved == 1
    assert workflow.show_ticket(engine, ticket["id"])["status"] == "resolved"
    assert set(statuses(engine).values()) == {"processed"}


def test_failures_of_one_payment_make_one_ticket(engine: Engine) -> None:
    pi = {"id": "pi_grouped", "object": "payment_intent", "amount": 1, "currency": "usd"}
    charge = {"id": "ch_g", "object": "charge", "payment_intent": "pi_grouped"}
    refund = {"id": "re_g", "object": "refund", "payment_intent": "pi_grouped"}
    docs = [
        event_doc(1, event_type="payment_intent.created", obj=pi),
        event_doc(2, event_type="payment_intent.payment_failed", obj=pi),
        event_doc(3, event_type="charge.failed", obj=charge),
        event_doc(4, event_type="charge.updated", obj=charge),
        event_doc(5, event_type="refund.created", obj=refund),
        event_doc(6, event_type="payment_intent.created", obj={**pi, "id": "pi_other"}),
    ]
    land_signed(engine, docs)
    errors = iter([KeyError("amount"), ValueError("bad"), TypeError("x"), PermanentError("y")])
    apply = MarkingApply(decide=lambda e: next(errors, PermanentError("z")))
    report = process_pending(engine, policy=POLICY, batch_size=2, apply=apply)
    assert (report.dead_lettered, report.tickets_opened) == (6, 2)
    tickets = rows(
        engine, "SELECT dedupe_key, occurrences, payment_intent_id FROM payment_support_tickets"
    )
    by_key = {t["dedupe_key"]: t for t in tickets}
    assert by_key[f"{IssueType.EVENT_PERMANENT_ERROR}:payment:pi_grouped"]["occurrences"] == 5
    assert by_key[f"{IssueType.EVENT_PERMANENT_ERROR}:payment:pi_other"]["occurrences"] == 1


def test_a_grouped_ticket_under_investigation_reopens_when_its_events_fail_again(
    engine: Engine,
) -> None:
    docs = [event_doc(n, obj={"object": "payment_intent", "n": n}) for n in range(1, 4)]
    land_signed(engine, docs)
    broken = MarkingApply(decide=lambda e: PermanentError("payment_intent without an id"))
    process_pending(engine, policy=POLICY, apply=broken)
    (ticket,) = rows(engine, "SELECT id, occurrences FROM payment_support_tickets")
    assert ticket["occurrences"] == 3
    workflow.requeue_ticket_events(engine, ticket["id"], "operator:test")
    report = process_pending(engine, policy=POLICY, apply=broken)
    assert report.tickets_opened == 0
    (after,) = rows(engine, "SELECT status, occurrences FROM payment_support_tickets")
    assert after == {"status": "open", "occurrences": 6}
    history = [h["action"] for h in workflow.show_ticket(engine, ticket["id"])["history"]]
    assert history == ["ticket_opened", "ticket_status_changed", "ticket_status_changed"]


def test_an_investigating_ticket_waits_for_all_its_events(engine: Engine) -> None:
    docs = [event_doc(n, obj={"object": "payment_intent", "n": n}) for n in range(1, 6)]
    land_signed(engine, docs)
    process_pending(
        engine,
        policy=POLICY,
        apply=MarkingApply(decide=lambda e: PermanentError("payment_intent without an id")),
    )
    (ticket,) = rows(engine, "SELECT id FROM payment_support_tickets")
    workflow.requeue_ticket_events(engine, ticket["id"], "operator:test")
    partial = process_pending(
        engine, policy=POLICY, batch_size=2, max_batches=1, apply=MarkingApply()
    )
    assert partial.processed == 2 and partial.tickets_resolved == 0
    assert workflow.show_ticket(engine, ticket["id"])["status"] == "investigating"
    rest = process_pending(engine, policy=POLICY, apply=MarkingApply())
    assert rest.processed == 3 and rest.tickets_resolved == 1


def test_sql_parameters_never_reach_error_messages(engine: Engine) -> None:
    marker = "cus_parametermarker42"
    with pytest.raises(Exception) as failure, engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO stripe_events (stripe_event_id, event_type, stripe_created, "
                "payload) VALUES (NULL, :type, 1, :payload)"
            ),
            {"type": marker, "payload": json.dumps({"customer": marker})},
        )
    assert "IntegrityError" in type(failure.value).__name__
    assert marker not in str(failure.value)
