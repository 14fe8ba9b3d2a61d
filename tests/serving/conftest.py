"""A real MLflow tracking server and a real `bentoml serve` of the API, on free loopback
ports, over a temporary project whose registry holds a small trained champion."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from raincast.serving.auth import UserStore
from raincast.settings import Settings
from tests.helpers import (
    api_command,
    free_port,
    http_status,
    start_logged,
    start_mlflow_server,
    stop_group,
    train_small_model,
    wait_until,
)

BIN = Path(sys.executable).parent
STATIONS = ("Sydney", "Perth", "Darwin", "Hobart")
PASSWORD = "correct-horse-battery"


start, stop = start_logged, stop_group  # names the serving tests use


def base_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAINCAST_", "MLFLOW_"))}
    env.update(
        PATH=str(BIN) + os.pathsep + env.get("PATH", ""),
        RAINCAST_PROJECT_DIR=str(work),
        RAINCAST_HOME=str(work / "var"),
        RAINCAST_USERS_FILE=str(work / "users.json"),
    )
    return env


@dataclass
class Api:
    url: str
    work: Path
    settings: Settings
    mlflow: subprocess.Popen[bytes]
    proc: subprocess.Popen[bytes]
    env: dict[str, str]

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, headers=hdrs, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, h, content = resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            status, h, content = err.code, dict(err.headers), err.read()
        try:
            parsed: Any = json.loads(content) if content else None
        except json.JSONDecodeError:
            parsed = content.decode(errors="replace")
        return status, h, parsed

    def token(self, user: str, password: str = PASSWORD) -> str:
        status, _, body = self.call("POST", "/auth/token", {"username": user, "password": password})
        assert status == 200, body
        return str(body["access_token"])


@pytest.fixture(scope="package")
def api(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    work = tmp_path_factory.mktemp("serving")
    settings = Settings(project_dir=work, home=work / "var")
    train_small_model(settings, STATIONS, seed=3, n_estimators=30)
    users = UserStore(work / "users.json")
    users.add("alice-admin", PASSWORD, "admin")
    users.add("bob-user", PASSWORD, "user")
    env = base_env(work)
    # MLflow 3's server otherwise starts ~8 job-runner processes (~250 MB each).
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    mlflow, mport = start_mlflow_server(settings.tracking_uri, env, work)
    env.update(
        RAINCAST_MLFLOW_TRACKING_URI=f"http://127.0.0.1:{mport}",
        RAINCAST_JWT_SECRET=secrets.token_urlsafe(48),
        RAINCAST_API_POLL_S="2",
        RAINCAST_API_MAX_ROWS="50",  # so the /predict body limit is ~164 KB here
        RAINCAST_API_MAX_CONCURRENCY="8",  # low enough for a burst test to reach it
        RAINCAST_API_MODEL_CACHE=str(work / "compiled-models"),
    )
    port = free_port()
    proc = start(api_command(port), env, work, work / "api.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until("the API", lambda: http_status(url + "/readyz") == 200, 180, work / "api.log")
        served = Api(url, work, settings, mlflow, proc, env)
        if shutil.which("gcc"):  # the tests then exercise the compiled trees
            token = served.token("bob-user")
            wait_until(
                "the compiled trees",
                lambda: served.call("GET", "/model", token=token)[2]["evaluator"] == "compiled",
                180,
                work / "api.log",
            )
        yield served
    finally:
        stop(proc)
        stop(mlflow)
