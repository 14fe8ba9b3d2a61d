"""Every 200 prediction names its model in ``X-Model-Version`` / ``X-Model-Name``, on both
paths, in process: the fast path (`FastRoutes` + `answers.with_model_headers`) and the
FastAPI routes that answer what the fast path does not take. The real server's answers,
and a hot swap, are checked in test_api.py."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import orjson
import pytest
from fastapi import HTTPException
from starlette.testclient import TestClient

from raincast.serving import answers, service
from raincast.serving.fastpath import FastRoutes
from raincast.serving.model import LoadedModel
from raincast.settings import Settings

ROW = {"Date": "2021-03-03", "Location": "Sydney", "Rainfall": 6.2, "WindGustDir": "SSE"}


class StubBooster:
    """P(rain) 0.75 for every row, as XGBoost's ``inplace_predict`` would answer."""

    def inplace_predict(self, matrix: np.ndarray) -> np.ndarray:
        return np.full(len(matrix), 0.75)


def loaded(version: str = "7") -> LoadedModel:
    return LoadedModel(
        name="rain-tomorrow",
        version=version,
        booster=StubBooster(),
        threshold=0.5,
        run_id=None,
        trained_at=None,
        metrics={},
    )


def model_headers(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-model-")}


# --- the loaded model's headers ---------------------------------------------------------------


def test_headers_are_encoded_once_per_loaded_version() -> None:
    model = loaded("7")
    assert model.response_headers == (
        (b"x-model-name", b"rain-tomorrow"),
        (b"x-model-version", b"7"),
    )
    assert model.header_dict == {"x-model-name": "rain-tomorrow", "x-model-version": "7"}
    # A copy for another version (or the same one compiled) carries its own.
    assert dict(replace(model, version="8").response_headers)[b"x-model-version"] == b"8"


def test_only_a_200_is_stamped() -> None:
    model = loaded("7")
    ok = answers.answer_predict(model, orjson.dumps({"rows": [ROW]}))  # type: ignore[arg-type]
    assert answers.with_model_headers(model, ok) == (*ok, model.response_headers)
    bad = answers.answer_predict(model, orjson.dumps({"rows": []}))
    assert bad[0] == 422 and answers.with_model_headers(model, bad) == bad
    none = answers.answer_predict(None, orjson.dumps({"rows": [ROW]}))
    assert none[0] == 503 and answers.with_model_headers(None, none) == none


# --- the fast path ------------------------------------------------------------------------------


def _fast_client(answer: tuple[Any, ...]) -> TestClient:
    async def handler(body: bytes) -> Any:
        return answer

    async def never(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the fast path answers, not the wrapped app")

    return TestClient(FastRoutes(never, routes={"/predict": handler}))


def test_the_fast_path_sends_the_handlers_headers() -> None:
    model = loaded("12")
    stamped = answers.with_model_headers(model, (200, b'{"predictions":[]}'))
    resp = _fast_client(stamped).post("/predict", json={"rows": [ROW]})
    assert resp.status_code == 200 and resp.json() == {"predictions": []}
    assert resp.headers["content-type"] == "application/json"
    assert model_headers(resp.headers) == {
        "x-model-name": "rain-tomorrow",
        "x-model-version": "12",
    }


def test_a_fast_path_error_names_no_model() -> None:
    resp = _fast_client((422, b'{"detail":[]}')).post("/predict", json={"rows": []})
    assert resp.status_code == 422 and model_headers(resp.headers) == {}


# --- the FastAPI routes ---------------------------------------------------------------------


class StubService:
    """What the routes need of the RainService instance."""

    def __init__(self, model: LoadedModel | None) -> None:
        self.model = model

    def _model(self) -> LoadedModel:
        if self.model is None:
            raise HTTPException(503, "no champion model loaded yet")
        return self.model


@pytest.fixture
def routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Any]]:
    """The service's FastAPI app (no fast path in front), its ``self`` a `StubService`;
    `create_service`'s process-wide changes undone as in test_startup.py."""
    for name in [k for k in os.environ if k.startswith("RAINCAST_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(service, "configure_json_logs", lambda level: None)
    monkeypatch.setattr(service, "patch_bentoml_timeout", lambda: True)
    for name in service.MLFLOW_HTTP_DEFAULTS:
        monkeypatch.setenv(name, "-")
        monkeypatch.delenv(name)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        project_dir=tmp_path,
        home=tmp_path / "var",
        jwt_secret=secrets.token_urlsafe(48),
    )
    svc = service.create_service(settings)
    (app, _, _), *_ = svc.mount_apps
    stub = StubService(loaded("7"))
    app.dependency_overrides[bentoml.get_current_service] = lambda: stub
    with TestClient(app) as client:
        yield client, stub
    app.dependency_overrides.clear()


def test_the_fastapi_predict_route_names_the_model(routes: tuple[TestClient, Any]) -> None:
    client, stub = routes
    resp = client.post("/predict", json={"rows": [ROW]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["predictions"][0]["model_version"] == "7"
    assert model_headers(resp.headers) == {"x-model-name": "rain-tomorrow", "x-model-version": "7"}
    stub.model = loaded("8")  # swapped: the next answer names the new version
    resp = client.post("/predict", json={"rows": [ROW]})
    assert resp.headers["x-model-version"] == "8" == resp.json()["predictions"][0]["model_version"]


def test_the_fastapi_batch_route_names_the_model(routes: tuple[TestClient, Any]) -> None:
    client, _ = routes
    resp = client.post("/predict_batch", json={"columns": {k: [v, v] for k, v in ROW.items()}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["model_version"] == "7"
    assert model_headers(resp.headers) == {"x-model-name": "rain-tomorrow", "x-model-version": "7"}


def test_fastapi_errors_name_no_model(routes: tuple[TestClient, Any]) -> None:
    client, stub = routes
    bad_batch = {"columns": {**{k: [v] for k, v in ROW.items()}, "Rainfall": ["lots"]}}
    resp = client.post("/predict_batch", json=bad_batch)
    assert resp.status_code == 422 and model_headers(resp.headers) == {}
    resp = client.post("/predict", json={"rows": [{**ROW, "Foo": 1}]})
    assert resp.status_code == 422 and model_headers(resp.headers) == {}
    stub.model = None
    resp = client.post("/predict", json={"rows": [ROW]})
    assert resp.status_code == 503 and model_headers(resp.headers) == {}
