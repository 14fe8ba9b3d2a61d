"""The Streamlit UI in a real headless Chromium (Playwright) after a fresh `make run` and
the services `make up` starts.

A new project runs two daily cycles through `raincast run` (`make run`) on a replayed
weatherAUS-format file: history, fetch, validate, dvc repro (drift, train, evaluate),
promote, and the champion's replayed window. A real `mlflow server`, the real API
(`bentoml serve`) and the UI, started with the command `make up` uses, then serve it.
Every page is visited, every plot must be drawn with data, and there is no "Deploy"
button. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from raincast import local_stack
from raincast.serving.auth import UserStore
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource
from tests.helpers import (
    api_command,
    free_port,
    http_status,
    labelled_rows,
    start_mlflow_server,
    wait_until,
)
from tests.serving.conftest import BIN, PASSWORD, STATIONS, Api, base_env, start, stop

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
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
#: The replayed file ends here; the two cycles are its last two days.
LAST = date(2017, 6, 25)
#: The Monitor page's plots, by the key of the container each is drawn in.
MONITOR_PLOTS = ("monitor-scores", "monitor-reliability", "monitor-drift", "monitor-champions")


def _raincast(work: Path, env: dict[str, str], *args: str) -> None:
    out = subprocess.run(
        [str(BIN / "raincast"), *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh project after two `raincast run` cycles (what `make run` runs)."""
    work = tmp_path_factory.mktemp("ui-project")
    shutil.copy(ROOT / "dvc.yaml", work)
    shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["xgb"].update(n_estimators=60, learning_rate=0.2, n_jobs=1)  # quick
    params["split"].update(test_days=120, validation_days=120)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    dvc = str(BIN / "dvc")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=work, check=True)
    subprocess.run(
        [dvc, "remote", "add", "-d", "local", "../var/dvc-remote"], cwd=work / ".dvc", check=True
    )
    rows = SyntheticSource(seed=7, stations=list(STATIONS)).fetch(date(2015, 1, 1), LAST)
    rows.to_csv(work / "replay.csv", index=False, na_rep="NA")
    env = base_env(work)
    for day in (LAST - timedelta(days=1), LAST):
        _raincast(work, env, "run", "--source", "replay:replay.csv", "--date", day.isoformat())
    return work


