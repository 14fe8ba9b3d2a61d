"""`make bench` part 2: serving the REAL champion, side by side in one run, loopback.

The champion is the model a replay of ../shared/data/weatherAUS.csv.gz with the committed
params.yaml produces (`raincast run`, the same cycle the timings bench runs; reused from
it when `bench.run` ran that first). Measured on it:

(a) in-process prediction (the limit): one row through the compiled trees and through
    XGBoost, the API's 10k-row batch path, parity with the pipeline and the MLflow pyfunc
    on the real test slice, the compile time;
(b) raincast `/predict` behind JWT via `bentoml serve` (1 worker, and workers = cores);
(c) `mlflow models serve` of the same model version;
1-row requests at concurrency 1 and 16 for a fixed duration (req/s, p50, p99, errors),
rows/s with 10k-row payloads; then on (b): one 20 MB hostile body at a time while another
client calls /predict and /readyz, and an overload (5x the concurrency at which capacity
was measured) with a probe client measuring admitted and refused latencies and recovery.
The toy model of the earlier benches (200 depth-3 trees on synthetic rows) is kept as a
labelled extra row.

The load generator shares the 2 cores with the servers: `wrk` (C, one thread; Debian
package wrk) when it is installed, else an aiohttp client (which costs the servers about a
core). The result records which.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.champion import labelled_rows, train_small_model  # noqa: E402
from testbed.servers import (  # noqa: E402
    api_command,
    free_port,
    http_status,
    start_logged,
    stop_group,
    wait_until,
)

BIN = Path(sys.executable).parent
DURATION_S = float(os.environ.get("RAINCAST_BENCH_DURATION_S", "10"))
STATIONS = ("Sydney", "Perth", "Darwin", "Hobart", "Cairns", "Melbourne", "Adelaide", "Brisbane")


def _rows(n: int) -> list[dict[str, Any]]:
    from datetime import date

    frame = labelled_rows(STATIONS, 5, date(2021, 1, 1), date(2024, 12, 31))
    frame = frame.drop(columns=["RainTomorrow", "source"]).head(n)
    return json.loads(frame.to_json(orient="records"))


#: wrk script: POST the body file given after `--` with an optional bearer token; prints
#: one JSON line of results (latency in microseconds).
WRK_SCRIPT = r"""
local body, token
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  refused = 0
  local f = assert(io.open(args[1], "rb")); body = f:read("*a"); f:close()
  token = args[2]
end
function request()
  local headers = {["Content-Type"] = "application/json"}
  if token ~= nil and token ~= "" then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("POST", nil, headers, body)
end
function response(status, headers, body)
  if status == 429 or status == 503 then refused = refused + 1 end
