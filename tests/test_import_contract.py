"""The import contract (``[tool.importlinter]`` in pyproject.toml): stages import
downward only, no cycles between top-level packages, no dagster or flask in the core.

Runs ``lint-imports`` on the project, and on copies of it with a violation added, to
show the contract is not vacuous: each injected import must break it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert tool, "lint-imports missing: install the dev extras (import-linter)"
    # the copy's packages first, ahead of the installed (editable) project
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run(
        [tool, "--no-cache"],  # reads the contract from ./pyproject.toml
        capture_output=True,
        text=True,
        cwd=project,
        env=env,
        timeout=300,
    )


def test_the_project_keeps_its_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    for package in ("stripe_pipeline", "receiver"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


# (module of the copy, line appended, the contract the line must break)
VIOLATIONS = {
    # the cycle issue 14 removed: processing registering dunning by importing it
    "process-imports-recover": (
        "stripe_pipeline/process/runner.py",
        "import stripe_pipeline.recover.hook",
        "Stages import downward only BROKEN",
    ),
    # the other one: the support workflow reaching up into the queue
    "support-imports-process": (
        "stripe_pipeline/support/workflow.py",
        "import stripe_pipeline.process.queue",
        "No import cycles between the top-level packages BROKEN",
    ),
    "core-imports-devtools": (
        "stripe_pipeline/reconcile/run.py",
        "import stripe_pipeline.devtools.stripe_peer",
        "stripe_pipeline.reconcile is not allowed to import stripe_pipeline.devtools",
    ),
    "core-imports-dagster": (
        "stripe_pipeline/process/queue.py",
        "import dagster",
        "stripe_pipeline.process is not allowed to import dagster",
    ),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_an_added_violation_breaks_the_contract(project_copy: Path, name: str) -> None:
    module, line, broken = VIOLATIONS[name]
    with (project_copy / module).open("a") as source:
        source.write(f"\n{line}  # noqa: injected by the test\n")
    result = lint_imports(project_copy)
    assert result.returncode != 0, result.stdout[-4000:]
    assert broken in " ".join(result.stdout.split()), result.stdout[-4000:]
