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
    assert repo.get_all_jobs() is not None


def test_workspace_yaml_names_the_code_location() -> None:
    text = (ROOT / "workspace.yaml").read_text()
    assert "stripe_pipeline.definitions" in text and "defs" in text


def test_domain_core_and_receiver_never_import_dagster_or_flask() -> None:
    """Layering: the domain core imports neither dagster nor flask; the receiver no dagster."""
    probe = (
        "import sys, importlib, pkgutil, stripe_pipeline\n"
        "for m in pkgutil.walk_packages(stripe_pipeline.__path__, 'stripe_pipeline.'):\n"
        "    if m.name.startswith(('stripe_pipeline.defs', 'stripe_pipeline.definitions',"
        " 'stripe_pipeline.cli', 'stripe_pipeline.db.migrations')):\n"
        "        continue\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('dagster', 'flask'))\n"
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
