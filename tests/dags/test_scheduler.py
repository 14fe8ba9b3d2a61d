"""A real Airflow (standalone: scheduler, dag-processor, triggerer, api-server) on a free
port: trigger the data update through the REST API and watch the Asset trigger the retrain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from raincast import local_airflow
from raincast.settings import Settings

from .conftest import BIN, LAST

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 240
RUN_TIMEOUT_S = 480


class Api:
    def __init__(self, base: str, password: str) -> None:
        self.base, self.password, self.token = base, password, ""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def login(self) -> None:
        self.token = ""
        out = self.call("POST", "/auth/token", {"username": "admin", "password": self.password})
        self.token = out["access_token"]


def _wait(what: str, timeout: float, probe, log: Path):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (urllib.error.URLError, ConnectionError, KeyError) as err:
            last = err
        time.sleep(3)
    tail = log.read_text()[-4000:] if log.exists() else ""
    raise AssertionError(f"timed out waiting for {what} ({last}); airflow log tail:\n{tail}")


@pytest.fixture(scope="module")
def airflow(af_project):  # type: ignore[no-untyped-def]
    work, env = af_project()
    log = work / "airflow-standalone.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "airflow"), "standalone"],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = Api(
        f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}",
        local_airflow.admin_password(Settings(project_dir=work)),
    )
    try:
        _wait("the API server", START_TIMEOUT_S, lambda: api.login() or True, log)
        _wait(
            "the DAGs to be parsed",
            START_TIMEOUT_S,
            lambda: len(api.call("GET", "/api/v2/dags")["dags"]) == 3,
            log,
        )
        yield work, api, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_api_triggered_update_fires_the_asset_and_the_retrain(airflow) -> None:  # type: ignore[no-untyped-def]
    _, api, log = airflow
    # Batch prediction also listens to the Asset; keep the two cores for the retrain here.
    api.call("PATCH", "/api/v2/dags/weather_batch_predict", {"is_paused": True})
    day = LAST.replace(day=LAST.day - 1).isoformat()
    run = api.call(
        "POST",
        "/api/v2/dags/weather_data_update/dagRuns",
        {"logical_date": f"{day}T00:00:00Z", "note": "test_scheduler"},
    )
    run_id = run["dag_run_id"]

    def update_done() -> str | None:
        api.login()
        state = api.call("GET", f"/api/v2/dags/weather_data_update/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    assert _wait("the data-update run", RUN_TIMEOUT_S, update_done, log) == "success"

    def retrain_done() -> dict[str, Any] | None:
        api.login()
        runs = api.call("GET", "/api/v2/dags/weather_retrain/dagRuns")["dag_runs"]
        done = [r for r in runs if r["state"] in ("success", "failed")]
        return done[0] if done else None

    retrain = _wait("the asset-triggered retrain run", RUN_TIMEOUT_S, retrain_done, log)
    assert retrain["run_type"] == "asset_triggered", retrain
    assert retrain["state"] == "success", retrain
    events = api.call("GET", "/api/v2/assets/events")["asset_events"]
    assert [e["source_dag_id"] for e in events] == ["weather_data_update"]
    assert events[0]["source_task_id"] == "validate"
    tis = api.call(
        "GET", f"/api/v2/dags/weather_retrain/dagRuns/{retrain['dag_run_id']}/taskInstances"
    )
    states = {t["task_id"]: t["state"] for t in tis["task_instances"]}
    assert states["train"] == "success" and states["promote"] == "success", states
