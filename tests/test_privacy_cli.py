"""``stripe-pipeline erase`` and ``stripe-pipeline retention`` as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine

from tests.support import privacy_data as pd
from tests.support import retention_data as rd
from tests.test_cli import run_cli


def test_erase_from_the_command_line(
    database_url: str, engine: Engine, stripe_fixtures: dict, tmp_path: Path
) -> None:
    pd.seed(engine, stripe_fixtures, [pd.ADA])
    env = {"STRIPE_PIPELINE_DATABASE_URL": database_url}
    dry = run_cli(
        "erase",
        "--customer",
        pd.ADA.customer_id,
        "--dry-run",
        "--json",
        env_extra=env,
        data_dir=tmp_path,
    )
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["counts"]["stripe_events"] == 10
    assert pd.leaks(engine, pd.ADA.secrets())

    done = run_cli(
        "erase",
        "--customer",
        pd.ADA.customer_id,
        "--actor",
        "dpo:ticket-42",
        env_extra=env,
        data_dir=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert f"{pd.ADA.customer_id}: changed" in done.stdout and "stripe_events: 10" in done.stdout
    assert pd.leaks(engine, pd.ADA.secrets()) == []
    assert pd.row(engine, "erasures", "customer_id", pd.ADA.customer_id)["requested_by"] == (
        "dpo:ticket-42"
    )


def test_retention_from_the_command_line(database_url: str, engine: Engine, tmp_path: Path) -> None:
    rd.seed_events(engine)
    env = {"STRIPE_PIPELINE_DATABASE_URL": database_url}
    dry = run_cli("retention", "--dry-run", env_extra=env, data_dir=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "retention (would): payloads dropped to envelope 4" in dry.stdout
    done = run_cli("retention", "--json", env_extra=env, data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["retention"]["payloads_dropped"] == 4


def test_bad_requests_are_clear_errors(tmp_path: Path) -> None:
    bad = run_cli("erase", "--customer", "jane@example.com", data_dir=tmp_path)
    assert bad.returncode == 1 and "not a Stripe customer id" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = run_cli("erase", data_dir=tmp_path)
    assert missing.returncode == 2 and "--customer" in missing.stderr
    env = {"STRIPE_PIPELINE_RETENTION_PAYLOAD_DAYS": "ninety"}
    config = run_cli("retention", "--dry-run", env_extra=env, data_dir=tmp_path)
    assert config.returncode == 2 and "STRIPE_PIPELINE_RETENTION_PAYLOAD_DAYS" in config.stderr
