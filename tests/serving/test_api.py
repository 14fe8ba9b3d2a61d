"""The API as users meet it: a real `bentoml serve` subprocess on a free loopback port,
backed by a real `mlflow server` registry. Stateful tests (swap, broken artifact,
registry down) run last, in file order."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import jwt
import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from mlflow import MlflowClient

from raincast.models.pyfunc import predict_frame
from tests.helpers import api_command, free_port, labelled_rows, train_small_model, wait_until

from .conftest import BIN, STATIONS, Api, start, stop

pytestmark = pytest.mark.slow

ROW = {
    "Date": "2021-03-03",
    "Location": "Sydney",
    "MinTemp": 19.0,
    "MaxTemp": 25.1,
    "Rainfall": 6.2,
    "Humidity9am": 85.0,
    "Humidity3pm": 80.0,
    "Pressure9am": 1012.0,
    "Pressure3pm": 1010.5,
    "Cloud3pm": 7.0,
    "WindGustDir": "SSE",
    "RainToday": "Yes",
}
GENERIC_401 = {"detail": "invalid or missing token"}


def _rows(n: int, seed: int = 21) -> list[dict[str, Any]]:
    from datetime import date

    frame = labelled_rows(STATIONS, seed, date(2021, 1, 1), date(2022, 12, 31))
    frame = frame.drop(columns=["RainTomorrow", "source"]).head(n)
    return json.loads(frame.to_json(orient="records"))


def _model_headers(headers: dict[str, str]) -> dict[str, str]:
    """The response's ``X-Model-*`` headers, names lower-cased."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-model-")}


