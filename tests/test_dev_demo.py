"""``stripe-pipeline dev``: one real demo (localstripe, receiver, dagster dev) per session.

The demo runs as a subprocess on free ports with a temporary data folder. The tests
read what it produced from the app database and Dagster's GraphQL API, then stop it
the way a person does (Ctrl-C) and prove that no child process survives and that a
second run continues with the same data.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe
from sqlalchemy import text

from stripe_pipeline.cli import main
from stripe_pipeline.devtools import fixture_events as fx
from stripe_pipeline.devtools.dagster_api import SENSORS_QUERY, DagsterAPI
from stripe_pipeline.devtools.demo import API_KEY
from stripe_pipeline.devtools.processes import Supervisor, descendants, group_alive, is_alive
from tests.support.demo import DemoManager, RunningDemo, free_port, shared_demo, wait_for

RUNS_QUERY = """
query DemoRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) { ... on Runs { results { runId status jobName } } }
}
"""


@pytest.fixture(scope="session")
def demo_manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoManager]:
    manager = shared_demo(tmp_path_factory.mktemp("dev_demo"))
    yield manager
    manager.stop()


@pytest.fixture
def demo(demo_manager: DemoManager) -> RunningDemo:
    return demo_manager.running()


def _runs(demo: RunningDemo, job: str, status: str | None = None) -> list[dict]:
    run_filter: dict = {"pipelineName": job}
    if status:
        run_filter["statuses"] = [status]
    data = demo.graphql(RUNS_QUERY, filter=run_filter)
    return data["runsOrError"]["results"]


RUN_STATUS_QUERY = """
query DemoRunStatus($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } }
}
"""
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
# the tickets the demo provokes on purpose: the dispute that names no charge is dead-
# lettered (its ticket, and the dead-letter check's), and its disputes, opened on
# customers who still pay, trip the fraud rule for exactly that. One more is true of
# the demo's Stripe and of no real one: localstripe keeps no balance ledger, so after
# a reconciliation run its charges have no balance transactions (payment_fees_missing)
DELIBERATE_TICKETS = {
    "event_permanent_error",
    "check:events_dead_lettered",
    "fraud_suspected",
    "check:payment_fees_missing",
}

FAILURE_EVENTS_QUERY = """
query DemoRunFailure($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { error { message } }
      }
    }
  }
}
"""


def _failure_messages(demo: RunningDemo, run_id: str) -> list[str]:
    """Why a run failed (its failure events), for the assertion message."""
    events = demo.graphql(FAILURE_EVENTS_QUERY, runId=run_id)["logsForRun"].get("events", [])
    return [
        f"{e['__typename']}: {(e.get('error') or {}).get('message') or e.get('message')}"[:600]
        for e in events
        if "Failure" in e["__typename"] or "Error" in e["__typename"]
    ]


def _localstripe_customers(demo: RunningDemo) -> int:
    request = urllib.request.Request(
        f"{demo.localstripe_url}/v1/customers?limit=100",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return len(json.loads(response.read())["data"])


# -- fast: no demo needed -----------------------------------------------------------


def test_dev_help_lists_the_ports(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dev", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    flags = ("--receiver-port", "--dagster-port", "--localstripe-port", "--stripe-api-port")
    for flag in (*flags, "--data-dir"):
        assert flag in out


def test_dev_rejects_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dev", "--receiver-port", "70000"])
    assert exit_info.value.code == 2
    assert "TCP port" in capsys.readouterr().err


def test_busy_port_fails_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(
            ["dev", "--data-dir", str(tmp_path / "data"), "--receiver-port", str(port),
             "--dagster-port", str(free_port()), "--localstripe-port", str(free_port()),
             "--stripe-api-port", str(free_port())]
        )  # fmt: skip
    assert code == 1
    assert f"port {port} for receiver is in use" in capsys.readouterr().err
    assert not (tmp_path / "data" / "logs").exists()  # no child was started


def test_fixture_events_carry_a_signature_stripe_accepts() -> None:
    charge = {"id": "ch_test", "amount": 1500, "currency": "usd", "payment_intent": "pi_test"}
    dispute = fx.dispute(
        charge, "needs_response", dispute_id="dp_x", due_in_days=3, reason="general"
    )
    evt = fx.event("charge.dispute.created", dispute)
    payload = json.dumps(evt).encode()
    verified = stripe.Webhook.construct_event(payload, fx.sign(payload, "whsec_t"), "whsec_t")
    assert verified["data"]["object"]["charge"] == "ch_test"
    assert verified["data"]["object"]["evidence_details"]["due_by"] > evt["created"]


def test_fixture_events_say_what_the_api_says_of_their_objects() -> None:
    """A fixture-built event names the real charge's card and refunds as they were made,
    and the trial is the real subscription (its plan, its items): nothing the nightly
    reconciliation would find missing or different in the demo's Stripe."""
    charge = {
        "id": "ch_real",
        "amount": 1500,
        "currency": "usd",
        "payment_intent": "pi_real",
        "payment_method": "pm_real",
        "customer": "cus_real",
        "created": 1_700_000_000,
    }
    refund = {"id": "re_real", "amount": 500, "status": "succeeded", "reason": None}
    refunded = fx.refunded_charge(charge, [refund], include_refunds=True)
    assert refunded["payment_method"] == "pm_real"
    assert refunded["amount_refunded"] == 500
    assert [(r["id"], r["reason"]) for r in refunded["refunds"]["data"]] == [("re_real", None)]

    item = {"id": "si_real", "plan": {"id": "demo-pro-monthly", "amount": 2900}}
    real = {
        "id": "sub_real",
        "customer": "cus_real",
        "status": "active",
        "created": 1_700_000_000,
        "current_period_end": 1_702_592_000,
        "items": {"object": "list", "data": [item]},
    }
    trialing = fx.trialing_subscription(real)
    assert trialing["status"] == "trialing"
    assert trialing["items"]["data"] == [item]  # the plan that exists, not the fixture's
    assert trialing["customer"] == "cus_real" and real["status"] == "active"  # a copy
    assert trialing["trial_end"] == trialing["current_period_end"] > trialing["trial_start"]


