"""The ``stripe-pipeline`` command: migrations and clear errors with non-zero exits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(
    *args: str, env_extra: dict[str, str] | None = None, data_dir: Path
) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DAGSTER_"))}
    env["STRIPE_PIPELINE_DATA_DIR"] = str(data_dir)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "stripe_pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_db_upgrade_current_downgrade_on_embedded_sqlite(tmp_path: Path) -> None:
    before = run_cli("db", "current", data_dir=tmp_path)
    assert before.returncode == 1 and "behind head" in before.stdout

    up = run_cli("db", "upgrade", data_dir=tmp_path)
    assert up.returncode == 0, up.stderr
    assert (tmp_path / "stripe_pipeline.db").exists()
    current = run_cli("db", "current", data_dir=tmp_path)
    assert current.returncode == 0 and "up to date" in current.stdout

    down = run_cli("db", "downgrade", "base", data_dir=tmp_path)
    assert down.returncode == 0 and "base (empty)" in down.stdout


@pytest.mark.postgres
@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
def test_db_upgrade_on_postgresql(empty_database_url: str, tmp_path: Path) -> None:
    env = {"STRIPE_PIPELINE_DATABASE_URL": empty_database_url}
    assert run_cli("db", "upgrade", env_extra=env, data_dir=tmp_path).returncode == 0
    current = run_cli("db", "current", env_extra=env, data_dir=tmp_path)
    assert current.returncode == 0 and "up to date" in current.stdout


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    env = {"STRIPE_PIPELINE_DATABASE_URL": "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"}
    result = run_cli("db", "current", env_extra=env, data_dir=tmp_path)
    assert result.returncode == 1
    assert "database unreachable" in result.stderr
    assert "secret" not in result.stderr  # the password never reaches the terminal
    assert "Traceback" not in result.stderr


def test_bad_arguments_exit_2_with_usage(tmp_path: Path) -> None:
    result = run_cli("db", "sideways", data_dir=tmp_path)
    assert result.returncode == 2 and "invalid choice" in result.stderr
    result = run_cli("serve", "--port", "0", data_dir=tmp_path)
    assert result.returncode == 2 and "must be >= 1" in result.stderr


def test_help_lists_every_environment_variable(tmp_path: Path) -> None:
    result = run_cli("--help", data_dir=tmp_path)
    assert result.returncode == 0
    for name in (
        "STRIPE_PIPELINE_DATABASE_URL",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_API_KEY",
        "STRIPE_API_BASE",
        "DAGSTER_HOME",
    ):
        assert name in result.stdout


# localstripe serves no /v1/disputes
LOCALSTRIPE_TYPES = [f"--object-type={t}" for t in ("payment", "refund", "subscription", "invoice")]


def test_reconcile_backfills_from_the_api_and_fails_clearly_without_a_key(tmp_path: Path) -> None:
    """`stripe-pipeline reconcile` against localstripe: missed events land as 'reconciliation'."""
    import sqlite3

    import stripe

    from tests.support.localstripe_peer import start_localstripe

    missing_key = run_cli("reconcile", data_dir=tmp_path)
    assert missing_key.returncode == 1 and "STRIPE_API_KEY" in missing_key.stderr

    ls = start_localstripe()
    try:
        client = stripe.StripeClient(ls.api_key, base_addresses={"api": ls.base_url})
        customer = client.v1.customers.create(params={"email": "cli@example.com"})
        env = {"STRIPE_API_KEY": ls.api_key, "STRIPE_API_BASE": ls.base_url}
        result = run_cli(
            "reconcile",
            "--full",
            "--no-server-filter",
            *LOCALSTRIPE_TYPES,
            env_extra=env,
            data_dir=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert "succeeded" in result.stdout
    finally:
        ls.stop()
    with sqlite3.connect(tmp_path / "stripe_pipeline.db") as db:
        rows = db.execute("SELECT event_type, source, object_id FROM stripe_events").fetchall()
    assert ("customer.created", "reconciliation", customer.id) in rows


def test_processing_options_come_from_one_place() -> None:
    from stripe_pipeline.config import ConfigError, load_processing_options
    from stripe_pipeline.defs.common.resources import ProcessingSettings

    options = load_processing_options(
        {"STRIPE_PIPELINE_BATCH_SIZE": "250", "STRIPE_PIPELINE_RETRY_JITTER": "full"}
    )
    assert (options.batch_size, options.retry_jitter, options.workers) == (250, "full", 2)
    with pytest.raises(ConfigError, match="STRIPE_PIPELINE_RETRY_FACTOR"):
        load_processing_options({"STRIPE_PIPELINE_RETRY_FACTOR": "fast"})
    assert ProcessingSettings().batch_size == load_processing_options({}).batch_size


def test_readme_documents_every_environment_variable() -> None:
    from stripe_pipeline.config import ENVIRONMENT

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [name for name in ENVIRONMENT if f"`{name}`" not in readme]
    assert missing == []


def test_readme_main_job_runs_on_a_fresh_embedded_database(tmp_path: Path) -> None:
    """The README's second quickstart command, in an empty folder: it migrates and runs."""
    import os
    import shutil

    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent))
    assert dagster, "dagster CLI missing from the venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DAGSTER_"))}
    result = subprocess.run(
        [
            dagster,
            "job",
            "execute",
            "-m",
            "stripe_pipeline.definitions",
            "-j",
            "process_stripe_events",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert "RUN_SUCCESS" in result.stdout + result.stderr, result.stderr[-3000:]
    assert (tmp_path / "data" / "stripe_pipeline.db").exists()


def test_integer_arguments_beyond_64_bits_are_usage_errors(tmp_path: Path) -> None:
    huge = "99999999999999999999999"
    for args in (
        ["tickets", "show", huge],
        ["tickets", "retry", huge],
        ["events", "list", "--id", huge],
        ["events", "replay", "--since", huge, "--dry-run"],
        ["process", "--batch-size", huge],
    ):
        result = run_cli(*args, data_dir=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and errors[0].endswith("must be at most 9223372036854775807")
        assert "Traceback" not in result.stderr


def test_backfill_lands_the_history_of_a_window_and_a_rerun_finds_nothing(
    tmp_path: Path,
) -> None:
    """`stripe-pipeline backfill --since/--until` against the Stripe-shaped fake (it has
    created filters and cursors, which localstripe refuses): every object created in
    the window lands in its table, nothing outside it; the same command again finds
    every object equal."""
    import json
    import sqlite3
    from datetime import UTC, datetime

    from tests.support.fake_stripe_data import DataSet, load_templates
    from tests.support.fake_stripe_server import FakeStripeServer

    start = 1_700_000_000
    data = DataSet.generate(
        {"disputes": 150, "refunds": 250},
        start=start,
        end=start + 30 * 86_400,
        templates=load_templates(),
    )
    since, until = "2023-11-20", "2023-12-01"
    lo = int(datetime(2023, 11, 20, tzinfo=UTC).timestamp())
    hi = int(datetime(2023, 12, 1, tzinfo=UTC).timestamp())
    in_window = {
        name: int(((r.created >= lo) & (r.created <= hi)).sum())
        for name, r in data.resources.items()
    }
    assert run_cli("db", "upgrade", data_dir=tmp_path).returncode == 0
    args = ["backfill", "--since", since, "--until", until, "--json"]
    args += ["--object-type=dispute", "--object-type=refund"]
    with FakeStripeServer(data, latency=0.01, account_rate=1000, endpoint_rate=1000) as fake:
        env = {
            "STRIPE_API_KEY": "sk_test_cli_backfill",
            "STRIPE_API_BASE": fake.base_url,
            "STRIPE_PIPELINE_SPOOL_DIR": str(tmp_path / "spool"),
        }
        first = run_cli(*args, env_extra=env, data_dir=tmp_path)
        assert first.returncode == 0, first.stderr
        again = run_cli(*args, env_extra=env, data_dir=tmp_path)
        assert again.returncode == 0, again.stderr
    counts = json.loads(first.stdout)["counts"]
    assert counts["compare"]["found"] == {"missing_locally": sum(in_window.values())}
    assert "backfill" not in counts  # Stripe keeps events 30 days: none to list for 2023
    with sqlite3.connect(tmp_path / "stripe_pipeline.db") as db:
        stored = {
            "disputes": db.execute("SELECT count(*) FROM stripe_disputes").fetchone()[0],
            "refunds": db.execute("SELECT count(*) FROM stripe_refunds").fetchone()[0],
        }
    assert stored == in_window and 0 < sum(stored.values()) < 400
    assert json.loads(again.stdout)["counts"]["compare"]["found"] == {}
