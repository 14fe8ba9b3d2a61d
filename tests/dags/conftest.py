"""Airflow test fixtures: a temporary project (dvc.yaml, params, dags, replay data) and the
environment every Airflow process of the local deployment gets (raincast.local_airflow)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
import yaml

from raincast import local_airflow
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STATIONS = ["Sydney", "Perth", "Darwin", "Hobart", "Cairns", "Melbourne"]
FIRST, LAST = date(2015, 1, 1), date(2017, 6, 25)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_project(base: Path) -> Path:
    """dvc.yaml, small-model params, code, dags and a replay file in a fresh DVC repo."""
    work = base / "project"
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work)
    for folder in ("src", "dags"):
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["xgb"].update(n_estimators=60, learning_rate=0.2)  # small and quick
    params["train"]["refit_rounds_factor"] = 0
    params["split"].update(test_days=120, validation_days=120)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=work, check=True)
    subprocess.run(
        [str(BIN / "dvc"), "remote", "add", "-d", "local", "../var/dvc-remote"],
        cwd=work / ".dvc",
        check=True,
        capture_output=True,
    )
    rows = SyntheticSource(seed=11, stations=STATIONS).fetch(FIRST, LAST)
    rows.to_csv(work / "replay.csv", index=False, na_rep="NA")
    return work


def airflow_env(work: Path, port: int) -> dict[str, str]:
    """The local-deployment environment for a test project: replay source, no retries,
    no time-based schedules (runs happen only when a test asks), free ports."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAINCAST_", "AIRFLOW"))}
    saved = os.environ.copy()
    os.environ.clear()
    os.environ.update(clean)
    try:
        env = local_airflow.airflow_env(Settings(project_dir=work), port)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    env.update(
        RAINCAST_SOURCE="replay:replay.csv",
        RAINCAST_TASK_RETRIES="0",
        RAINCAST_UPDATE_SCHEDULE="none",
        RAINCAST_RETRAIN_SCHEDULE="none",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
        PYTHONDONTWRITEBYTECODE="",
    )
    env.pop("PYTHONDONTWRITEBYTECODE")
    return env


def run(
    cmd: list[str], work: Path, env: dict[str, str], timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def af_project(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[], tuple[Path, dict[str, str]]]:
    """Project + migrated Airflow DB + pool + store history up to LAST - 2 days."""
    work = make_project(tmp_path_factory.mktemp("af"))
    env = airflow_env(work, free_port())
    local_airflow.prepare(env)
    history_end = date.fromordinal(LAST.toordinal() - 2).isoformat()
    for cmd in (
        [
            "fetch",
            "--source",
            "replay:replay.csv",
            "--date",
            history_end,
            "--start",
            FIRST.isoformat(),
        ],
        ["validate", "--date", history_end],
    ):
        out = run([str(BIN / "raincast"), *cmd], work, env)
        assert out.returncode == 0, out.stdout + out.stderr
    return lambda: (work, env)