def test_supervisor_kills_a_group_that_ignores_sigint_and_sigterm(tmp_path: Path) -> None:
    """What a backgrounded ``dagster dev`` does: ignore both signals, with children."""
    supervisor = Supervisor(tmp_path / "logs", os.environ, cwd=tmp_path)
    stubborn = 'trap "" INT TERM; sleep 300 & sleep 300 & echo started; wait'
    child = supervisor.start("stubborn", ["sh", "-c", stubborn])
    wait_for("the children", lambda: len(descendants(child.pid)) >= 2, timeout=10, interval=0.05)
    tree = descendants(child.pid) | {child.pid}

    supervisor.stop()

    assert not group_alive(child.pid)
    assert not [pid for pid in tree if is_alive(pid)]
    assert "started" in child.log_path.read_text()


# -- the running demo -------------------------------------------------------------------


@pytest.mark.slow
def test_receiver_stored_events_from_localstripe_and_fixtures(demo: RunningDemo) -> None:
    def stored() -> dict[str, int]:
        rows = {
            kind: demo.scalar("SELECT COUNT(*) FROM stripe_events WHERE event_type = :t", t=kind)
            for kind in ("customer.created", "payment_intent.succeeded", "charge.dispute.created")
        }
        # six customers in the first burst; localstripe delivers about a second later
        return rows if all(rows.values()) and rows["customer.created"] >= 6 else {}

    wait_for("events from localstripe and fixture-built events", stored, timeout=60)
    # the fixture events were delivered twice in places: deduplicated on the event id
    dupes = demo.scalar("SELECT COUNT(*) - COUNT(DISTINCT stripe_event_id) FROM stripe_events")
    assert dupes == 0
    output = demo.output_text()
    for part in ("Dagster UI", "receiver", "fake Stripe API", "localstripe ready"):
        assert part in output


@pytest.mark.slow
def test_dagster_processed_events_into_domain_tables(demo: RunningDemo) -> None:
    tables = ["stripe_payments", "stripe_refunds", "stripe_disputes", "stripe_subscriptions",
              "stripe_customers", "stripe_invoices"]  # fmt: skip

    def filled() -> dict[str, int]:
        counts = {t: demo.scalar(f"SELECT COUNT(*) FROM {t}") for t in tables}
        return counts if all(counts.values()) else {}

    counts = wait_for("domain rows written by Dagster runs", filled, timeout=90)
    assert counts["stripe_disputes"] >= 2
    wait_for("a successful process_stripe_events run",
             lambda: _runs(demo, "process_stripe_events", "SUCCESS"), timeout=60)  # fmt: skip
    pending = demo.scalar("SELECT COUNT(*) FROM stripe_events WHERE status = 'pending'")
    processed = demo.scalar("SELECT COUNT(*) FROM stripe_events WHERE status = 'processed'")
    assert processed > pending


@pytest.mark.slow
def test_the_unappliable_event_became_a_support_ticket(demo: RunningDemo) -> None:
    sql = (
        "SELECT COUNT(*) FROM payment_support_tickets t JOIN stripe_events e "
        "ON e.stripe_event_id = t.stripe_event_id "
        "WHERE e.event_type = 'charge.dispute.created' AND t.status = 'open'"
    )
    assert wait_for("a support ticket for the dispute without a charge",
                    lambda: demo.scalar(sql), timeout=90)  # fmt: skip


def _run_status(demo: RunningDemo, run_id: str) -> str:
    return demo.graphql(RUN_STATUS_QUERY, runId=run_id)["runOrError"].get("status", "")


