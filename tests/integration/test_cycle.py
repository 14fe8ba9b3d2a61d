"""The daily cycle end to end in a temporary project: replay data -> store -> dvc repro ->
MLflow registry -> champion alias; reruns change nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from raincast import schema
from raincast.data import store
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STATIONS = ["Sydney", "Perth", "Darwin", "Hobart", "Cairns", "Melbourne", "Adelaide", "Brisbane"]
LAST = date(2017, 6, 25)


def _raincast(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAINCAST_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run(
        [str(Path(sys.executable).parent / "raincast"), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh project folder: the repo's dvc.yaml, params.yaml and code, a new DVC repo."""
    work = tmp_path_factory.mktemp("project")
    shutil.copy(REPO / "dvc.yaml", work)
    shutil.copytree(REPO / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["xgb"].update(n_estimators=150, learning_rate=0.1)  # small and quick
    params["split"].update(test_days=120, validation_days=120)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=work, check=True)
    subprocess.run(
        [dvc, "remote", "add", "-d", "local", "../var/dvc-remote"], cwd=work / ".dvc", check=True
    )
    # A weatherAUS-format file to replay: 8 stations, 2.5 years, made by the seeded generator.
    rows = SyntheticSource(seed=7, stations=STATIONS).fetch(date(2015, 1, 1), LAST)
    rows.to_csv(work / "replay.csv", index=False, na_rep="NA")
    return work


def _versions(work: Path) -> list[str]:
    s = Settings(project_dir=work)
    client = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)
    return sorted(str(v.version) for v in client.search_model_versions("name='rain-tomorrow'"))


def _champion(work: Path) -> str:
    s = Settings(project_dir=work)
    client = MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)
    return str(client.get_model_version_by_alias("rain-tomorrow", "champion").version)


def _replay_run(engine) -> dict[str, object]:  # type: ignore[no-untyped-def]
    run = store.latest_replay_run(engine, "rain-tomorrow")
    assert run is not None, "no replayed window after the cycle"
    return run


def test_first_cycle_creates_history_and_a_champion(project: Path) -> None:
    day = LAST.replace(day=LAST.day - 1).isoformat()
    out = _raincast(project, "run", "--source", "replay:replay.csv", "--date", day)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "version 1 PROMOTED" in out.stdout
    assert "first model" in out.stdout
    assert _champion(project) == "1"
    engine = store.connect(Settings(project_dir=project).raw_store_url)
    rows = store.count_rows(engine)
    # Every replayed row up to the day is stored, except those that observe nothing (the
    # generator's lost days), which validation quarantines.
    sent = pd.read_csv(project / "replay.csv")
    sent = sent[sent["Date"] <= day]
    observed = sent[list(schema.OBSERVED_COLUMNS)].notna().any(axis=1)
    assert len(sent) == len(STATIONS) * ((date.fromisoformat(day) - date(2015, 1, 1)).days + 1)
    assert rows == int(observed.sum()) > 0.99 * len(sent)
    assert store.count_rows(engine, store.quarantine) == int((~observed).sum())
    hist = store.read_history(engine, "rain-tomorrow")
    assert list(hist["decision"]) == ["promoted"]
    # every logged model predicts from raw rows, with the tuned threshold
    assert (project / "data" / "metrics" / "test.json").exists()
    assert (project / "data" / "plots" / "roc.csv").exists()
    assert any((project / "var" / "dvc-remote").rglob("*")), "dvc push left the local remote empty"
    # The drift of this cycle is in the store, and the champion's replayed window: the
    # newest replay.days (60) it did not train on, apart from the live tables.
    (drift,) = store.read_drift_results(engine).to_dict("records")
    assert drift["cycle_date"] == day and drift["run_id"] == f"cycle:{day}"
    replayed = _replay_run(engine)
    assert replayed["model_version"] == "1" and not replayed["overlaps_training"]
    assert replayed["days"] == 60 and replayed["n_scored"] > 0.9 * replayed["n_predictions"]
    assert store.count_rows(engine, store.predictions) == 0
    assert store.count_rows(engine, store.live_scores) == 0
    assert "replayed window (not live): rain-tomorrow v1" in out.stdout


