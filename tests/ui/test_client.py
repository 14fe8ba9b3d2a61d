"""`ApiClient` against a real loopback HTTP server that answers with canned statuses."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from raincast.ui.client import (
    ApiClient,
    ApiError,
    ApiUnavailable,
    Forbidden,
    InvalidInput,
    LoginFailed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SessionExpired,
)
from tests.helpers import free_port

ROW = {"Date": "2021-03-03", "Location": "Sydney", "Rainfall": 6.2}


class FakeApi(ThreadingHTTPServer):
    """Replies with ``queued`` replies first, then ``replies[path]``; a reply is
    (status, headers, body or body-from-request function). Records every request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.replies: dict[str, tuple[int, dict[str, str], Any]] = {}
        self.queued: list[tuple[int, dict[str, str], Any]] = []
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.delay_s = 0.0


class Handler(BaseHTTPRequestHandler):
    server: FakeApi

    def _reply(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(size)) if size else None
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        time.sleep(self.server.delay_s)
        queued = self.server.queued
        status, headers, reply = queued.pop(0) if queued else self.server.replies[self.path]
        if callable(reply):
            reply = reply(body)
        data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _reply

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    server = FakeApi()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(fake: FakeApi) -> ApiClient:
    return ApiClient(f"http://127.0.0.1:{fake.server_address[1]}/", timeout=5, token="tok")


def test_login_posts_json_and_keeps_the_token(fake: FakeApi, client: ApiClient) -> None:
    fake.replies["/auth/token"] = (200, {}, {"access_token": "abc", "token_type": "bearer"})
    client.token = None
    assert client.login("bob-user", "pw") == "abc"
    assert client.token == "abc"
    method, _, headers, body = fake.requests[0]
    assert (method, body) == ("POST", {"username": "bob-user", "password": "pw"})
    assert "Authorization" not in headers


def test_login_401_is_wrong_credentials(fake: FakeApi, client: ApiClient) -> None:
    fake.replies["/auth/token"] = (401, {}, {"detail": "invalid credentials"})
    with pytest.raises(LoginFailed, match="Wrong username or password"):
        client.login("bob-user", "nope")


def test_predict_sends_the_bearer_token_and_parses_predictions(
    fake: FakeApi, client: ApiClient
) -> None:
    pred = {"probability": 0.7, "label": "Yes", "threshold": 0.4, "model_version": "3"}
    fake.replies["/predict"] = (200, {}, {"predictions": [pred]})
    (p,) = client.predict([ROW])
    assert (p.probability, p.label, p.threshold, p.model_version) == (0.7, "Yes", 0.4, "3")
    _, _, headers, body = fake.requests[0]
    assert headers["Authorization"] == "Bearer tok"
    assert body == {"rows": [ROW]}


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "text"),
    [
        (401, {}, {"detail": "invalid or missing token"}, SessionExpired, "session expired"),
        (403, {}, {"detail": "forbidden"}, Forbidden, "not allowed"),
        (413, {}, {"detail": "request body too large (limit 100 bytes)"}, PayloadTooLarge,
         "limit 100 bytes"),
        (422, {}, {"detail": [{"loc": ["body", "rows", 0, "Humidity3pm"],
                               "msg": "Input should be less than or equal to 100"}]},
         InvalidInput, "rows.0.Humidity3pm: Input should be less than or equal to 100"),
        (429, {"Retry-After": "7"}, {"detail": "slow down"}, RateLimited, "wait 7 s"),
        (503, {}, {"detail": "no champion model loaded yet"}, ApiUnavailable,
         "not ready: no champion model loaded yet"),
        (500, {}, b"oops", ApiUnavailable, "HTTP 500"),
        (400, {}, {"detail": "malformed"}, ApiError, "HTTP 400"),
    ],
)  # fmt: skip
def test_each_failure_status_has_its_exception_and_message(
    fake: FakeApi,
    client: ApiClient,
    status: int,
    headers: dict[str, str],
    body: Any,
    error: type[ApiError],
    text: str,
) -> None:
    fake.replies["/predict"] = (status, headers, body)
    with pytest.raises(error) as caught:
        client.predict([ROW])
    assert text in str(caught.value)


def test_422_lists_every_field_path(fake: FakeApi, client: ApiClient) -> None:
    detail = [{"loc": ["columns", "Rainfall", 3], "msg": "bad"}, {"loc": ["columns"], "msg": "x"}]
    fake.replies["/predict_batch"] = (422, {}, {"detail": detail})
    with pytest.raises(InvalidInput) as caught:
        client.predict_batch({"Date": ["2021-01-01"], "Location": ["Sydney"]})
    assert [e.path for e in caught.value.errors] == ["columns.Rainfall.3", "columns"]


def test_api_down_is_unavailable() -> None:
    down = ApiClient(f"http://127.0.0.1:{free_port()}", timeout=5, token="tok")
    with pytest.raises(ApiUnavailable, match="Cannot reach the prediction API"):
        down.model()