def _claims(**over: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    base = {
        "sub": "bob-user",
        "role": "user",
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
        "iss": "raincast",
        "aud": "raincast-api",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


# --- public surface and the token flow ------------------------------------------------------


def test_health_metrics_and_docs_are_public_everything_else_needs_a_token(api: Api) -> None:
    for path in ("/livez", "/readyz", "/metrics", "/api/docs", "/api/openapi.json"):
        assert api.call("GET", path)[0] == 200, path
    for method, path in (
        ("POST", "/predict"),
        ("POST", "/predict_batch"),
        ("GET", "/model"),
        ("POST", "/admin/reload"),
    ):
        status, headers, body = api.call(method, path, {"rows": [ROW]})
        assert status == 401, path
        assert body == GENERIC_401
        assert headers["www-authenticate"].startswith("Bearer")


def test_token_flow_predicts_with_the_champion_version(api: Api) -> None:
    token = api.token("bob-user")
    status, headers, body = api.call("POST", "/predict", {"rows": [ROW, ROW]}, token)
    assert status == 200, body
    preds = body["predictions"]
    assert len(preds) == 2 and preds[0] == preds[1]
    assert preds[0]["model_version"] == "1"
    assert _model_headers(headers) == {"x-model-name": "rain-tomorrow", "x-model-version": "1"}
    assert 0.0 <= preds[0]["probability"] <= 1.0
    assert preds[0]["label"] == (
        "Yes" if preds[0]["probability"] >= preds[0]["threshold"] else "No"
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert {"sub", "role", "iat", "exp", "iss", "aud"} <= set(claims)
    assert claims["exp"] - claims["iat"] <= 3600  # short-lived


def test_model_endpoint_describes_the_served_version(api: Api) -> None:
    status, _, body = api.call("GET", "/model", token=api.token("bob-user"))
    assert status == 200
    assert body["version"] == "1" and body["alias"] == "champion"
    assert 0 < body["threshold"] < 1
    assert body["trained_at"] and body["run_id"]


def _bad_tokens(api: Api) -> dict[str, str]:
    secret = api.env["RAINCAST_JWT_SECRET"]
    good = jwt.encode(_claims(), secret, algorithm="HS256")
    head, payload, sig = good.split(".")
    forged_payload = jwt.utils.base64url_encode(
        json.dumps(
            {**jwt.decode(good, options={"verify_signature": False}), "role": "admin"}
        ).encode()
    ).decode()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    none_token = (
        jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).decode()
        + "."
        + payload
        + "."
    )
    import hashlib
    import hmac

    signing_input = (
        jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).decode()
        + "."
        + payload
    )
    confused = (
        signing_input
        + "."
        + jwt.utils.base64url_encode(
            hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        ).decode()
    )
    return {
        "garbage": "not-a-jwt",
        "alg_none": none_token,
        "wrong_key": jwt.encode(_claims(), "x" * 48, algorithm="HS256"),
        "tampered_payload": f"{head}.{forged_payload}.{sig}",
        "expired": jwt.encode(
            _claims(exp=datetime.now(UTC) - timedelta(minutes=5)), secret, algorithm="HS256"
        ),
        "nbf_future": jwt.encode(
            _claims(nbf=datetime.now(UTC) + timedelta(minutes=10)), secret, algorithm="HS256"
        ),
        "wrong_aud": jwt.encode(_claims(aud="someone-else"), secret, algorithm="HS256"),
        "wrong_iss": jwt.encode(_claims(iss="evil"), secret, algorithm="HS256"),
        "missing_exp": jwt.encode(_claims(exp=None), secret, algorithm="HS256"),
        "missing_role": jwt.encode(_claims(role=None), secret, algorithm="HS256"),
        "missing_sub": jwt.encode(_claims(sub=None), secret, algorithm="HS256"),
        "rs256": jwt.encode(_claims(), key, algorithm="RS256"),
        "hs_rs_confusion": confused,
    }


def test_every_bad_token_kind_gets_the_same_generic_401(api: Api) -> None:
    for kind, token in _bad_tokens(api).items():
        status, headers, body = api.call("POST", "/predict", {"rows": [ROW]}, token)
        assert status == 401, kind
        assert body == GENERIC_401, kind
        assert headers["www-authenticate"] == 'Bearer error="invalid_token"', kind
    _, _, metrics = api.call("GET", "/metrics")
    for reason in (
        "bad_algorithm",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "bad_audience",
        "bad_issuer",
        "missing_claim",
        "malformed",
    ):
        assert f'raincast_auth_failures_total{{reason="{reason}"}}' in metrics, reason


def test_failed_logins_are_401_alike_and_counted(api: Api) -> None:
    wrong = api.call("POST", "/auth/token", {"username": "bob-user", "password": "nope-nope-nope"})
    unknown = api.call("POST", "/auth/token", {"username": "mallory", "password": "nope-nope-nope"})
    empty = api.call("POST", "/auth/token", {})
    for status, _, body in (wrong, unknown, empty):
        assert status == 401
        assert body == wrong[2]
    _, _, metrics = api.call("GET", "/metrics")
    line = next(
        ln
        for ln in metrics.splitlines()
        if ln.startswith('raincast_logins_total{outcome="failed"}')
    )
    assert float(line.split()[-1]) >= 3


def test_user_role_is_forbidden_from_admin_reload(api: Api) -> None:
    status, _, body = api.call("POST", "/admin/reload", token=api.token("bob-user"))
    assert status == 403 and body == {"detail": "forbidden"}


# --- input validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "loc"),
    [
        ([{**ROW, "Foo": 1}], ["body", "rows", 0, "Foo"]),
        ([{**ROW, "Humidity3pm": 180}], ["body", "rows", 0, "Humidity3pm"]),
        ([{**ROW, "Rainfall": "lots"}], ["body", "rows", 0, "Rainfall"]),
        ([{**ROW, "Location": "Narnia"}], ["body", "rows", 0, "Location"]),
        ([{**ROW, "Date": "03/03/2021"}], ["body", "rows", 0, "Date"]),
        ([{**ROW, "WindGustDir": "NORTH"}], ["body", "rows", 0, "WindGustDir"]),
        ([{**ROW, "RainTomorrow": "Yes"}], ["body", "rows", 0, "RainTomorrow"]),
        ([{k: v for k, v in ROW.items() if k != "Location"}], ["body", "rows", 0, "Location"]),
        ([], ["body", "rows"]),
        ([ROW] * 51, ["body", "rows"]),
    ],
)
def test_bad_rows_get_422_with_the_field_path(api: Api, rows: list[Any], loc: list[Any]) -> None:
    status, _, body = api.call("POST", "/predict", {"rows": rows}, api.token("bob-user"))
    assert status == 422, body
    assert loc in [e["loc"] for e in body["detail"]]