def test_rerunning_the_same_date_changes_nothing(project: Path) -> None:
    engine = store.connect(Settings(project_dir=project).raw_store_url)
    before_rows = store.count_rows(engine)
    before_versions = _versions(project)
    day = LAST.replace(day=LAST.day - 1).isoformat()
    out = _raincast(project, "run", "--source", "replay:replay.csv", "--date", day)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "no decision: version 1 was already promoted" in out.stdout
    # Nothing changed: the decision and the replayed window come from the store, no
    # registry round trip (the fast no-op rerun).
    assert "promote + replay: already recorded for this model" in out.stderr
    assert "replay skipped: version 1's replayed window" in out.stdout
    assert store.count_rows(engine) == before_rows
    assert _versions(project) == before_versions
    assert len(store.read_history(engine, "rain-tomorrow")) == 1
    assert len(store.read_drift_results(engine)) == 1
    assert store.count_rows(engine, store.replay_runs) == 1


def test_next_day_retrains_and_records_the_decision(project: Path) -> None:
    out = _raincast(project, "run", "--source", "replay:replay.csv", "--date", LAST.isoformat())
    assert out.returncode == 0, out.stderr + out.stdout
    assert _versions(project) == ["1", "2"]
    engine = store.connect(Settings(project_dir=project).raw_store_url)
    hist = store.read_history(engine, "rain-tomorrow")
    assert len(hist) == 2
    last = hist.iloc[-1]
    assert last["candidate_version"] == "2" and last["champion_before"] == "1"
    assert last["champion_f1"] is not None and "F1" in last["reasons"]
    expected = "2" if last["decision"] == "promoted" else "1"
    assert _champion(project) == expected
    assert list(store.read_drift_results(engine)["cycle_date"]) == [
        LAST.replace(day=LAST.day - 1).isoformat(),
        LAST.isoformat(),
    ]
    # A new champion, or the same one a labelled day later: the window is replaced.
    assert store.count_rows(engine, store.replay_runs) == 2
    assert _replay_run(engine)["model_version"] == expected
    assert set(store.read_replayed_predictions(engine)["model_version"]) == {expected}


def test_rollback_and_stage_names(project: Path) -> None:
    out = _raincast(project, "registry", "stage", "2", "Production")
    assert out.returncode == 0, out.stderr
    assert _champion(project) == "2"
    out = _raincast(project, "rollback")
    assert out.returncode == 0, out.stderr
    assert _champion(project) == "1"
    bad = _raincast(project, "registry", "stage", "2", "Not A Label!")
    assert bad.returncode == 1 and "not a valid alias" in bad.stderr


def test_missing_replay_file_fails_with_a_message(project: Path) -> None:
    out = _raincast(project, "run", "--source", "replay:nope.csv")
    assert out.returncode == 1
    assert "weatherAUS file not found" in out.stderr


def test_logged_model_predicts_from_raw_rows_and_mlflow_serves_it(project: Path) -> None:
    import socket
    import time

    import mlflow
    import pandas as pd
    import requests

    s = Settings(project_dir=project)
    mlflow.set_tracking_uri(s.tracking_uri)
    mlflow.set_registry_uri(s.tracking_uri)  # earlier tests may have left a server registry set
    raw = pd.read_parquet(project / "data" / "split" / "test.parquet").head(20)
    raw = raw.drop(columns=["RainTomorrow", "source"])
    model = mlflow.pyfunc.load_model("models:/rain-tomorrow@champion")
    out = model.predict(raw)
    assert list(out.columns) == ["probability", "label", "threshold"]
    assert out["probability"].between(0, 1).all()
    assert ((out["probability"] >= out["threshold"]) == (out["label"] == "Yes")).all()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": s.tracking_uri,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    }
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/rain-tomorrow@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow models serve did not become ready in 120 s")
        body = {
            "dataframe_split": raw.head(3)
            .astype(object)
            .where(raw.head(3).notna(), None)
            .to_dict(orient="split")
        }
        body["dataframe_split"].pop("index")
        resp = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        served = pd.DataFrame(resp.json()["predictions"])
        assert (
            abs(served["probability"].to_numpy() - out["probability"].head(3).to_numpy()).max()
            < 1e-6
        )
        bad = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_split": {"columns": ["MinTemp"], "data": [[1.0]]}},
            timeout=30,
        )
        assert bad.status_code == 400  # Date and Location are required by the signature
    finally:
        server.terminate()
        server.wait(timeout=30)
