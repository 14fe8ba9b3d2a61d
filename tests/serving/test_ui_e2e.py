"""The Streamlit UI in a real headless Chromium (Playwright) against the real API (`api`
fixture: `bentoml serve` + `mlflow server` with a trained champion): log in, predict one
day, predict an uploaded 20-row weatherAUS CSV, look at the model page. Screenshots go to
tests/artifacts/."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import free_port, http_status, labelled_rows, wait_until

from .conftest import BIN, PASSWORD, STATIONS, Api, start, stop

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "src" / "raincast" / "ui" / "app.py"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def ui(api: Api) -> Iterator[str]:
    """`streamlit run src/raincast/ui/app.py` on a free port, talking to the real API."""
    env = {k: v for k, v in api.env.items() if k != "RAINCAST_JWT_SECRET"}
    env.update(RAINCAST_API_URL=api.url, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    port = free_port()
    log = api.work / "streamlit.log"
    flags = {
        "--server.headless": "true",
        "--server.port": str(port),
        "--server.address": "127.0.0.1",
        "--server.fileWatcherType": "none",
        "--browser.gatherUsageStats": "false",
    }
    cmd = [str(BIN / "streamlit"), "run", str(APP), *(x for kv in flags.items() for x in kv)]
    proc = start(cmd, env, api.work, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until("streamlit", lambda: http_status(url + "/_stcore/health") == 200, 120, log)
        yield url
    finally:
        stop(proc)
        assert proc.returncode is not None


@pytest.fixture(scope="module")
def page(ui: str) -> Iterator[Page]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make system-deps)")
    ARTIFACTS.mkdir(exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="raincast-chromium-") as profile,
        sync_api.sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.new_page()
            page.goto(ui)
            yield page
        finally:
            context.close()


def _upload_csv(tmp: Path, n: int = 20) -> Path:
    rows = labelled_rows(STATIONS, 5, date(2021, 1, 1), date(2021, 3, 31)).drop(columns="source")
    path = tmp / "observations.csv"
    rows.head(n).to_csv(path, index=False, na_rep="NA")
    return path


def test_ui_logs_in_predicts_and_predicts_a_csv(page: Page, api: Api, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # the version the API serves now (earlier tests in this package may have moved it)
    served = str(api.call("GET", "/model", token=api.token("bob-user"))[2]["version"])

    # a wrong password is a message, not a session
    page.get_by_label("Username", exact=True).fill("bob-user")
    page.get_by_label("Password", exact=True).fill("wrong-password-1")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Wrong username or password.")).to_be_visible()

    page.get_by_label("Username", exact=True).fill("bob-user")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Logged in as bob-user")).to_be_visible()

    # predict one day with the form's typical values
    page.get_by_role("button", name="Predict", exact=True).click()
    probability = page.get_by_test_id("stMetric").filter(has_text="Probability of rain")
    expect(probability).to_be_visible()
    value = probability.get_by_test_id("stMetricValue").inner_text()
    assert re.fullmatch(r"\d{1,3}\.\d%", value), value
    version = page.get_by_test_id("stMetric").filter(has_text="Model version")
    expect(version.get_by_test_id("stMetricValue")).to_have_text(served)
    page.screenshot(path=ARTIFACTS / "ui-predict.png", full_page=True)

    # predict an uploaded 20-row weatherAUS CSV
    page.get_by_test_id("stSidebar").get_by_text("Batch", exact=True).click()
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(_upload_csv(tmp_path))
    page.get_by_role("button", name="Predict 20 rows").click()
    expect(page.get_by_text(re.compile(r"^20 rows · \d+ predicted rainy"))).to_be_visible()
    expect(page.get_by_test_id("stDataFrame")).to_be_visible()
    expect(page.get_by_test_id("stDownloadButton")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "ui-batch.png", full_page=True)

    # the served model
    page.get_by_test_id("stSidebar").get_by_text("Model", exact=True).click()
    champion = page.get_by_test_id("stMetric").filter(has_text="Champion version")
    expect(champion.get_by_test_id("stMetricValue")).to_have_text(served)
    trained = page.get_by_test_id("stMetric").filter(has_text="Trained at")
    expect(trained.get_by_test_id("stMetricValue")).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC$")
    )
    expect(page.get_by_text("Promotion history", exact=True)).to_be_visible()
    expect(page.get_by_test_id("stDownloadButton")).to_have_count(0)  # the rerun finished
    page.screenshot(path=ARTIFACTS / "ui-model.png", full_page=True)

    # live monitoring: this project has no live scores yet, which the page says
    page.get_by_test_id("stSidebar").get_by_text("Monitor", exact=True).click()
    expect(page.get_by_text("No drift measurements in the store yet.")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "ui-monitor.png", full_page=True)

    # log out
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_text("You are logged out.")).to_be_visible()
