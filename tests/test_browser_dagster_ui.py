"""The Dagster UI in a real browser: the project's asset graph and a check result.

Playwright for Python drives Debian's Chromium (``/usr/bin/chromium``; ``playwright
install`` cannot download browsers here, ``.ci/browser`` installs the package) against
the session's ``stripe-pipeline dev``. Under ``CI=true`` a missing browser fails the
run; elsewhere the tests are skipped. Screenshots land in a temporary folder (printed);
set ``STRIPE_PIPELINE_DOCS_SCREENSHOTS=1`` to refresh the ones in ``docs/img/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.demo import REPO, DemoManager, RunningDemo, shared_demo, wait_for

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IN_CI = os.environ.get("CI", "").lower() == "true"
UI_TIMEOUT_MS = 45_000

pytestmark = pytest.mark.slow

ASSETS_QUERY = """
query BrowserTestAssets {
  assetNodes {
    assetKey { path }
    groupName
    repository { name location { name } }
    assetMaterializations(limit: 1) { timestamp }
    assetChecksOrError {
      ... on AssetChecks { checks { name executionForLatestMaterialization { status } } }
    }
  }
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


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    problem = None
    if sync_playwright is None:
        problem = "playwright is not installed (pip install -e '.[dev]')"
    elif not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium, or run .ci/browser)"
    if problem:
        if IN_CI:
            pytest.fail(f"{problem}: required under CI=true")
        pytest.skip(problem)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, screenshots: Path) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(UI_TIMEOUT_MS)
    failed_before = request.session.testsfailed
    yield opened
    if request.session.testsfailed > failed_before:  # what the browser saw when it failed
        opened.screenshot(path=str(screenshots / f"failed-{request.node.name}.png"))
        print(f"screenshot of the failure: {screenshots / f'failed-{request.node.name}.png'}")
    context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def save_screenshot(page: Page, folder: Path, name: str) -> Path:
    path = folder / name
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    if os.environ.get("STRIPE_PIPELINE_DOCS_SCREENSHOTS"):
        shutil.copyfile(path, REPO / "docs" / "img" / name)
    return path


def dismiss_welcome_dialog(page: Page) -> None:
    """Dagster's first-visit newsletter dialog covers the page; a new profile always gets it."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=8_000)
    except Exception:
        return
    skip.click()


def asset_nodes(demo: RunningDemo) -> list[dict[str, Any]]:
    return demo.graphql(ASSETS_QUERY)["assetNodes"]


def materialized(demo: RunningDemo, name: str) -> dict[str, Any] | None:
    for node in asset_nodes(demo):
        if node["assetKey"]["path"] == [name] and node["assetMaterializations"]:
            return node
    return None


def test_asset_graph_shows_the_pipeline(demo: RunningDemo, page: Page, screenshots: Path) -> None:
    node = wait_for("stripe_payments materialized by the demo",
                    lambda: materialized(demo, "stripe_payments"), timeout=90)  # fmt: skip
    repository = node["repository"]
    # the UI's route takes the address as is: percent-encoding it shows an empty graph
    address = f"{repository['name']}@{repository['location']['name']}"
    page.goto(
        f"{demo.dagster_url}/locations/{address}/asset-groups/{node['groupName']}",
        wait_until="domcontentloaded",
    )
    dismiss_welcome_dialog(page)
    for asset in ("stripe_payments", "stripe_disputes", "stripe_refunds", "stripe_events"):
        expect(page.get_by_text(asset, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_text("Materialized", exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    # the nodes finish loading their latest materialization before the picture is taken
    expect(page.get_by_text("Loading...")).to_have_count(0, timeout=UI_TIMEOUT_MS)
    save_screenshot(page, screenshots, "dagster-asset-graph.png")


def test_check_result_is_shown(demo: RunningDemo, page: Page, screenshots: Path) -> None:
    def executed_check() -> tuple[list[str], str, str] | None:
        for node in asset_nodes(demo):
            for check in (node.get("assetChecksOrError") or {}).get("checks") or []:
                status = (check.get("executionForLatestMaterialization") or {}).get("status")
                if status in ("SUCCEEDED", "FAILED"):
                    return node["assetKey"]["path"], check["name"], status
        return None

    key, check_name, status = wait_for("an executed asset check", executed_check, timeout=90)
    page.goto(
        f"{demo.dagster_url}/assets/{'/'.join(key)}?view=checks", wait_until="domcontentloaded"
    )
    dismiss_welcome_dialog(page)
    # the checks list also holds hidden copies of each name (it measures them to truncate)
    named = page.get_by_text(check_name).filter(visible=True).first
    expect(named).to_be_visible(timeout=UI_TIMEOUT_MS)
    verdict = "Passed" if status == "SUCCEEDED" else "Failed"
    expect(page.get_by_text(verdict, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    save_screenshot(page, screenshots, "dagster-asset-check.png")