def test_a_slow_api_times_out(fake: FakeApi, client: ApiClient) -> None:
    fake.replies["/model"] = (200, {}, {"version": "1"})
    fake.delay_s = 1.0
    client.timeout = 0.2
    with pytest.raises(ApiUnavailable, match=r"did not answer within 0\.2 s"):
        client.model()


def test_predict_batch_sends_chunks_and_joins_the_results(fake: FakeApi, client: ApiClient) -> None:
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        rain = body["columns"]["Rainfall"]
        return {
            "probability": [r / 100 for r in rain],
            "label": ["Yes" if r >= 50 else "No" for r in rain],
            "threshold": 0.5,
            "model_version": "3" if rain[0] < 20 else "4",
        }

    fake.replies["/predict_batch"] = (200, {}, answer)
    n = 25
    columns: dict[str, list[Any]] = {
        "Date": ["2021-01-01"] * n,
        "Location": ["Sydney"] * n,
        "Rainfall": list(range(n)),
    }
    result = client.predict_batch(columns, chunk_rows=10)
    assert [len(r[3]["columns"]["Date"]) for r in fake.requests] == [10, 10, 5]
    assert result.probability == [r / 100 for r in range(n)]
    assert result.model_version == ["3"] * 20 + ["4"] * 5  # a swap between chunks shows
    assert result.threshold == 0.5


def test_predict_batch_422_names_the_row_in_the_whole_upload(
    fake: FakeApi, client: ApiClient
) -> None:
    ok = {"probability": [0.1] * 10, "label": ["No"] * 10, "threshold": 0.5, "model_version": "3"}
    bad = {"detail": [{"loc": ["columns", "Rainfall", 3], "msg": "bad"}]}
    fake.queued = [(200, {}, ok), (422, {}, bad)]
    columns: dict[str, list[Any]] = {
        "Date": ["2021-01-01"] * 20,
        "Location": ["Sydney"] * 20,
        "Rainfall": list(range(20)),
    }
    with pytest.raises(InvalidInput) as caught:
        client.predict_batch(columns, chunk_rows=10)
    assert [e.path for e in caught.value.errors] == ["columns.Rainfall.13"]


# --- /monitor/* ------------------------------------------------------------------------------

SCORE_ROW = {
    "kind": "replayed", "as_of_date": "2026-01-04", "window_days": 7, "window_start": "2025-12-29",
    "n_scored": 280, "f1": 0.61, "roc_auc": 0.86, "calibration_error": 0.04, "base_rate": 0.22,
    "mean_probability": 0.24, "model_versions": "3",
}  # fmt: skip
RELIABILITY = {
    "kind": "replayed", "start": "2025-12-06", "end": "2026-01-04", "n": 1200,
    "bins": [{"lower": 0.0, "upper": 0.1, "n": 800, "mean_probability": 0.04,
              "observed_frequency": 0.05}],
}  # fmt: skip
DRIFT_ROW = {
    "cycle_date": "2026-01-04", "computed_at": "2026-01-04T06:00:00+00:00", "drift_share": 0.25,
    "n_drifted": 5, "n_columns": 20, "drifted_columns": ["Humidity3pm"], "dataset_drift": False,
    "run_id": "r1",
}  # fmt: skip
DECISION = {
    "decided_at": "2026-01-04T06:10:00+00:00", "action": "promote", "decision": "promoted",
    "candidate_version": "3", "champion_before": "2", "champion_after": "3",
    "candidate_f1": 0.62, "champion_f1": 0.6,
}  # fmt: skip


@pytest.mark.parametrize(
    ("call", "path", "body"),
    [
        (lambda c: c.monitor_scores(), "/monitor/scores?kind=all",
         {"model_name": "rain-tomorrow", "rows": [SCORE_ROW]}),
        (lambda c: c.monitor_scores("live"), "/monitor/scores?kind=live",
         {"model_name": "rain-tomorrow", "rows": []}),
        (lambda c: c.monitor_reliability(), "/monitor/reliability?window_days=30&bins=10",
         RELIABILITY),
        (lambda c: c.monitor_reliability("live", window_days=7, bins=5),
         "/monitor/reliability?window_days=7&bins=5&kind=live", RELIABILITY),
        (lambda c: c.monitor_drift(), "/monitor/drift", {"rows": [DRIFT_ROW]}),
        (lambda c: c.monitor_champions(), "/monitor/champions",
         {"model_name": "rain-tomorrow", "current": "3", "rows": [DECISION]}),
    ],
    ids=["scores", "scores-live", "reliability", "reliability-args", "drift", "champions"],
)  # fmt: skip
def test_monitor_endpoints_get_with_the_token_and_return_the_body(
    fake: FakeApi,
    client: ApiClient,
    call: Callable[[ApiClient], dict[str, Any]],
    path: str,
    body: dict[str, Any],
) -> None:
    fake.replies[path] = (200, {}, body)
    assert call(client) == body
    ((method, sent_path, headers, sent),) = fake.requests
    assert (method, sent_path, sent) == ("GET", path, None)
    assert headers["Authorization"] == "Bearer tok"


