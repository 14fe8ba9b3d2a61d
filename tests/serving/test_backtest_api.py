"""Backtest results through the real API (GET /backtest, GET /backtest/plots/{name}) as the
UI meets them: behind the JWT, from the folder `raincast backtest` writes by default
(RAINCAST_HOME/backtest here), absent first, then served, then corrupt. File order."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from raincast.catalog import BACKTEST_PLOTS, BACKTEST_RESULT, BACKTEST_SUMMARY
from tests.helpers import BENCH_RESULTS, backtest_result_body

from .conftest import Api

pytestmark = pytest.mark.slow

GENERIC_401 = {"detail": "invalid or missing token"}
PLOT = "/backtest/plots/backtest_rolling.png"


@pytest.fixture(scope="module")
def folder(api: Api) -> Iterator[Path]:
    """The API's backtest folder: the command's default under the API's RAINCAST_HOME."""
    path = api.settings.backtest_results_dir
    assert path == Path(api.env["RAINCAST_HOME"]).resolve() / "backtest"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def token(api: Api) -> str:
    return api.token("bob-user")


def get_bytes(api: Api, path: str, token: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and the raw body (`Api.call` decodes bodies as text or JSON)."""
    req = urllib.request.Request(api.url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_backtest_needs_a_token(api: Api, folder: Path) -> None:
    for path in ("/backtest", PLOT):
        for token in (None, "not.a.jwt"):
            status, headers, body = api.call("GET", path, token=token)
            assert (status, body) == (401, GENERIC_401), path
            assert headers["www-authenticate"].startswith("Bearer")


def test_no_results_is_404_saying_how_to_make_them(api: Api, folder: Path, token: str) -> None:
    assert not folder.exists()
    status, _, body = api.call("GET", "/backtest", token=token)
    assert status == 404
    assert body["detail"].startswith("no backtest results yet: run `raincast backtest --data")
    status, _, body = api.call("GET", PLOT, token=token)
    assert status == 404 and "no backtest plot backtest_rolling.png yet" in body["detail"]


def test_results_and_plots_are_served(api: Api, folder: Path, token: str) -> None:
    folder.mkdir(parents=True)
    for name in (*BACKTEST_PLOTS, BACKTEST_SUMMARY):
        shutil.copy(BENCH_RESULTS / name, folder / name)
    status, _, body = api.call("GET", "/backtest", token=token)
    assert status == 200, body
    assert body["source"] == BACKTEST_SUMMARY and body["policies"] == ["monthly", "never"]
    assert [s["promotions"] for s in body["summary"]] == [4, 0]
    assert body["plots"] == list(BACKTEST_PLOTS)

    (folder / BACKTEST_RESULT).write_text(json.dumps(backtest_result_body()))
    status, _, body = api.call("GET", "/backtest", token=token)
    assert status == 200, body
    assert body["source"] == BACKTEST_RESULT and body["policies"] == ["daily", "never"]
    assert body["n_days"] == 20 and len(body["rolling"]) == 20 and "days" not in body
    assert body["retrains"][0]["day"] == "2020-01-05" and body["retrains"][0]["promoted"]

    for name in BACKTEST_PLOTS:
        status, headers, png = get_bytes(api, f"/backtest/plots/{name}", token)
        assert status == 200 and headers["content-type"] == "image/png"
        assert png == (folder / name).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/backtest/plots/backtest.json",
        f"/backtest/plots/{BACKTEST_SUMMARY}",
        "/backtest/plots/x.png",
        "/backtest/plots/..%2Fbacktest.json",
        "/backtest/plots/%2e%2e%2f%2e%2e%2fusers.json",
        "/backtest/plots/..%2F..%2F..%2Fusers.json",
        "/backtest/plots/",
        "/backtest/plots/backtest_rolling.png%00",
    ],
)
def test_a_plot_outside_the_allow_list_is_404(
    api: Api, folder: Path, token: str, path: str
) -> None:
    status, _, body = get_bytes(api, path, token)
    assert status == 404, body
    assert b"policies" not in body and b"argon2" not in body and b"PNG" not in body
    assert b"../" not in body and b"%2" not in body  # the name is not echoed


def test_corrupt_results_are_500_with_the_reason(api: Api, folder: Path, token: str) -> None:
    (folder / BACKTEST_RESULT).write_text('{"start": "2020-01-01", "policies": ')
    status, _, body = api.call("GET", "/backtest", token=token)
    assert status == 500, body
    detail = body["detail"]
    assert detail.startswith("backtest.json is not a backtest result (not JSON")
    assert "raincast backtest" in detail and str(api.work) not in detail
    assert "Traceback" not in detail

    (folder / "backtest_compute.png").write_text("<html>a proxy's error page</html>")
    status, _, body = api.call("GET", "/backtest/plots/backtest_compute.png", token=token)
    assert status == 500
    assert body["detail"].startswith("backtest_compute.png is not a PNG image")
    assert get_bytes(api, PLOT, token)[0] == 200  # the other plots are still served
