"""The daily cycle on production backends: PostgreSQL store, MLflow server (PostgreSQL
backend, artifacts in S3) and a DVC remote in S3."""

from __future__ import annotations

import shutil
import subprocess
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from raincast import schema
from raincast.data import store
from tests.backends.conftest import DVC, LAST, STATIONS, Stack, make_project, run_raincast

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "rain-stack"


@pytest.fixture(scope="module")
def cycled(tmp_path_factory: pytest.TempPathFactory, stack: Stack):  # type: ignore[no-untyped-def]
    """One `raincast run` on the stack; returns (project, env, store url, the run's output)."""
    work = make_project(tmp_path_factory.mktemp("stack"), stack.s3.endpoint, "raincast")
    url = stack.new_db("stack")
    env = stack.env(work, url, MODEL)
    out = run_raincast(work, env, "run", "--source", "replay:replay.csv", "--date", str(LAST))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return work, env, url, out


def test_observations_are_in_postgres(cycled) -> None:  # type: ignore[no-untyped-def]
    _, _, url, _ = cycled
    engine = store.connect(url)
    assert engine.dialect.name == "postgresql"
    days = (LAST - date(2015, 1, 1)).days + 1
    # Rows that observe nothing (the generator's lost days) are quarantined, not stored.
    sent = pd.read_csv(cycled[0] / "replay.csv")
    assert len(sent) == len(STATIONS) * days
    observed = int(sent[list(schema.OBSERVED_COLUMNS)].notna().any(axis=1).sum())
    assert store.count_rows(engine) == observed
    with engine.connect() as conn:
        runs = conn.execute(sa.select(store.validation_runs.c.status)).scalars().all()
    assert runs and set(runs) == {"ok"}, runs  # the history load and the day
    hist = store.read_history(engine, MODEL)
    assert list(hist["decision"]) == ["promoted"]


def test_champion_is_in_the_server_registry_with_artifacts_in_s3(cycled, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    client = MlflowClient(tracking_uri=stack.mlflow.url, registry_uri=stack.mlflow.url)
    champ = client.get_model_version_by_alias(MODEL, "champion")
    assert champ.version == "1"
    run = client.get_run(champ.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    keys = stack.s3.keys("mlflow")
    assert any(champ.run_id in k for k in keys) or any("MLmodel" in k for k in keys), keys[:20]
    assert any(k.endswith("MLmodel") for k in keys), keys[:20]


def test_dvc_push_filled_the_s3_remote_and_a_fresh_clone_pulls(  # type: ignore[no-untyped-def]
    cycled, stack: Stack, tmp_path: Path
) -> None:
    work, env, _, _ = cycled
    keys = stack.s3.keys("dvc", "raincast/")
    assert keys, "dvc push left s3://dvc/raincast empty"
    status = subprocess.run(
        [DVC, "status", "-c"], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr
    assert "new:" not in status.stdout and "deleted:" not in status.stdout, status.stdout

    # A fresh checkout of the project's DVC metadata only (no cache, no outputs).
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(work / "dvc.yaml", clone)
    shutil.copy(work / "dvc.lock", clone)
    shutil.copy(work / "params.yaml", clone)
    shutil.copytree(work / ".dvc", clone / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    target = "data/processed/observations.parquet"
    pull = subprocess.run(
        [DVC, "pull", target], cwd=clone, env=env, capture_output=True, text=True, timeout=300
    )
    assert pull.returncode == 0, pull.stdout + pull.stderr
    assert (clone / target).read_bytes() == (work / target).read_bytes()