def test_missing_values_are_null_and_still_predict(api: Api) -> None:
    row = {"Date": "2021-03-03", "Location": "Perth", "Sunshine": None, "WindDir9am": None}
    status, _, body = api.call("POST", "/predict", {"rows": [row]}, api.token("bob-user"))
    assert status == 200, body


def test_malformed_bodies_are_4xx_never_500(api: Api) -> None:
    token = api.token("bob-user")
    for raw in (b"{", b"[]", b'{"rows": "x"}', b"\xff\xfe", b'{"rows": [null]}', b"null"):
        status, _, body = api.call("POST", "/predict", raw=raw, token=token)
        assert 400 <= status < 500, (raw, status, body)
    for raw in (b"{", b'{"columns": []}', b'{"columns": {"Date": ["2021-01-01"]}}'):
        status, _, body = api.call("POST", "/predict_batch", raw=raw, token=token)
        assert 400 <= status < 500, (raw, status, body)


def test_batch_validation_points_at_column_and_row(api: Api) -> None:
    token = api.token("bob-user")
    cols = {k: [r.get(k) for r in _rows(20)] for k in ROW}
    cols["Humidity3pm"][7] = 140
    status, headers, body = api.call("POST", "/predict_batch", {"columns": cols}, token)
    assert status == 422
    assert body["detail"][0]["loc"] == ["columns", "Humidity3pm", 7]
    assert _model_headers(headers) == {}  # only an answer a model made names one
    cols["Humidity3pm"][7] = 40
    cols["Nonsense"] = [1] * 20
    assert api.call("POST", "/predict_batch", {"columns": cols}, token)[0] == 422
    del cols["Nonsense"]
    cols["Location"] = cols["Location"][:-1]
    assert api.call("POST", "/predict_batch", {"columns": cols}, token)[0] == 422


def test_oversized_bodies_are_413_declared_or_chunked(api: Api) -> None:
    token = api.token("bob-user")
    target = urlparse(api.url)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    # Declared too large: refused from the headers alone, before the body is read.
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
    conn.putrequest("POST", "/predict")
    for k, v in {**headers, "Content-Length": str(5_000_000)}.items():
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and b"too large" in resp.read()
    conn.close()
    # Streamed without a length: counted while it arrives (limit 2 MB in this server).
    big = json.dumps({"rows": [ROW] * 9000}).encode()  # ~2.2 MB
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
    conn.request(
        "POST",
        "/predict",
        body=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]),
        headers=headers,
        encode_chunked=True,
    )
    assert conn.getresponse().status == 413
    conn.close()


# --- train/serve parity ------------------------------------------------------------------------


