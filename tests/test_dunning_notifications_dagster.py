"""Dunning notifications leave a Dagster processing run for the notifier its
environment configures, after the batch commits, once.

The ``process_stripe_events`` job runs in its own process, as ``DefaultRunLauncher``
(``deploy/dagster.yaml``) launches every run: a fresh interpreter that loads the code
location ``stripe_pipeline.definitions`` and knows only its environment. The target
is a real HTTP sink on 127.0.0.1 named by ``STRIPE_PIPELINE_NOTIFY_URLS``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from stripe_pipeline.land.envelope import envelope_from_event
from stripe_pipeline.land.store import insert_event
from tests.support.http_sink import http_sink

ROOT = Path(__file__).resolve().parents[1]
JOB = "process_stripe_events"


def _failed_payment_needing_the_customer() -> dict[str, Any]:
    """A 3-D Secure failure: only the customer can fix it (``customer_action``)."""
    return {
        "id": "evt_needs_customer",
        "object": "event",
        "type": "payment_intent.payment_failed",
        "created": int(time.time()),
        "livemode": False,
        "data": {
            "object": {
                "id": "pi_needs_customer",
                "object": "payment_intent",
                "customer": "cus_needs_customer",
                "status": "requires_action",
                "amount": 4200,
                "currency": "eur",
                "last_payment_error": {"code": "authentication_required"},
            }
        },
    }


def _run_processing_job(database_url: str, notify_url: str, home: Path) -> str:
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent))
    assert dagster, "dagster CLI missing from the venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        STRIPE_PIPELINE_DATABASE_URL=database_url,
        STRIPE_PIPELINE_NOTIFY_URLS=notify_url,
    )
    result = subprocess.run(
        [dagster, "job", "execute", "-m", "stripe_pipeline.definitions", "-j", JOB],
        capture_output=True,
        text=True,
        cwd=home,
        env=env,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert "RUN_SUCCESS" in output, output[-3000:]
    return output


def test_a_processing_run_in_its_own_process_notifies_the_configured_webhook_once(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    with engine.begin() as conn:
        insert_event(conn, envelope_from_event(_failed_payment_needing_the_customer()))

    def committed(_message: dict[str, Any]) -> list[tuple[str, str]]:
        # read on our own connection while the run waits for the answer: only rows
        # the run has committed are visible
        with engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    text(
                        "SELECT r.status, e.status FROM payment_recovery_attempts r, "
                        "stripe_events e WHERE e.stripe_event_id = 'evt_needs_customer'"
                    )
                )
            ]

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "dagster.dev.yaml", home / "dagster.yaml")
    with http_sink(on_post=committed) as sink:
        _run_processing_job(database_url, sink.url, home)
        _run_processing_job(database_url, sink.url, home)  # nothing due: nothing sent again

    customer_action = [m for m in sink.received if m["details"].get("audience") == "customer"]
    assert len(customer_action) == 1, sink.received
    [message] = customer_action
    assert message["title"].startswith("Customer action needed to recover a payment")
    assert message["priority"] == "medium"
    assert message["details"]["payment_intent_id"] == "pi_needs_customer"
    assert message["details"]["customer_id"] == "cus_needs_customer"
    # sent after the batch committed: the recovery and the processed event were visible
    assert sink.observed[sink.received.index(message)] == [("awaiting_customer", "processed")]
