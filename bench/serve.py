"""`make bench` part 2: serving, side by side in one run, same registered model, loopback.

(a) in-process prediction (the limit), (b) raincast `/predict` behind JWT via `bentoml
serve`, (c) `mlflow models serve` of the same model version. 1-row requests at
concurrency 1 and 16 for a fixed duration (req/s, p50, p99, errors), and rows/s with
10k-row payloads. The load generator shares the 2 cores with the servers: `wrk` (C, one
thread; Debian package wrk) when it is installed, so it takes little of the CPU the servers
need, else an aiohttp client (one Python process, which costs the servers about a core).
The same generator measures (b) and (c); the result records which.
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

from tests.helpers import (  # noqa: E402
    api_command,
    free_port,
    labelled_rows,
    start_logged,
    stop_group,
    train_small_model,
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
function init(args)
  local f = assert(io.open(args[1], "rb")); body = f:read("*a"); f:close()
  token = args[2]
end
function request()
  local headers = {["Content-Type"] = "application/json"}
  if token ~= nil and token ~= "" then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("POST", nil, headers, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %f, "p50_us": %f, "p99_us": %f, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
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
        "p99_ms": res["p99_us"] / 1000,
        "errors": res["errors"],  # socket errors, timeouts and non-2xx/3xx answers
    }


async def _load_aiohttp(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, duration: float
) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors += 1
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
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": errors,
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


def main() -> dict[str, Any]:
    import pandas as pd

    from raincast.features import build_matrix_columns
    from raincast.serving.auth import UserStore
    from raincast.serving.model import ModelHolder
    from raincast.serving.schemas import validate_columns
    from raincast.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="raincast-bench-serve-"))
    settings = Settings(project_dir=work, home=work / "var")
    version = train_small_model(settings, STATIONS, n_estimators=200)
    one = _rows(1)
    ten_k = _rows(10_000)
    out: dict[str, Any] = {
        "model_version": version,
        "duration_s": DURATION_S,
        "load_generator": load_generator(),
    }

    # (a) in-process: the same ModelHolder the API uses.
    holder = ModelHolder(settings)
    holder.refresh()
    model = holder.current
    assert model is not None
    frame1 = pd.DataFrame(one)

    def per_call_s(fn: Any) -> float:
        fn()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 3:
            fn()
            n += 1
        return (time.perf_counter() - t0) / n

    per_call = per_call_s(lambda: model.predict_records(one))
    per_call_pandas = per_call_s(lambda: model.predict(frame1))
    frame10k = pd.DataFrame(ten_k)
    t0 = time.perf_counter()
    model.predict(frame10k)
    pandas_s = time.perf_counter() - t0
    columns10k = {k: [r.get(k) for r in ten_k] for k in ten_k[0]}
    # What /predict_batch runs after parsing: validation, the columnar matrix, all cores.
    matrix_s = per_call_s(
        lambda: model.predict_matrix(build_matrix_columns(validate_columns(columns10k)))
    )
    out["in_process"] = {
        "one_row_ms": per_call * 1000,
        "one_row_calls_per_s": 1 / per_call,
        "one_row_ms_pandas_path": per_call_pandas * 1000,
        "rows_per_s_10k": 10_000 / pandas_s,
        "rows_per_s_10k_api_batch_path": 10_000 / matrix_s,
    }

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAINCAST_")}
    env.update(
        PATH=str(BIN) + os.pathsep + env.get("PATH", ""),
        RAINCAST_PROJECT_DIR=str(work),
        RAINCAST_HOME=str(work / "var"),
        RAINCAST_JWT_SECRET=secrets.token_urlsafe(48),
        RAINCAST_USERS_FILE=str(work / "users.json"),
        RAINCAST_API_POLL_S="0",
        MLFLOW_TRACKING_URI=settings.tracking_uri,
    )
    UserStore(work / "users.json").add("bench-user", "bench-password-123", "user")

    # (b) raincast API
    port = free_port()
    api = start_logged(api_command(port), env, work, work / "api.log")
    # (c) mlflow models serve of the same version
    mport = free_port()
    mlf = start_logged(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/rain-tomorrow/{version}",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(mport),
        ],
        env,
        work,
        work / "mlflow.log",
    )
    try:
        from tests.helpers import http_status

        wait_until(
            "raincast API",
            lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200,
            180,
            work / "api.log",
        )
        wait_until(
            "mlflow serve",
            lambda: http_status(f"http://127.0.0.1:{mport}/ping") == 200,
            180,
            work / "mlflow.log",
        )
        import urllib.request

        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/auth/token",
            data=json.dumps({"username": "bench-user", "password": "bench-password-123"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req) as resp:
            token = json.loads(resp.read())["access_token"]
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        plain = {"Content-Type": "application/json"}
        b_one = json.dumps({"rows": one}).encode()
        c_one = json.dumps({"dataframe_records": one}).encode()
        cols = {k: [r.get(k) for r in ten_k] for k in ten_k[0]}
        b_batch = json.dumps({"columns": cols}).encode()
        c_batch = json.dumps(
            {"dataframe_split": {"columns": list(cols), "data": [list(r.values()) for r in ten_k]}}
        ).encode()
        for name, url, body, headers in (
            ("raincast_api", f"http://127.0.0.1:{port}/predict", b_one, auth),
            ("mlflow_serve", f"http://127.0.0.1:{mport}/invocations", c_one, plain),
        ):
            _load(url, body, headers, 4, 2)  # warm-up
            out[name] = {f"c{c}": _load(url, body, headers, c, DURATION_S) for c in (1, 16)}
        out["raincast_api"]["batch_10k"] = _batch(
            f"http://127.0.0.1:{port}/predict_batch", b_batch, auth, 10_000
        )
        out["mlflow_serve"]["batch_10k"] = _batch(
            f"http://127.0.0.1:{mport}/invocations", c_batch, plain, 10_000
        )
    finally:
        stop_group(api)
        stop_group(mlf)
    out["api_over_mlflow_c16"] = (
        out["raincast_api"]["c16"]["req_per_s"] / out["mlflow_serve"]["c16"]["req_per_s"]
    )
    out["targets"] = {
        "api_over_mlflow_c16": 2.0,
        "api_p99_ms_c16": 25,
        "errors": 0,
        "batch_rows_per_s": 100_000,
    }
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