def test_api_probabilities_equal_the_pipeline_batch_predictions(api: Api) -> None:
    import mlflow

    rows = _rows(400)
    token = api.token("bob-user")
    online: list[float] = []
    for i in range(0, len(rows), 50):  # 50 rows: over the inline size, a worker thread's
        status, headers, body = api.call("POST", "/predict", {"rows": rows[i : i + 50]}, token)
        assert status == 200, body
        assert _model_headers(headers)["x-model-version"] == "1"
        online += [p["probability"] for p in body["predictions"]]
    cols = {k: [r.get(k) for r in rows] for k in rows[0]}
    status, headers, batch = api.call("POST", "/predict_batch", {"columns": cols}, token)
    assert status == 200
    assert batch["model_version"] == "1"
    assert _model_headers(headers) == {"x-model-name": "rain-tomorrow", "x-model-version": "1"}
    mlflow.set_tracking_uri(api.settings.tracking_uri)
    mlflow.set_registry_uri(api.settings.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/rain-tomorrow/1").unwrap_python_model()
    offline = predict_frame(model.booster, pd.DataFrame(rows), model.threshold)["probability"]
    assert np.max(np.abs(np.array(online) - offline.to_numpy())) <= 1e-6
    assert np.max(np.abs(np.array(batch["probability"]) - offline.to_numpy())) <= 1e-6


# --- refusing to start --------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [None, "too-short-secret"])
def test_server_refuses_to_start_without_a_strong_secret(api: Api, secret: str | None) -> None:
    env = {k: v for k, v in api.env.items() if k != "RAINCAST_JWT_SECRET"}
    if secret:
        env["RAINCAST_JWT_SECRET"] = secret
    out = subprocess.run(
        [str(BIN / "raincast"), "serve", "--port", str(free_port())],
        env=env,
        cwd=api.work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "RAINCAST_JWT_SECRET" in out.stderr
    log = api.work / f"refused-{bool(secret)}.log"
    proc = start(api_command(free_port()), env, api.work, log)
    try:
        proc.wait(timeout=150)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise AssertionError("bentoml serve kept running without a valid JWT secret") from None
    assert proc.returncode != 0
    assert "RAINCAST_JWT_SECRET" in log.read_text()


# --- swaps and failures (stateful: keep last) ---------------------------------------------------


def _hammer(
    api: Api, token: str, stop_at: list[bool], results: list[tuple[int, str, str | None]]
) -> None:
    """Predict in a loop: (status, version in the body, version in X-Model-Version)."""
    while not stop_at:
        status, headers, body = api.call("POST", "/predict", {"rows": [ROW]}, token)
        named = _model_headers(headers).get("x-model-version")
        ok = status == 200
        results.append((status, body["predictions"][0]["model_version"] if ok else "", named))


def test_hot_swap_under_load_has_zero_failed_requests(api: Api) -> None:
    version = train_small_model(api.settings, STATIONS, seed=4, n_estimators=40, champion=False)
    token, admin = api.token("bob-user"), api.token("alice-admin")
    stop_at: list[bool] = []
    results: list[tuple[int, str, str | None]] = []
    threads = [
        threading.Thread(target=_hammer, args=(api, token, stop_at, results)) for _ in range(4)
    ]
    for t in threads:
        t.start()
    time.sleep(1.5)
    client = MlflowClient(
        tracking_uri=api.settings.tracking_uri, registry_uri=api.settings.tracking_uri
    )
    client.set_registered_model_alias("rain-tomorrow", "champion", version)
    status, _, body = api.call("POST", "/admin/reload", token=admin)
    time.sleep(1.5)
    stop_at.append(True)
    for t in threads:
        t.join()
    assert status == 200, body
    assert body["model_version"] == version
    assert results and all(s == 200 for s, _, _ in results), [r for r in results if r[0] != 200][:5]
    seen = [v for _, v, _ in results]
    assert seen[0] == "1" and seen[-1] == version
    # The header names the model that answered, before and after the swap.
    assert [named for _, _, named in results] == seen


def test_poller_picks_up_an_alias_move_without_a_reload_call(api: Api) -> None:
    client = MlflowClient(
        tracking_uri=api.settings.tracking_uri, registry_uri=api.settings.tracking_uri
    )
    client.set_registered_model_alias("rain-tomorrow", "champion", "1")
    token = api.token("bob-user")
    wait_until(
        "the poller to serve version 1 again",
        lambda: api.call("GET", "/model", token=token)[2]["version"] == "1",
        30,
    )


def test_broken_new_artifact_keeps_the_current_model(api: Api) -> None:
    client = MlflowClient(
        tracking_uri=api.settings.tracking_uri, registry_uri=api.settings.tracking_uri
    )
    broken = api.work / "broken-model"
    broken.mkdir()
    (broken / "MLmodel").write_text("this: is not a model\n")
    mv = client.create_model_version("rain-tomorrow", str(broken), run_id=None)
    client.set_registered_model_alias("rain-tomorrow", "champion", str(mv.version))
    admin = api.token("alice-admin")
    status, _, body = api.call("POST", "/admin/reload", token=admin)
    assert status == 503 and body["status"].startswith("failed")
    assert body["model_version"] == "1"
    assert api.call("POST", "/predict", {"rows": [ROW]}, admin)[0] == 200
    client.set_registered_model_alias("rain-tomorrow", "champion", "1")


def test_registry_down_while_serving_still_answers(api: Api) -> None:
    token, admin = api.token("bob-user"), api.token("alice-admin")
    stop(api.mlflow)
    for _ in range(20):
        status, _, body = api.call("POST", "/predict", {"rows": [ROW]}, token)
        assert status == 200, body
    status, _, body = api.call("POST", "/admin/reload", token=admin)
    assert status == 503 and "failed" in body["status"]
    status, _, model = api.call("GET", "/model", token=token)
    assert status == 200 and model["version"] == "1" and model["last_refresh_error"]