@pytest.fixture(scope="module")
def stack(project: Path) -> Iterator[Api]:
    """`mlflow server` and the API over the project, as `make up` runs them."""
    settings = Settings(project_dir=project, home=project / "var")
    users = UserStore(project / "users.json")
    users.add("bob-user", PASSWORD, "user")
    env = base_env(project)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    mlflow, mport = start_mlflow_server(settings.tracking_uri, env, project)
    env.update(
        RAINCAST_MLFLOW_TRACKING_URI=f"http://127.0.0.1:{mport}",
        RAINCAST_JWT_SECRET=secrets.token_urlsafe(48),
        RAINCAST_API_POLL_S="5",
    )
    port = free_port()
    log = project / "api.log"
    proc = start(api_command(port), env, project, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until("the API", lambda: http_status(url + "/readyz") == 200, 300, log)
        yield Api(url, project, settings, mlflow, proc, env)
    finally:
        stop(proc)
        stop(mlflow)


@pytest.fixture(scope="module")
def ui(stack: Api) -> Iterator[str]:
    """The UI started with `make up`'s command (viewer toolbar), talking to the real API."""
    env = {k: v for k, v in stack.env.items() if k != "RAINCAST_JWT_SECRET"}
    env.update(RAINCAST_API_URL=stack.url, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    port = free_port()
    log = stack.work / "streamlit.log"
    cmd = [*local_stack.ui_command(port), "--server.fileWatcherType", "none"]
    proc = start(cmd, env, stack.work, log)
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
        sync_api.expect.set_options(timeout=TIMEOUT_MS)  # plots take seconds on a busy host
        try:
            yield context.new_page()
        finally:
            context.close()


def _upload_csv(tmp: Path, n: int = 20) -> Path:
    rows = labelled_rows(STATIONS, 5, date(2021, 1, 1), date(2021, 3, 31)).drop(columns="source")
    path = tmp / "observations.csv"
    rows.head(n).to_csv(path, index=False, na_rep="NA")
    return path


def _go_to(page: Page, name: str) -> None:
    page.get_by_test_id("stSidebar").get_by_text(name, exact=True).click()


def _expect_plot_with_data(section: Locator, marks: str = ".role-mark path") -> Locator:
    """The section's Vega-Lite plot drawn (its data marks rendered, not a placeholder) with
    no empty state or error beside it; returns the drawn data marks matching ``marks``."""
    from playwright.sync_api import expect

    chart = section.get_by_test_id("stVegaLiteChart")
    expect(chart.locator("svg.marks")).to_be_visible()
    # attached, not visible: a flat line (one champion all along) has no height
    expect(chart.locator("svg.marks .role-mark path").first).to_be_attached()
    expect(section.get_by_test_id("stAlertContentInfo")).to_have_count(0)
    expect(section.get_by_test_id("stAlertContentError")).to_have_count(0)
    return chart.locator(marks)


def _screenshot(page: Page, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main block, not the document, so the
    viewport grows to fit the block for the picture."""
    height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": max(1000, int(height) + 40)})
    page.wait_for_timeout(1500)  # Vega re-lays out the plots for the new size
    page.screenshot(path=ARTIFACTS / name, full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_every_page_renders_with_data_after_a_fresh_run(
    page: Page, ui: str, stack: Api, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    token = stack.token("bob-user")
    served = str(stack.call("GET", "/model", token=token)[2]["version"])
    # what the pipeline left for Monitor, through the API the UI reads
    answers = {}
    for path in ("/monitor/scores", "/monitor/reliability", "/monitor/drift", "/monitor/champions"):
        status, _, answers[path] = stack.call("GET", path, token=token)
        rows = answers[path]["bins" if path.endswith("reliability") else "rows"]
        assert status == 200 and rows, (path, answers[path])
    kinds = {r["kind"] for r in answers["/monitor/scores"]["rows"]}
    cycles = answers["/monitor/drift"]["rows"]
    decisions = [r for r in answers["/monitor/champions"]["rows"] if r["champion_after"]]

    # the link `make up` prints first: a wrong password is a message, not a session
    page.goto(f"{ui}/?page=Monitor")
    page.get_by_label("Username", exact=True).fill("bob-user")
    page.get_by_label("Password", exact=True).fill("wrong-password-1")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Wrong username or password.")).to_be_visible()
    page.get_by_label("Username", exact=True).fill("bob-user")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Logged in as bob-user")).to_be_visible()

    # Monitor, where the link leads: four plots with data, and where the scores come from
    expect(page.get_by_role("heading", name="Monitor", exact=True)).to_be_visible()
    scores, reliability, drift, champions = (page.locator(f".st-key-{k}") for k in MONITOR_PLOTS)
    _expect_plot_with_data(scores)
    _expect_plot_with_data(reliability)
    bars = _expect_plot_with_data(drift, ".mark-rect.role-mark path")
    expect(bars).to_have_count(len(cycles))  # one bar per drift check the pipeline recorded
    points = _expect_plot_with_data(champions, ".mark-symbol.role-mark path")
    expect(points).to_have_count(len(decisions))  # one point per promotion decision
    banner = "Live" if "live" in kinds else "Replayed window"
    expect(scores.get_by_text(banner, exact=True)).to_be_visible()
    expect(drift.get_by_test_id("stDataFrame")).to_be_visible()
    # a viewer's toolbar: no Deploy button anywhere
    expect(page.get_by_test_id("stAppDeployButton")).to_have_count(0)
    expect(page.get_by_role("button", name="Deploy")).to_have_count(0)
    _screenshot(page, "ui-monitor.png")

    # predict one day with the form's typical values
    _go_to(page, "Predict")
    page.get_by_role("button", name="Predict", exact=True).click()
    probability = page.get_by_test_id("stMetric").filter(has_text="Probability of rain")
    expect(probability).to_be_visible()
    value = probability.get_by_test_id("stMetricValue").inner_text()
    assert re.fullmatch(r"\d{1,3}\.\d%", value), value
    version = page.get_by_test_id("stMetric").filter(has_text="Model version")
    expect(version.get_by_test_id("stMetricValue")).to_have_text(served)
    _screenshot(page, "ui-predict.png")

    # predict an uploaded 20-row weatherAUS CSV
    _go_to(page, "Batch")
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(_upload_csv(tmp_path))
    page.get_by_role("button", name="Predict 20 rows").click()
    expect(page.get_by_text(re.compile(r"^20 rows · \d+ predicted rainy"))).to_be_visible()
    expect(page.get_by_test_id("stDataFrame")).to_be_visible()
    expect(page.get_by_test_id("stDownloadButton")).to_be_visible()
    _screenshot(page, "ui-batch.png")

    # the served model and its promotion history (from /monitor/champions)
    _go_to(page, "Model")
    champion = page.get_by_test_id("stMetric").filter(has_text="Champion version")
    expect(champion.get_by_test_id("stMetricValue")).to_have_text(served)
    trained = page.get_by_test_id("stMetric").filter(has_text="Trained at")
    expect(trained.get_by_test_id("stMetricValue")).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC$")
    )
    expect(page.get_by_text("Promotion history", exact=True)).to_be_visible()
    expect(page.get_by_test_id("stDownloadButton")).to_have_count(0)  # the rerun finished
    history = page.locator(".st-key-model-history")
    expect(history.get_by_test_id("stDataFrame")).to_be_visible()
    expect(history.get_by_test_id("stAlertContentInfo")).to_have_count(0)
    _screenshot(page, "ui-model.png")

    # the address bar names the page, and logging out ends the session
    assert page.url.endswith("?page=Model"), page.url
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_text("You are logged out.")).to_be_visible()


def test_a_new_session_without_a_token_sees_only_the_login_form(page: Page, ui: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{ui}/?page=Monitor")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(0)
    expect(page.get_by_test_id("stAppDeployButton")).to_have_count(0)
