"""Steady load: 10,000 `/predict` calls at concurrency 16 against a real `bentoml serve`
of a small champion; errors, req/s, p99 and the API worker's memory growth.

    python -m bench.steady            # prints the result as JSON

Memory is the resident set size of the BentoML worker process (the child of `bentoml
serve` that runs `_bentoml_impl.worker`), read after a warm-up and again after the load.
Targets: no errors and less than 10 % RSS growth.
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
import urllib.request
from datetime import date
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
    start_mlflow_server,
    stop_group,
    wait_until,
)

BIN = Path(sys.executable).parent
STATIONS = ("Sydney", "Perth", "Darwin", "Hobart")
REQUESTS = int(os.environ.get("RAINCAST_STEADY_REQUESTS", "10000"))
CONCURRENCY = int(os.environ.get("RAINCAST_STEADY_CONCURRENCY", "16"))
WARMUP = int(os.environ.get("RAINCAST_STEADY_WARMUP", "2000"))
CHECKPOINTS = 5
MAX_GROWTH_PCT = 10.0
PASSWORD = "steady-password-123"


def _worker_process(server_pid: int) -> Any:
    """The BentoML worker under `bentoml serve` (the process that holds the model)."""
    import psutil

    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            if any("_bentoml_impl.worker" in part for part in child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    raise RuntimeError(f"no _bentoml_impl.worker process under pid {server_pid}")


def _bodies(n: int) -> list[bytes]:
    """One-row request bodies cycling over real-looking rows (no two consecutive alike)."""
    frame = labelled_rows(STATIONS, 5, date(2021, 1, 1), date(2021, 12, 31))
    records = json.loads(frame.drop(columns=["RainTomorrow", "source"]).to_json(orient="records"))
    return [json.dumps({"rows": [records[i % len(records)]]}).encode() for i in range(n)]


async def _load(
    url: str, bodies: list[bytes], headers: dict[str, str], concurrency: int
) -> dict[str, Any]:
    """Send every body once, ``concurrency`` at a time; latencies of the 200s, error count."""
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    queue = iter(bodies)
    timeout = aiohttp.ClientTimeout(total=30)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:

        async def worker() -> None:
            for body in queue:
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status == 200:
                            latencies.append(time.perf_counter() - t0)
                            continue
                        kind = f"http {resp.status}"
                except (aiohttp.ClientError, TimeoutError) as err:
                    kind = type(err).__name__
                errors[kind] = errors.get(kind, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000
    return {
        "requests": len(bodies),
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": round(seconds, 2),
        "req_per_s": round(len(bodies) / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "_latencies_ms": lat,
    }


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary of consecutive load chunks (p50/p99 from the chunks' latencies)."""
    lat = np.concatenate([p.pop("_latencies_ms") for p in parts])
    seconds = sum(p["seconds"] for p in parts)
    requests = sum(p["requests"] for p in parts)
    kinds: dict[str, int] = {}
    for p in parts:
        for k, v in p["error_kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    return {
        "requests": requests,
        "ok": sum(p["ok"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "error_kinds": kinds,
        "seconds": round(seconds, 2),
        "req_per_s": round(requests / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
    }


def main() -> dict[str, Any]:
    from raincast.serving.auth import UserStore
    from raincast.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="raincast-bench-steady-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        settings = Settings(project_dir=work, home=work / "var")
        version = train_small_model(settings, STATIONS, n_estimators=50)
        UserStore(work / "users.json").add("steady", PASSWORD, "user")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAINCAST_", "MLFLOW_"))}
        env.update(
            PATH=str(BIN) + os.pathsep + env.get("PATH", ""),
            RAINCAST_PROJECT_DIR=str(work),
            RAINCAST_HOME=str(work / "var"),
            RAINCAST_USERS_FILE=str(work / "users.json"),
        )
        mlflow, mport = start_mlflow_server(settings.tracking_uri, env, work)
        procs.append(mlflow)
        env.update(
            RAINCAST_MLFLOW_TRACKING_URI=f"http://127.0.0.1:{mport}",
            RAINCAST_JWT_SECRET=secrets.token_urlsafe(48),
            RAINCAST_API_MAX_ROWS="50",
        )
        port = free_port()
        api = start_logged(api_command(port), env, work, work / "api.log")
        procs.append(api)
        url = f"http://127.0.0.1:{port}"
        wait_until("the API", lambda: http_status(url + "/readyz") == 200, 180, work / "api.log")
        req = urllib.request.Request(
            url + "/auth/token",
            data=json.dumps({"username": "steady", "password": PASSWORD}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            token = json.loads(resp.read())["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        worker = _worker_process(api.pid)
        bodies = _bodies(REQUESTS)
        warm = asyncio.run(_load(url + "/predict", bodies[:WARMUP], headers, CONCURRENCY))
        rss = [worker.memory_info().rss]
        # Same load in chunks, RSS after each: a plateau is allocator warm-up, a ramp a leak.
        chunks = [
            bodies[i : i + REQUESTS // CHECKPOINTS]
            for i in range(0, REQUESTS, REQUESTS // CHECKPOINTS)
        ]
        parts = []
        for chunk in chunks:
            parts.append(asyncio.run(_load(url + "/predict", chunk, headers, CONCURRENCY)))
            rss.append(worker.memory_info().rss)
        load = _merge(parts)
        rss_before, rss_after = rss[0], rss[-1]
        growth = 100.0 * (rss_after - rss_before) / rss_before
        mid = len(rss) // 2
        growth_second_half = 100.0 * (rss_after - rss[mid]) / rss[mid]
        return {
            "model_version": version,
            "concurrency": CONCURRENCY,
            "warmup_requests": WARMUP,
            "warmup_errors": warm["errors"],
            "warmup_req_per_s": warm["req_per_s"],
            **load,
            "worker_pid": worker.pid,
            "rss_before_mb": round(rss_before / 2**20, 1),
            "rss_after_mb": round(rss_after / 2**20, 1),
            "rss_mb_at_checkpoints": [round(r / 2**20, 1) for r in rss],
            "rss_growth_pct": round(growth, 2),
            "rss_growth_second_half_pct": round(growth_second_half, 2),
            "targets": {"errors": 0, "rss_growth_pct_below": MAX_GROWTH_PCT},
            "passed": load["errors"] == 0 and growth < MAX_GROWTH_PCT,
        }
    finally:
        for proc in reversed(procs):
            stop_group(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
