"""Shared test builders: a small champion in a temp project's embedded MLflow registry,
free ports, and waiting for a server to come up."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from raincast import catalog, schema
from raincast.data import store
from raincast.params import Params
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource
from raincast.steps import train as train_step
from tests.params_file import LIBRARY_DEFAULTS, train_params, write_params


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def labelled_rows(stations: tuple[str, ...], seed: int, start: date, end: date):  # type: ignore[no-untyped-def]
    rows = SyntheticSource(seed=seed, stations=list(stations)).fetch(start, end)
    rows[schema.RAIN_TOMORROW] = store.next_day_labels(rows)
    return rows[rows[schema.RAIN_TOMORROW].notna()].assign(source="synthetic")


def train_small_model(
    settings: Settings,
    stations: tuple[str, ...],
    seed: int = 3,
    n_estimators: int = 20,
    champion: bool = True,
) -> str:
    """Train a small real model through the train step (the pipeline's own code path),
    register it, and (by default) make it the champion. Returns its version."""
    root = settings.project_dir
    rows = labelled_rows(stations, seed, date(2019, 1, 1), date(2020, 12, 31))
    train, val = rows[rows[schema.DATE] < "2020-07-01"], rows[rows[schema.DATE] >= "2020-07-01"]
    catalog.save_frame(root, catalog.PROCESSED, rows)
    windows = {"train": ["2019-01-01", "2020-06-30"], "validation": ["2020-07-01", "2020-12-30"]}
    windows["test"] = windows["validation"]
    if not (root / "params.yaml").exists():
        write_params(root, LIBRARY_DEFAULTS)
    return train_on_split(settings, train, val, windows, seed, n_estimators, champion)


def train_on_split(
    settings: Settings,
    train: pd.DataFrame,
    val: pd.DataFrame,
    windows: dict[str, list[str]],
    seed: int,
    n_estimators: int,
    champion: bool = True,
) -> str:
    """Write the split stage's outputs (train/validation parquet, windows.json), train a
    small booster through the train step, and (by default) make it the champion."""
    split = settings.project_dir / catalog.TRAIN.path.parent
    split.mkdir(parents=True, exist_ok=True)
    train.to_parquet(split / "train.parquet", index=False)
    val.to_parquet(split / "validation.parquet", index=False)
    (split / "windows.json").write_text(json.dumps({"windows": windows}))
    params = Params(
        train=train_params(
            seed=seed,
            early_stopping_rounds=5,
            xgb={"n_estimators": n_estimators, "max_depth": 3, "n_jobs": 1},
        )
    )
    version = str(train_step.run(settings, params)["model_version"])
    if champion:
        client = MlflowClient(
            tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
        )
        client.set_registered_model_alias(settings.model_name, "champion", version)
    return version


def wait_until(
    what: str, probe: Callable[[], bool], timeout: float, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except (urllib.error.URLError, ConnectionError, OSError) as err:
            last = err
        time.sleep(0.5)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what} ({last})\n{tail}")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


BIN = Path(sys.executable).parent


def api_command(port: int) -> list[str]:
    """`bentoml serve` of the raincast API on 127.0.0.1:``port``, with a BentoML home of
    its own: `bentoml serve` empties ``$BENTOML_HOME/prometheus_multiproc_dir`` when it
    starts, which wipes the metrics of any other server sharing that home (what
    `raincast serve` avoids the same way)."""
    home = Path(tempfile.gettempdir()) / f"raincast-bentoml-{port}"
    return ["env", f"BENTOML_HOME={home}", str(BIN / "bentoml"), "serve",
            "raincast.serving.service:RainService",
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


def mlflow_server_command(backend_uri: str, port: int) -> list[str]:
    """`mlflow server` on 127.0.0.1:``port`` over ``backend_uri`` (one worker)."""
    return [str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip


def start_logged(
    cmd: list[str], env: dict[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (so its whole group can be stopped), output appended
    to ``log`` (a restart on the same log keeps the earlier run's lines)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the process group, SIGKILL after ``timeout`` s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def start_mlflow_server(
    backend_uri: str, env: dict[str, str], work: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """A real `mlflow server` over ``backend_uri`` on a free port, once /health answers."""
    port = free_port()
    log = work / "mlflow-server.log"
    proc = start_logged(mlflow_server_command(backend_uri, port), env, work, log)
    wait_until(
        "mlflow server", lambda: http_status(f"http://127.0.0.1:{port}/health") == 200, 120, log
    )
    return proc, port


def race_two_upserts(
    url: str, batch: pd.DataFrame, source: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, store.UpsertResult], dict[str, BaseException]]:
    """Two threads upsert ``batch`` into the store at ``url`` at once, the second starting
    while the first has read what it compares against and sleeps 0.5 s (every chance to
    overtake there). Returns each thread's result and error by name (first, second)."""
    first_has_read = threading.Event()
    real_read = store._read_observations

    def slow_read(*args: object, **kwargs: object) -> pd.DataFrame:
        out = real_read(*args, **kwargs)  # type: ignore[arg-type]
        if threading.current_thread().name == "first":
            first_has_read.set()
            time.sleep(0.5)
        return out

    monkeypatch.setattr(store, "_read_observations", slow_read)
    results: dict[str, store.UpsertResult] = {}
    errors: dict[str, BaseException] = {}

    def upsert(name: str) -> None:
        try:
            results[name] = store.upsert_observations(store.connect(url), batch, source, name)
        except BaseException as err:  # reported by the caller's assertions
            errors[name] = err

    first = threading.Thread(target=upsert, args=("first",), name="first")
    second = threading.Thread(target=upsert, args=("second",), name="second")
    first.start()
    assert first_has_read.wait(10)
    second.start()
    first.join(30)
    second.join(30)
    return results, errors


def waiting_advisory_locks(engine: sa.Engine) -> int:
    """PostgreSQL advisory locks requested and not yet granted (sessions waiting on one)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            ).scalar_one()
        )
