"""The operator side of the error-recovery diagram: AutoRetry, ManualResolution, replay, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from stripe_pipeline import cli
from stripe_pipeline.process.backoff import RetryPolicy
from stripe_pipeline.process.errors import PermanentError
from stripe_pipeline.process.runner import process_pending
from stripe_pipeline.support import workflow
from stripe_pipeline.support.tickets import TicketRequest, open_tickets, resolve_tickets
from tests.support.queue_events import MarkingApply, event_doc, load, marks, statuses

POLICY = RetryPolicy(max_retries=1)


def _dead_letter_one(engine: Engine) -> int:
    """evt_000001 fails permanently (a deployment bug); returns its ticket id."""
    load(engine, [event_doc(n) for n in range(1, 4)])
    broken = MarkingApply(
        decide=lambda e: PermanentError("bug") if e.stripe_event_id == "evt_000001" else "processed"
    )
    report = process_pending(engine, policy=POLICY, apply=broken)
    assert report.tickets_opened == 1
    return report.ticket_ids[0]


def _audit(engine: Engine, action: str) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT actor, object_id FROM audit_log WHERE action = :a ORDER BY id"),
            {"a": action},
        ).all()


def test_auto_retry_requeues_and_resolves_when_the_event_goes_through(engine: Engine) -> None:
    ticket_id = _dead_letter_one(engine)
    result = workflow.requeue_ticket_events(engine, ticket_id, "operator:ana")
    assert (result.events_requeued, result.ticket_status) == (1, "investigating")
    assert statuses(engine)["evt_000001"] == "pending"
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT retry_count FROM stripe_events WHERE stripe_event_id = 'evt_000001'")
            ).scalar()
            == 0
        )
    assert _audit(engine, "event_requeued") == [("operator:ana", "evt_000001")]

    fixed = process_pending(engine, policy=POLICY, apply=MarkingApply())
    assert fixed.processed == 1 and fixed.tickets_resolved == 1
    ticket = workflow.show_ticket(engine, ticket_id)
    assert ticket["status"] == "resolved" and ticket["resolution"] == "auto_retry"
    assert [h["action"] for h in ticket["history"]] == [
        "ticket_opened",
        "ticket_status_changed",
        "ticket_resolved",
    ]
    assert ticket["events"][0]["status"] == "processed"


def test_auto_retry_with_nothing_left_resolves_at_once(engine: Engine) -> None:
    ticket_id = _dead_letter_one(engine)
    workflow.replay_events(engine, ids=["evt_000001"], actor="operator:bo")
    process_pending(engine, policy=POLICY, apply=MarkingApply())
    result = workflow.requeue_ticket_events(engine, ticket_id, "operator:bo")
    assert (result.events_requeued, result.ticket_status) == (0, "resolved")
    with pytest.raises(workflow.WorkflowError, match="already resolved"):
        workflow.requeue_ticket_events(engine, ticket_id, "operator:bo")


def test_manual_resolution_needs_a_note_and_is_audited(engine: Engine) -> None:
    ticket_id = _dead_letter_one(engine)
    with pytest.raises(workflow.WorkflowError, match="note"):
        workflow.resolve(engine, ticket_id, "  ", "operator:cy")
    workflow.resolve(engine, ticket_id, "refunded by hand in the dashboard", "operator:cy")
    ticket = workflow.show_ticket(engine, ticket_id)
    assert ticket["status"] == "resolved" and ticket["resolution"] == "manual"
    assert ticket["resolved_by"] == "operator:cy"
    assert statuses(engine)["evt_000001"] == "dead_letter"  # the operator chose not to retry
    with pytest.raises(workflow.WorkflowError, match="does not exist"):
        workflow.resolve(engine, 999, "x", "operator:cy")
    assert workflow.list_tickets(engine) == []
    assert [t["id"] for t in workflow.list_tickets(engine, status=None)] == [ticket_id]


def test_replay_by_id_type_time_and_status(engine: Engine) -> None:
    docs = [event_doc(n, created=1_000 + n) for n in range(10)]
    docs += [
        event_doc(
            20 + n,
            event_type="customer.updated",
            created=2_000 + n,
            obj={"id": f"cus_{n}", "object": "customer"},
        )
        for n in range(5)
    ]
    load(engine, docs)
    process_pending(engine, policy=POLICY, apply=MarkingApply())

    def replay(**kw) -> int:
        n = workflow.replay_events(engine, actor="operator:di", **kw)
        process_pending(engine, policy=POLICY, apply=MarkingApply())
        return n

    assert replay(ids=["evt_000001", 3]) == 2
    assert replay(event_type="customer.updated") == 5
    assert replay(event_type="customer.*", since=2_003) == 2
    assert replay(since=1_000, until=1_005) == 5
    assert workflow.replay_events(engine, status="processed", actor="x", dry_run=True) == 15
    counts = marks(engine)
    assert counts["evt_000001"] == 3 and counts["evt_000009"] == 1 and counts["evt_000024"] == 3
    assert len(_audit(engine, "event_replayed")) == 14
    with pytest.raises(workflow.WorkflowError, match="at least one filter"):
        workflow.replay_events(engine, actor="x")
    with pytest.raises(workflow.WorkflowError, match="cannot replay"):
        workflow.replay_events(engine, status="pending", actor="x")
    listed = workflow.list_events(engine, event_type="customer.*", limit=2)
    assert [e["stripe_event_id"] for e in listed] == ["evt_000024", "evt_000023"]


def test_replay_leaves_in_flight_events_alone(engine: Engine) -> None:
    load(engine, [event_doc(1)])
    from stripe_pipeline.process import queue

    if engine.dialect.name == "postgresql":  # held by an open batch's row lock
        with queue.open_batch(engine, worker_id="w", batch_size=5, lease_seconds=60) as batch:
            assert batch.claimed == 1
            assert workflow.replay_events(engine, ids=["evt_000001"], actor="x") == 0
        assert statuses(engine)["evt_000001"] == "pending"
        return
    queue.claim_batch(engine, worker_id="w", batch_size=5, lease_seconds=60)
    assert workflow.replay_events(engine, ids=["evt_000001"], actor="x") == 0
    assert statuses(engine)["evt_000001"] == "processing"


# ---- CLI (through cli.main, as the console script runs it) ----


def _cli(database_url: str, monkeypatch: pytest.MonkeyPatch, capsys, *argv: str):
    monkeypatch.setenv("STRIPE_PIPELINE_DATABASE_URL", database_url)
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_tickets_and_events(
    engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    ticket_id = _dead_letter_one(engine)
    code, out, _ = _cli(database_url, monkeypatch, capsys, "tickets", "list")
    assert code == 0 and "event_permanent_error" in out
    code, out, _ = _cli(database_url, monkeypatch, capsys, "tickets", "show", str(ticket_id))
    assert code == 0 and "evt_000001" in out and "dead_letter" in out
    code, out, _ = _cli(
        database_url, monkeypatch, capsys, "tickets", "show", str(ticket_id), "--json"
    )
    assert json.loads(out)["id"] == ticket_id
    code, out, _ = _cli(database_url, monkeypatch, capsys, "tickets", "retry", str(ticket_id))
    assert code == 0 and "re-queued 1 event(s)" in out
    code, out, err = _cli(
        database_url, monkeypatch, capsys, "tickets", "resolve", str(ticket_id), "--note", "ok"
    )
    assert code == 0
    code, _, err = _cli(
        database_url, monkeypatch, capsys, "tickets", "resolve", str(ticket_id), "--note", "ok"
    )
    assert code == 1 and "already resolved" in err

    code, out, _ = _cli(database_url, monkeypatch, capsys, "process", "--batch-size", "2")
    assert code == 0 and "processed 1" in out
    code, out, _ = _cli(
        database_url, monkeypatch, capsys, "events", "list", "--status", "processed", "--json"
    )
    assert len(json.loads(out)) == 3
    code, out, _ = _cli(
        database_url, monkeypatch, capsys, "events", "replay", "--since", "1970-01-01", "--dry-run"
    )
    assert code == 0 and "would re-queue 3 event(s)" in out
    code, _, err = _cli(database_url, monkeypatch, capsys, "events", "replay")
    assert code == 1 and "at least one filter" in err


def test_cli_bad_arguments_and_unreachable_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    for argv in (
        ["tickets", "show", "abc"],
        ["tickets", "resolve", "1"],  # --note is required
        ["events", "replay", "--since", "yesterday-ish"],
        ["process", "--batch-size", "0"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    capsys.readouterr()
    url = "postgresql+psycopg://nobody:pw@127.0.0.1:1/none"
    for argv in (["tickets", "list"], ["events", "list"], ["process"]):
        code, _, err = _cli(url, monkeypatch, capsys, *argv)
        assert code == 1 and "database unreachable" in err and "pw@" not in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["tickets", "--help"])
    assert exit_info.value.code == 0


def test_open_tickets_in_bulk_dedupes_counts_and_reopens_after_resolution(
    engine: Engine,
) -> None:
    """The set-based path the reconciliation check uses: results in request order, a key
    repeated in one call is one ticket, an open ticket counts occurrences, a resolved
    one leaves its key free for a new ticket."""
    req = {k: TicketRequest("test_issue", f"key:{k}", f"ticket {k}") for k in "abc"}
    with engine.begin() as conn:
        [a] = open_tickets(conn, [req["a"]])
        assert resolve_tickets(conn, {a.ticket_id: "done"}, resolution="manual") == [a.ticket_id]
        assert resolve_tickets(conn, {a.ticket_id: "again"}, resolution="manual") == []
        [b] = open_tickets(conn, [req["b"]])
        results = open_tickets(conn, [req["c"], req["a"], req["b"], req["c"]], actor="bulk")
    c1, a2, b2, c2 = results
    assert a2.created and a2.ticket_id != a.ticket_id  # the resolved ticket stays resolved
    assert not b2.created and b2.ticket_id == b.ticket_id
    assert c1.created and not c2.created and c1.ticket_id == c2.ticket_id
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT dedupe_key, status, occurrences, resolution_note "
                "FROM payment_support_tickets ORDER BY id"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("key:a", "resolved", 1, "done"),
        ("key:b", "open", 2, None),
        ("key:c", "open", 2, None),
        ("key:a", "open", 1, None),
    ]
    opened = [object_id for actor, object_id in _audit(engine, "ticket_opened")]
    assert opened == [str(a.ticket_id), str(b.ticket_id), str(c1.ticket_id), str(a2.ticket_id)]
    assert len(_audit(engine, "ticket_resolved")) == 1
