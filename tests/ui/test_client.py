"""`ApiClient` against a real loopback HTTP server that answers with canned statuses."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
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
