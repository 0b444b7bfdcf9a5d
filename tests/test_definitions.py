"""Every Dagster definition loads, with placeholder environment, as the UI would load it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dagster import Definitions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def placeholder_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STRIPE_PIPELINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_placeholder")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_placeholder")


def test_definitions_load_and_validate(placeholder_env: None) -> None:
    from stripe_pipeline.definitions import defs

    assert isinstance(defs, Definitions)
    Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    # every job, the implicit one of model automation too, runs its steps in one
    # process: a subprocess per step costs seconds each (a model rebuild took minutes)
    assert {job.name: job.executor_def.name for job in repo.get_all_jobs()} == {
        name: "in_process"
        for name in (
            "__ASSET_JOB",
            "daily_privacy",
            "erase_customer",
            "fraud_screening",
            "nightly_reconciliation",
            "payment_recovery",
            "process_stripe_events",
            "reconciliation_window",
            "refresh_models",
            "replay_stripe_events",
            "support_ticket_action",
        )
    }


def test_workspace_yaml_names_the_code_location() -> None:
    text = (ROOT / "workspace.yaml").read_text()
    assert "stripe_pipeline.definitions" in text and "defs" in text


def test_domain_core_and_receiver_never_import_dagster_or_flask() -> None:
    """Layering: the domain core imports neither dagster nor flask nor the dev tooling (whose
    fake Stripe front is a Flask app); the receiver no dagster."""
    probe = (
        "import sys, importlib, pkgutil, stripe_pipeline\n"
        "for m in pkgutil.walk_packages(stripe_pipeline.__path__, 'stripe_pipeline.'):\n"
        "    if m.name.startswith(('stripe_pipeline.defs', 'stripe_pipeline.definitions',"
        " 'stripe_pipeline.cli', 'stripe_pipeline.db.migrations',"
        " 'stripe_pipeline.devtools')):\n"
        "        continue\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('dagster', 'flask')"
        " or n.startswith('stripe_pipeline.devtools.'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_receiver_never_imports_dagster() -> None:
    """The receiver's workers stay small and fast to start: no dagster in them."""
    probe = (
        "import sys, importlib, pkgutil, receiver\n"
        "for m in pkgutil.walk_packages(receiver.__path__, 'receiver.'):\n"
        "    if m.name != 'receiver.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "from receiver.app import create_app\n"
        "print(','.join(sorted(n for n in sys.modules if n.split('.')[0] == 'dagster')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


_SCHEDULE_STATUSES = (
    "from stripe_pipeline.definitions import defs\n"
    "repo = defs.get_repository_def()\n"
    "for s in sorted(repo.schedule_defs, key=lambda s: s.name):\n"
    "    print(s.name, s.default_status.value)\n"
)
_SWITCHES = (
    "STRIPE_PIPELINE_RECONCILIATION_SCHEDULE",
    "STRIPE_PIPELINE_FRAUD_SCHEDULE",
    "STRIPE_PIPELINE_RECOVERY_SCHEDULE",
    "STRIPE_PIPELINE_PRIVACY_SCHEDULE",
)


def _schedule_statuses(tmp_path: Path, **switches: str) -> dict[str, str]:
    """Default statuses of the code location's schedules, loaded in a fresh process
    (the schedules read their switches when the code location loads)."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in _SWITCHES}
    env.update(STRIPE_PIPELINE_DATA_DIR=str(tmp_path), **switches)
    out = subprocess.run(
        [sys.executable, "-c", _SCHEDULE_STATUSES],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return dict(line.split() for line in out.stdout.splitlines())


def test_schedules_that_charge_nothing_run_by_default_and_recovery_is_opt_in(
    tmp_path: Path,
) -> None:
    assert _schedule_statuses(tmp_path) == {
        "daily_privacy_schedule": "RUNNING",
        "fraud_screening_schedule": "RUNNING",
        "nightly_reconciliation_schedule": "RUNNING",
        "payment_recovery_schedule": "STOPPED",
    }
    switched = _schedule_statuses(
        tmp_path,
        STRIPE_PIPELINE_RECONCILIATION_SCHEDULE="off",
        STRIPE_PIPELINE_FRAUD_SCHEDULE="OFF",
        STRIPE_PIPELINE_RECOVERY_SCHEDULE="on",
        STRIPE_PIPELINE_PRIVACY_SCHEDULE="off",
    )
    assert switched == {
        "daily_privacy_schedule": "STOPPED",
        "fraud_screening_schedule": "STOPPED",
        "nightly_reconciliation_schedule": "STOPPED",
        "payment_recovery_schedule": "RUNNING",
    }


def test_a_wrong_schedule_switch_names_the_variable() -> None:
    from stripe_pipeline.config import ConfigError, load_schedule_options

    assert load_schedule_options({}).payment_recovery is False
    assert (
        load_schedule_options({"STRIPE_PIPELINE_FRAUD_SCHEDULE": " no "}).fraud_screening is False
    )
    with pytest.raises(ConfigError, match="STRIPE_PIPELINE_RECOVERY_SCHEDULE must be on or off"):
        load_schedule_options({"STRIPE_PIPELINE_RECOVERY_SCHEDULE": "sometimes"})