end
function done(summary, latency, requests)
  local e = summary.errors
  local refused = 0
  for _, t in ipairs(threads) do refused = refused + (t:get("refused") or 0) end
  io.write(string.format(
    '{"requests": %d, "seconds": %f, "p50_us": %f, "p95_us": %f, "p99_us": %f, '
    .. '"errors": %d, "refused": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout + e.status, refused or 0))
end
"""


def load_generator() -> str:
    return "wrk" if shutil.which("wrk") else "aiohttp"


def _load(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, duration: float
) -> dict[str, Any]:
    if load_generator() == "aiohttp":
        return asyncio.run(_load_aiohttp(url, body, headers, concurrency, duration))
    with tempfile.TemporaryDirectory() as tmp:
        script, body_file = Path(tmp) / "post.lua", Path(tmp) / "body.json"
        script.write_text(WRK_SCRIPT)
        body_file.write_bytes(body)
        token = headers.get("Authorization", "").removeprefix("Bearer ")
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "10s"]
        out = subprocess.run(
            [*cmd, "-s", str(script), url, "--", str(body_file), token],
            capture_output=True,
            text=True,
            check=True,
        )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "concurrency": concurrency,
        "requests": res["requests"],
        "req_per_s": res["requests"] / res["seconds"],
        "p50_ms": res["p50_us"] / 1000,
        "p95_ms": res["p95_us"] / 1000,
        "p99_ms": res["p99_us"] / 1000,
        "errors": res["errors"],  # socket errors, timeouts and non-2xx/3xx answers
        "refused_429_503": res["refused"],
    }


async def _load_aiohttp(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, duration: float
) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = refused = 0
    deadline = time.perf_counter() + duration
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            nonlocal errors, refused
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors += 1
                        if resp.status in (429, 503):
                            refused += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "req_per_s": len(lat) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": errors,
        "refused_429_503": refused,
    }


def _batch(url: str, body: bytes, headers: dict[str, str], rows: int, n: int = 5) -> dict[str, Any]:
    import urllib.request

    times = []
    for _ in range(n):
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=120) as resp:
            resp.read()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"rows": rows, "seconds_best_of_5": best, "rows_per_s": rows / best}


# --- the real champion ---------------------------------------------------------------------


def real_champion(base: Path) -> Path:
    """A project whose registry's champion is the replay of the Kaggle file with the
    committed params.yaml: the timings bench's project when it ran in this `make bench`,
    else one `raincast run` (bootstrap on the last date) made here."""
    from bench import run as bench_run

    reuse = base / "t" / "project"
    if (reuse / "var" / "mlflow.db").exists() and (
        reuse / "data" / "model" / "train.json"
    ).exists():
        return reuse
    work = base / "serving-cycle"
    work.mkdir(parents=True, exist_ok=True)
    csv = work / "weatherAUS.csv"
    csv.write_bytes(
        subprocess.run(
            ["gzip", "-dc", str(bench_run.DATA / "weatherAUS.csv.gz")],
            capture_output=True,
            check=True,
        ).stdout
    )
    project = bench_run._project(work)
    bench_run._cycle(project, csv, "2017-06-25")
    return project


def _per_call_s(fn: Any, seconds: float = 3.0) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def _records(frame: Any) -> list[dict[str, Any]]:
    return json.loads(frame.drop(columns=["RainTomorrow", "source"]).to_json(orient="records"))


def in_process(settings: Any, work: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(a): the API's own model holder on the champion; returns results and test rows."""
    import dataclasses

    import mlflow
    import pandas as pd

    from raincast.features import build_matrix, build_matrix_columns
    from raincast.models.pyfunc import predict_frame
    from raincast.serving import compiled as comp
    from raincast.serving.model import ModelHolder
    from raincast.serving.schemas import validate_columns

    test = pd.read_parquet(work / "data" / "split" / "test.parquet")
    rows = _records(test)
    holder = ModelHolder(
        settings.model_copy(update={"api_model_cache": work / "var" / "bench-compiled"})
    )
    holder.refresh()
    model = holder.current
    assert model is not None
    t0 = time.perf_counter()
    compiled_ok = holder.wait_compiled(1800)
    compile_s = time.perf_counter() - t0
    fast = holder.current
    assert fast is not None
    slow = dataclasses.replace(fast, compiled=None)  # the same model through XGBoost
    one = rows[:1]
    x1 = build_matrix(one)
    ten_k = rows[:10_000]
    columns10k = {k: [r.get(k) for r in ten_k] for k in ten_k[0]}

    def batch_path(m: Any) -> Any:
        return lambda: m.predict_matrix(build_matrix_columns(validate_columns(columns10k)))

    raw = test.drop(columns=["RainTomorrow", "source"])
    pipeline = predict_frame(fast.booster, raw, fast.threshold)["probability"].to_numpy()
    online = np.concatenate(
        [fast.predict_records(rows[i : i + 1000]) for i in range(0, len(rows), 1000)]
    )
    batch = fast.predict_matrix(build_matrix_columns(validate_columns(
        {k: [r.get(k) for r in rows] for k in rows[0]}
    )))  # fmt: skip
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/rain-tomorrow/{fast.version}")
    logged = pyfunc.predict(raw)["probability"].to_numpy()
    logged_small = np.concatenate(
        [pyfunc.predict(raw.iloc[i : i + 50])["probability"].to_numpy() for i in range(0, 2000, 50)]
    )
    trees = fast.booster.num_boosted_rounds()
    out = {
        "model_version": fast.version,
        "trees": trees,
        "evaluator": fast.evaluator,
        "compile_error": fast.compile_error,
        "compile_seconds_background": round(compile_s, 1) if compiled_ok else None,
        "compile_options": list(comp.COMPILER_OPTIONS),
        "one_row_us": _per_call_s(lambda: fast.predict_records(one)) * 1e6,
        "one_row_us_xgboost": _per_call_s(lambda: slow.predict_records(one)) * 1e6,
        "one_row_features_us": _per_call_s(lambda: build_matrix(one)) * 1e6,
        "one_row_trees_us": _per_call_s(lambda: fast.predict_matrix(x1)) * 1e6,
        "one_row_trees_us_xgboost": _per_call_s(lambda: slow.predict_matrix(x1)) * 1e6,
        "rows_per_s_10k_api_batch_path": 10_000
        / _per_call_s(
            lambda: fast.predict_matrix(build_matrix_columns(validate_columns(columns10k)))
        ),
        "rows_per_s_10k_api_batch_path_xgboost": 10_000
        / _per_call_s(
            lambda: slow.predict_matrix(build_matrix_columns(validate_columns(columns10k)))
        ),
        "parity_rows": len(rows),
        "parity_api_vs_pipeline_max_abs": float(np.max(np.abs(online - pipeline))),
        "parity_api_batch_vs_pipeline_max_abs": float(np.max(np.abs(batch - pipeline))),
        "parity_pyfunc_vs_pipeline_max_abs": float(np.max(np.abs(logged - pipeline))),
        "parity_pyfunc_small_frames_vs_pipeline_max_abs": float(
            np.max(np.abs(logged_small - pipeline[:2000]))
        ),
    }
    holder.stop()
    return out, rows


def _token(url: str, user: str, password: str) -> str:
    import urllib.request

    req = urllib.request.Request(
        f"{url}/auth/token",
        data=json.dumps({"username": user, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req) as resp:
        return str(json.loads(resp.read())["access_token"])


def _wait_compiled(url: str, token: str, log: Path) -> str:
    import urllib.request

    def evaluator() -> str:
        req = urllib.request.Request(f"{url}/model", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
        return "done" if body["evaluator"] == "compiled" or body["compile_error"] else ""

    wait_until("the compiled trees", lambda: evaluator() == "done", 1800, log)
    req = urllib.request.Request(f"{url}/model", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["evaluator"])


def _call(url: str, method: str, path: str, body: bytes | None, token: str | None) -> int:
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url + path, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def hostile(url: str, token: str, one_body: bytes) -> dict[str, Any]:
    """One 20 MB hostile body at a time, while another client calls /predict and /readyz."""
    import http.client
    import threading
    from urllib.parse import urlparse

    mb = 1024 * 1024
    row = json.dumps(json.loads(one_body)["rows"][0]).encode()
    array = b"[" + b",".join([row] * (20 * mb // len(row))) + b"]"
    target = urlparse(url)
    cases = {
        "malformed_array_predict_batch": ("/predict_batch", array, False),
        "malformed_array_predict": ("/predict", array, False),
        "oversized_predict_chunked": ("/predict", array, True),
    }
    out: dict[str, Any] = {"body_mb": round(len(array) / mb, 1)}
    for name, (path, body, chunked) in cases.items():
        seen: list[tuple[int, float]] = []
        stop = threading.Event()

        def other(seen: list[tuple[int, float]] = seen, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                for method, p, b, t in (
                    ("POST", "/predict", one_body, token),
                    ("GET", "/readyz", None, None),
                ):
                    t0 = time.perf_counter()
                    seen.append((_call(url, method, p, b, t), time.perf_counter() - t0))
                time.sleep(0.01)

        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.3)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        t0 = time.perf_counter()
        if chunked:
            chunks = iter([body[i : i + 256 * 1024] for i in range(0, len(body), 256 * 1024)])
            conn.request("POST", path, body=chunks, headers=headers, encode_chunked=True)
        else:
            conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        reply = resp.read()
        seconds = time.perf_counter() - t0
        conn.close()
        time.sleep(0.3)
        stop.set()
        thread.join()
        out[name] = {
            "status": resp.status,
            "seconds_send_and_answer": round(seconds, 3),
            "reply_bytes": len(reply),
            "other_calls": len(seen),
            "other_non_200": sum(s != 200 for s, _ in seen),
            "other_worst_ms": round(max(t for _, t in seen) * 1000, 1),
        }
    out["targets"] = {"answer_seconds": 1.0, "reply_bytes_below": 65536, "other_worst_ms": 1000}
    return out


async def _probe(url: str, body: bytes, token: str, seconds: float, concurrency: int = 4) -> Any:
    """A few clients measuring each request: (status, seconds) pairs."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    out: list[tuple[int, float]] = []
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def client() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                async with s.post(url + "/predict", data=body, headers=headers) as resp:
                    await resp.read()
                    out.append((resp.status, time.perf_counter() - t0))
                await asyncio.sleep(0.005)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return out


def _probe_summary(samples: list[tuple[int, float]]) -> dict[str, Any]:
    ok = np.array([t for s, t in samples if s == 200]) * 1000
    refused = np.array([t for s, t in samples if s in (429, 503)]) * 1000
    return {
        "requests": len(samples),
        "ok": len(ok),
        "refused": len(refused),
        "other": len(samples) - len(ok) - len(refused),
        "ok_p50_ms": round(float(np.percentile(ok, 50)), 2) if len(ok) else None,
        "ok_p95_ms": round(float(np.percentile(ok, 95)), 2) if len(ok) else None,
        "refused_p99_ms": round(float(np.percentile(refused, 99)), 2) if len(refused) else None,
        "refused_max_ms": round(float(refused.max()), 2) if len(refused) else None,
    }


def overload(
    url: str, token: str, body: bytes, capacity_c: int = 16, probe_c: int = 4
) -> dict[str, Any]:
    """5x the concurrency at which capacity was measured, 10 s: wrk holds all but
    ``probe_c`` connections, a probe of ``probe_c`` clients measures admitted and refused
    latencies; the same at capacity first; then the time until the probe's p95 is back."""
    import threading

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    at_capacity: dict[str, Any] = {}
    over: dict[str, Any] = {}

    def background(into: dict[str, Any], c: int) -> None:
        into.update(_load(url + "/predict", body, headers, c, DURATION_S))

    def probed(c: int, into: dict[str, Any]) -> list[tuple[int, float]]:
        thread = threading.Thread(target=background, args=(into, c))
        thread.start()
        time.sleep(1.0)
        samples = asyncio.run(_probe(url, body, token, DURATION_S - 2.0, probe_c))
        thread.join()
        return samples

    base = _probe_summary(probed(capacity_c - probe_c, at_capacity))
    loaded = _probe_summary(probed(5 * capacity_c - probe_c, over))
    t0 = time.perf_counter()
    recovered_s = None
    while time.perf_counter() - t0 < 30:
        window = _probe_summary(asyncio.run(_probe(url, body, token, 1.0, probe_c)))
        if (
            window["other"] == 0
            and window["refused"] == 0
            and window["ok_p95_ms"] is not None
            and base["ok_p95_ms"] is not None
            and window["ok_p95_ms"] <= 2 * base["ok_p95_ms"]
        ):
            recovered_s = round(time.perf_counter() - t0, 1)
            break
    probe_s = DURATION_S - 2.0
    capacity = at_capacity["req_per_s"] + base["requests"] / probe_s
    offered = over["req_per_s"] + loaded["requests"] / probe_s
    return {
        "capacity_concurrency": capacity_c,
        "overload_concurrency": 5 * capacity_c,
        "at_capacity_load": at_capacity,
        "at_capacity_probe": base,
        "overload_load": over,
        "overload_probe": loaded,
        "capacity_req_per_s": round(capacity, 1),
        "overload_req_per_s": round(offered, 1),
        "overload_offered_over_capacity": round(offered / max(capacity, 1e-9), 2),
        "admitted_p95_over_capacity_p95": (
            round(loaded["ok_p95_ms"] / base["ok_p95_ms"], 2)
            if loaded["ok_p95_ms"] and base["ok_p95_ms"]
            else None
        ),
        "recovered_within_s": recovered_s,
        "targets": {"refused_ms_below": 50, "admitted_p95_ratio": 2.0, "recovery_s": 30},
    }


def _serve(
    cmd: list[str], env: dict[str, str], work: Path, name: str, ready: str
) -> subprocess.Popen[bytes]:
    proc = start_logged(cmd, env, work, work / f"{name}.log")
    wait_until(name, lambda: http_status(ready) == 200, 300, work / f"{name}.log")
    return proc


def main(base: Path | None = None) -> dict[str, Any]:
    from raincast.serving.auth import UserStore
    from raincast.settings import Settings

    base = base or Path(tempfile.mkdtemp(prefix="raincast-bench-serve-"))
    work = real_champion(base)
    settings = Settings(project_dir=work, home=work / "var")
    out: dict[str, Any] = {"duration_s": DURATION_S, "load_generator": load_generator()}
    out["in_process"], rows = in_process(settings, work)
    version = out["in_process"]["model_version"]
    out["model_version"] = version

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAINCAST_", "MLFLOW_"))}
    env.update(
        PATH=str(BIN) + os.pathsep + env.get("PATH", ""),
        RAINCAST_PROJECT_DIR=str(work),
        RAINCAST_HOME=str(work / "var"),
        RAINCAST_JWT_SECRET=secrets.token_urlsafe(48),
        RAINCAST_USERS_FILE=str(work / "users.json"),
        RAINCAST_API_POLL_S="0",
        RAINCAST_API_MODEL_CACHE=str(work / "var" / "bench-compiled"),
        MLFLOW_TRACKING_URI=settings.tracking_uri,
    )
    users = UserStore(work / "users.json")
    if not any(u.name == "bench-user" for u in users.list()):
        users.add("bench-user", "bench-password-123", "user")
    plain = {"Content-Type": "application/json"}
    one = rows[:1]
    ten_k = rows[:10_000]
    b_one = json.dumps({"rows": one}).encode()
    c_one = json.dumps({"dataframe_records": one}).encode()
    cols = {k: [r.get(k) for r in ten_k] for k in ten_k[0]}
    b_batch = json.dumps({"columns": cols}).encode()
    c_batch = json.dumps(
        {"dataframe_split": {"columns": list(cols), "data": [list(r.values()) for r in ten_k]}}
    ).encode()

    # (c) mlflow models serve of the same version
    mport = free_port()
    mlf = _serve(
        [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/rain-tomorrow/{version}",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(mport)],
        env, work, "mlflow-serve", f"http://127.0.0.1:{mport}/ping",
    )  # fmt: skip
    try:
        murl = f"http://127.0.0.1:{mport}/invocations"
        _load(murl, c_one, plain, 4, 2)  # warm-up
        out["mlflow_serve"] = {f"c{c}": _load(murl, c_one, plain, c, DURATION_S) for c in (1, 16)}
        out["mlflow_serve"]["batch_10k"] = _batch(murl, c_batch, plain, 10_000)
    finally:
        stop_group(mlf)

    # (b) raincast API: one worker, then one per core
    for workers in ("1", str(os.cpu_count() or 1)):
        name = "raincast_api" if workers == "1" else f"raincast_api_workers_{workers}"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        api = _serve(
            api_command(port), {**env, "RAINCAST_API_WORKERS": workers}, work, name,
            url + "/readyz",
        )  # fmt: skip
        try:
            token = _token(url, "bench-user", "bench-password-123")
            auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            out[name] = {
                "workers": int(workers),
                "evaluator": _wait_compiled(url, token, work / f"{name}.log"),
            }
            _load(url + "/predict", b_one, auth, 4, 2)  # warm-up
            levels = (1, 16) if workers == "1" else (16,)
            out[name] |= {
                f"c{c}": _load(url + "/predict", b_one, auth, c, DURATION_S) for c in levels
            }
            out[name]["batch_10k"] = _batch(url + "/predict_batch", b_batch, auth, 10_000)
            if workers == "1":
                out["hostile"] = hostile(url, token, b_one)
                out["overload"] = overload(url, token, b_one)
        finally:
            stop_group(api)
    out["api_over_mlflow_c16"] = (
        out["raincast_api"]["c16"]["req_per_s"] / out["mlflow_serve"]["c16"]["req_per_s"]
    )
    out["toy_model_extra"] = toy_extra(env)
    out["targets"] = {
        "api_c16_req_per_s": 1500,
        "api_p99_ms_c16": 25,
        "errors": 0,
        "api_over_mlflow_c16": 10.0,
        "in_process_one_row_us": 50,
        "batch_rows_per_s": 300_000,
        "parity_max_abs": 1e-6,
    }
    return out


def toy_extra(env: dict[str, str]) -> dict[str, Any]:
    """The earlier benches' toy model (200 depth-3 trees, synthetic rows): in-process and
    `/predict` at c=16, for comparison only."""
    from raincast.serving.model import ModelHolder
    from raincast.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="raincast-bench-toy-"))
    settings = Settings(project_dir=work, home=work / "var")
    version = train_small_model(settings, STATIONS, n_estimators=200)
    holder = ModelHolder(settings.model_copy(update={"api_model_cache": work / "compiled"}))
    holder.refresh()
    holder.wait_compiled(600)
    model = holder.current
    assert model is not None
    one = _rows(1)
    out: dict[str, Any] = {
        "what": "toy model: 200 depth-3 trees on synthetic rows (not the champion)",
        "model_version": version,
        "evaluator": model.evaluator,
        "one_row_us": _per_call_s(lambda: model.predict_records(one)) * 1e6,
    }
    from raincast.serving.auth import UserStore

    UserStore(work / "users.json").add("bench-user", "bench-password-123", "user")
    toy_env = {
        **env,
        "RAINCAST_PROJECT_DIR": str(work),
        "RAINCAST_HOME": str(work / "var"),
        "RAINCAST_USERS_FILE": str(work / "users.json"),
        "RAINCAST_API_MODEL_CACHE": str(work / "compiled"),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = _serve(api_command(port), toy_env, work, "toy-api", url + "/readyz")
    try:
        token = _token(url, "bench-user", "bench-password-123")
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        body = json.dumps({"rows": one}).encode()
        _load(url + "/predict", body, auth, 4, 2)
        out["c16"] = _load(url + "/predict", body, auth, 16, DURATION_S)
    finally:
        stop_group(api)
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2, default=float))
