"""`raincast up` / `make up` smoke test: every process healthy, a token, a prediction, the
Airflow API lists the DAGs; `raincast down` leaves no process behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from raincast.local_stack import read_env_file
from raincast.settings import Settings
from tests.helpers import free_port, http_status, train_small_model, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _post(url: str, body: dict, token: str | None = None) -> dict:  # type: ignore[type-arg]
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _ours(work: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if str(work) in " ".join(proc.info["cmdline"] or []) or proc.info["cwd"] == str(work):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_up_serves_everything_and_down_stops_it(tmp_path: Path) -> None:
    work = tmp_path / "project"
    work.mkdir()
    for folder in ("dags", "src", "observability"):
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", work)
    train_small_model(Settings(project_dir=work, home=work / "var"), ("Sydney", "Perth"))
    ports = {
        n: free_port() for n in ("mlflow", "airflow", "api", "ui", "prometheus", "pushgateway")
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAINCAST_", "AIRFLOW"))}
    env.update({f"RAINCAST_{k.upper()}_PORT": str(v) for k, v in ports.items()})
    env.update(PATH=str(BIN) + os.pathsep + env.get("PATH", ""), RAINCAST_SOURCE="synthetic")
    try:
        up = subprocess.run(
            [str(BIN / "raincast"), "up", "--timeout", "420"],
            cwd=work, env=env, capture_output=True, text=True, timeout=480,
        )  # fmt: skip
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "raincast is up" in up.stdout
        ui = f"http://127.0.0.1:{ports['ui']}"
        assert f"1. Monitor     {ui}/?page=Monitor" in up.stdout, up.stdout
        assert "Logins:" in up.stdout and "RAINCAST_API_ADMIN_PASSWORD in" in up.stdout
        assert "--client.toolbarMode viewer" in (work / "var" / "Procfile").read_text()
        assert http_status(f"{ui}/?page=Monitor") == 200
        secrets = read_env_file(work / ".env")
        assert len(secrets["RAINCAST_JWT_SECRET"]) >= 32
        assert (work / ".env").stat().st_mode & 0o077 == 0
        api = f"http://127.0.0.1:{ports['api']}"
        # The API may start before the MLflow server answers: its poller loads the champion.
        wait_until("the API to load the champion", lambda: http_status(api + "/readyz") == 200, 120)
        token = _post(
            api + "/auth/token",
            {"username": "admin", "password": secrets["RAINCAST_API_ADMIN_PASSWORD"]},
        )
        pred = _post(
            api + "/predict",
            {"rows": [{"Date": "2021-03-03", "Location": "Sydney", "Humidity3pm": 80}]},
            token["access_token"],
        )
        assert pred["predictions"][0]["model_version"] == "1"
        airflow = f"http://127.0.0.1:{ports['airflow']}"
        af = _post(
            airflow + "/auth/token",
            {"username": "admin", "password": secrets["RAINCAST_AIRFLOW_PASSWORD"]},
        )
        req = urllib.request.Request(
            airflow + "/api/v2/dags", headers={"Authorization": f"Bearer {af['access_token']}"}
        )
        dags = {
            d["dag_id"] for d in json.loads(urllib.request.urlopen(req, timeout=30).read())["dags"]
        }
        assert {"weather_data_update", "weather_retrain", "weather_batch_predict"} <= dags
        assert urllib.request.urlopen(f"http://127.0.0.1:{ports['mlflow']}/health").status == 200
    finally:
        down = subprocess.run(
            [str(BIN / "raincast"), "down"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert down.returncode == 0 and "stopped" in down.stdout
    left = _ours(work)
    assert not left, [p.info["cmdline"][:3] for p in left]