MONITOR_CALLS = {
    "/monitor/scores?kind=all": lambda c: c.monitor_scores(),
    "/monitor/reliability?window_days=30&bins=10": lambda c: c.monitor_reliability(),
    "/monitor/drift": lambda c: c.monitor_drift(),
    "/monitor/champions": lambda c: c.monitor_champions(),
}


@pytest.mark.parametrize("path", list(MONITOR_CALLS))
@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (401, {"detail": "token expired"}, SessionExpired, "session expired"),
        (403, {"detail": "forbidden"}, Forbidden, "not allowed"),
        (422, {"detail": "window_days must be between 1 and 366"}, InvalidInput,
         "(request): window_days must be between 1 and 366"),
        (503, {"detail": "the raw store cannot be reached"}, ApiUnavailable,
         "not ready: the raw store cannot be reached"),
        (200, {"model_name": "rain-tomorrow"}, ApiUnavailable, "unexpected answer"),
    ],
    ids=["401", "403", "422", "503", "no-rows"],
)  # fmt: skip
def test_monitor_failures_have_their_exception_and_message(
    fake: FakeApi,
    client: ApiClient,
    path: str,
    status: int,
    body: Any,
    error: type[ApiError],
    text: str,
) -> None:
    fake.replies[path] = (status, {}, body)
    with pytest.raises(error) as caught:
        MONITOR_CALLS[path](client)
    assert text in str(caught.value)


def test_a_slow_monitor_endpoint_times_out(fake: FakeApi, client: ApiClient) -> None:
    fake.replies["/monitor/drift"] = (200, {}, {"rows": []})
    fake.delay_s = 1.0
    client.timeout = 0.2
    with pytest.raises(ApiUnavailable, match=r"did not answer within 0\.2 s"):
        client.monitor_drift()


# --- /backtest -----------------------------------------------------------------------------

BACKTEST = {
    "source": "backtest.json", "start": "2020-01-01", "end": "2020-01-10",
    "policies": ["never"], "summary": [{"policy": "never", "days": 10, "roc_auc": 0.9,
    "f1": 0.6, "retrains": 0, "promotions": 0, "compute_seconds": 3.0}],
    "retrains": [], "rolling": [], "plots": ["backtest_rolling.png"],
}  # fmt: skip
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def test_backtest_gets_the_results_with_the_token(fake: FakeApi, client: ApiClient) -> None:
    fake.replies["/backtest"] = (200, {}, BACKTEST)
    assert client.backtest() == BACKTEST
    ((method, path, headers, _),) = fake.requests
    assert (method, path, headers["Authorization"]) == ("GET", "/backtest", "Bearer tok")


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (404, {"detail": "no backtest results yet: run `raincast backtest ...`"}, NotFound,
         "(HTTP 404): no backtest results yet: run `raincast backtest ...`"),
        (500, {"detail": "backtest.json is not a backtest result (not JSON)"}, ApiUnavailable,
         "The API failed (HTTP 500): backtest.json is not a backtest result (not JSON)"),
        (500, b"Internal Server Error", ApiUnavailable, "(HTTP 500); try again later"),
        (401, {"detail": "invalid or missing token"}, SessionExpired, "session expired"),
        (200, {"source": "backtest.json"}, ApiUnavailable, "unexpected answer for /backtest"),
    ],
    ids=["404", "500-reason", "500-bare", "401", "no-summary"],
)  # fmt: skip
def test_backtest_failures_have_their_exception_and_message(
    fake: FakeApi, client: ApiClient, status: int, body: Any, error: type[ApiError], text: str
) -> None:
    fake.replies["/backtest"] = (status, {}, body)
    with pytest.raises(error) as caught:
        client.backtest()
    assert text in str(caught.value)
    if isinstance(caught.value, NotFound):
        assert caught.value.detail == body["detail"]  # type: ignore[index]


def test_a_backtest_plot_is_its_png_bytes(fake: FakeApi, client: ApiClient) -> None:
    fake.replies["/backtest/plots/backtest_rolling.png"] = (200, {"Content-Type": "image/png"}, PNG)
    assert client.backtest_plot("backtest_rolling.png") == PNG
    ((_, _, headers, _),) = fake.requests
    assert headers["Authorization"] == "Bearer tok"


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "text"),
    [
        (200, {}, {"detail": "ok"}, ApiUnavailable, "unexpected answer for the plot"),
        (404, {}, {"detail": "no such plot"}, NotFound, "no such plot"),
        (500, {}, {"detail": "backtest_rolling.png is not a PNG image"}, ApiUnavailable,
         "not a PNG image"),
    ],
    ids=["json-not-png", "404", "500"],
)  # fmt: skip
def test_a_backtest_plot_failure_is_an_error(
    fake: FakeApi,
    client: ApiClient,
    status: int,
    headers: dict[str, str],
    body: Any,
    error: type[ApiError],
    text: str,
) -> None:
    fake.replies["/backtest/plots/backtest_rolling.png"] = (status, headers, body)
    with pytest.raises(error, match=text):
        client.backtest_plot("backtest_rolling.png")
