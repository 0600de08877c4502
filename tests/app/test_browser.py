"""One real-browser test: ``streamlit run`` headless, driven through Debian's Chromium by Playwright.

Screenshots of each step are saved under ``artifacts/`` (gitignored) as test artifacts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from forecasting.store import Store
from tests.fixtures.services import free_port
from tests.fixtures.stores import ROOT, worker_env

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
CHART = '[data-testid="stPlotlyChart"] .main-svg'
ROW_PX = 35  # st.dataframe's default row (and header) height

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium binary (install Debian's chromium: `make browser`)"),
]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    """Wait for Streamlit's health endpoint, failing early if the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"streamlit exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"streamlit did not answer on {url} within {timeout} s")


@pytest.fixture(scope="module")
def dashboard_url(worker_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``streamlit run streamlit_app.py`` on a free port against the test store."""
    port = free_port()
    log = (tmp_path_factory.mktemp("streamlit") / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "streamlit_app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        env={**os.environ, **worker_env(worker_db)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def assert_clean(page) -> None:
    """No exception box and no traceback anywhere on the page."""
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "Traceback" not in page.inner_text("body")


def test_fleet_instance_and_upload_in_a_real_browser(
    dashboard_url: str, worker_db: Path, demo_export: bytes, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    with Store(worker_db, readonly=True) as store:
        ids = [inst.instance_id for inst in store.samples.instances()]
    export = tmp_path / "export.json"
    export.write_bytes(demo_export)
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)

            # a shared link as the very first request of a fresh server lands on its page, inside the app's navigation
            page.goto(f"{dashboard_url}/instance?instance={ids[-1]}")
            page.wait_for_selector(CHART)
            assert page.get_by_role("link", name="Fleet").count() >= 1  # the app's own (top) navigation
            assert page.locator('[data-testid="stSidebarNav"]').count() == 0  # not Streamlit's file-based sidebar
            assert ids[-1] in page.inner_text('[data-testid="stMain"]') and f"instance={ids[-1]}" in page.url
            assert_clean(page)

            page.goto(dashboard_url)
            page.wait_for_selector('[data-testid="stDataFrame"] [role="gridcell"]', state="attached")
            table = page.inner_html('[data-testid="stDataFrame"]')
            assert all(iid in table for iid in ids), ids
            assert "data is" in page.inner_text('[data-testid="stMain"]')
            assert_clean(page)
            page.screenshot(path=str(ARTIFACTS / "browser-fleet.png"), full_page=True)

            link = page.locator('[data-testid="stPageLink-NavLink"]', has_text="Open ").first
            opened = link.inner_text().split("(")[-1].rstrip(")").strip()
            assert opened in ids
            link.click()
            page.wait_for_url(f"**/instance?instance={opened}")
            page.wait_for_selector(CHART)
            page.wait_for_selector('[data-testid="stMetric"]')
            assert opened in page.inner_text('[data-testid="stMain"]')
            assert page.locator(CHART).count() >= 1
            assert_clean(page)
            page.screenshot(path=str(ARTIFACTS / "browser-instance.png"), full_page=True)

            # selecting a row of the Fleet table opens that instance too (row marker column of the grid's canvas)
            page.get_by_role("link", name="Fleet").first.click()
            page.wait_for_selector('[data-testid="stDataFrame"] [role="gridcell"]', state="attached")
            target = ids[0]
            cell = page.locator('[data-testid="stDataFrame"] [role="gridcell"]', has_text=target).first
            row = int(cell.get_attribute("id").rsplit("-", 1)[1])
            grid = page.locator('[data-testid="stDataFrame"]').bounding_box()
            page.mouse.click(grid["x"] + 14, grid["y"] + ROW_PX * (row + 1) + ROW_PX / 2)  # header row, then data rows
            page.wait_for_url(f"**/instance?instance={target}")
            page.wait_for_selector(CHART)
            assert_clean(page)

            page.goto(f"{dashboard_url}/upload")
            page.wait_for_selector('[data-testid="stFileUploaderDropzoneInput"]', state="attached")
            page.set_input_files('[data-testid="stFileUploaderDropzoneInput"]', str(export))
            page.wait_for_selector(CHART)
            page.wait_for_selector('button:has-text("Validate")')
            assert "i-0123456789abcdef0" in page.inner_text('[data-testid="stMain"]')
            assert_clean(page)
            page.screenshot(path=str(ARTIFACTS / "browser-upload.png"), full_page=True)
        finally:
            browser.close()