@pytest.mark.slow
def test_nightly_reconciliation_agrees_with_the_demos_stripe(demo: RunningDemo) -> None:
    """The Stripe the pipeline reads (the front over localstripe) says what the demo's
    events said: a reconciliation over the window since the last run (the demo's objects
    are today's; the nightly job reconciles yesterday) finds no discrepancy and opens no
    ticket, and every Dagster run the demo started is green."""
    unsettled = "SELECT COUNT(*) FROM stripe_events WHERE status IN ('pending', 'processing')"
    wait_for("every event processed",
             lambda: demo.scalar("SELECT COUNT(*) FROM stripe_events WHERE status = 'processed'")
             and not demo.scalar(unsettled), timeout=120)  # fmt: skip
    wait_for("the demo's own follow-up runs",
             lambda: "launched Dagster job reconciliation_window" in demo.output_text(),
             timeout=120)  # fmt: skip
    api = DagsterAPI(demo.dagster_url)
    repository, location = api.jobs()["reconciliation_window"]

    run_id = api.launch("reconciliation_window", repository, location)
    status = wait_for("the reconciliation_window run to finish",
                      lambda: _run_status(demo, run_id) in FINISHED and _run_status(demo, run_id),
                      timeout=240, interval=1)  # fmt: skip

    assert status == "SUCCESS", _failure_messages(demo, run_id)
    runs = demo.scalar(
        "SELECT COUNT(*) FROM reconciliation_runs WHERE status = 'succeeded' AND triggered_by = :t",
        t=f"dagster:{run_id}",
    )
    assert runs == 1
    with demo.engine.connect() as conn:
        # not one, by this run or the demo's own: not even a repaired one
        found = conn.execute(
            text("SELECT object_type, object_id, kind, field FROM reconciliation_discrepancies")
        ).all()
        tickets = conn.execute(
            text("SELECT issue_type, title FROM payment_support_tickets WHERE status = 'open'")
        ).all()
    assert found == []
    assert {issue for issue, _ in tickets} <= DELIBERATE_TICKETS, tickets
    assert any(issue == "event_permanent_error" for issue, _ in tickets)  # the ticket path ran

    finished = [
        r for r in demo.graphql(RUNS_QUERY, filter={})["runsOrError"]["results"]
        if r["status"] in FINISHED
    ]  # fmt: skip
    assert {r["jobName"] for r in finished} >= {
        "process_stripe_events", "reconciliation_window", "payment_recovery", "fraud_screening"
    }  # fmt: skip
    failed = {
        (r["jobName"], r["status"]): _failure_messages(demo, r["runId"])
        for r in finished
        if r["status"] != "SUCCESS"
    }
    assert failed == {}


@pytest.mark.slow
def test_ctrl_c_stops_every_child_and_a_second_run_reuses_the_data(
    demo_manager: DemoManager,
) -> None:
    first = demo_manager.running()
    processed = "SELECT COUNT(*) FROM stripe_events WHERE status = 'processed'"
    wait_for("processed events", lambda: first.scalar(processed), timeout=90)
    events_before = first.scalar("SELECT COUNT(*) FROM stripe_events")
    customers_before = _localstripe_customers(first)
    runs_before = len(_runs(first, "process_stripe_events"))
    children = first.status()["children"]
    assert set(children) == {"dagster", "localstripe", "receiver"}
    assert len(first.seen_pids) > len(children)  # webserver, daemon, code server, workers

    assert first.stop() == 130  # the shell's code for "ended by Ctrl-C"
    assert first.survivors() == []
    assert first.status()["stage"] == "stopped"

    second = demo_manager.start("--no-traffic")
    second.wait_stage("running")
    assert second.scalar("SELECT COUNT(*) FROM stripe_events") >= events_before
    assert _localstripe_customers(second) == customers_before  # localstripe's state file
    assert len(_runs(second, "process_stripe_events")) >= runs_before  # same DAGSTER_HOME
    # the sensors paused on the way out run again (the automation one included)
    nodes = second.graphql(SENSORS_QUERY)["repositoriesOrError"]["nodes"]
    running = {
        sensor["name"]
        for repo in nodes
        for sensor in repo["sensors"]
        if sensor["sensorState"]["status"] == "RUNNING"
    }
    assert {"stripe_events_sensor", "models_automation_sensor"} <= running
    # every run of the first session is green: none failed, none was killed by Ctrl-C
    # (the demo lets runs in flight finish, or cancels them, before it stops Dagster)
    failed = second.graphql(RUNS_QUERY, filter={"statuses": ["FAILURE"]})
    reasons = {
        (r["jobName"], r["runId"]): _failure_messages(second, r["runId"])
        for r in failed["runsOrError"]["results"]
    }
    assert reasons == {}
