"""Monitor's API (GET /monitor/*) as the UI meets it: a real `bentoml serve` beside the
package's one (same registry, users and JWT secret) with its own raw store, filled by the
pipeline's own writers: a real replay of the champion, live predictions and scores, drift
results and registry decisions. Tests run in file order: absent store, empty store, data,
then a broken store."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn import metrics as skm

from raincast.data import store
from raincast.params import ReplayParams
from raincast.pipeline.replay import replay
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource
from raincast.steps import predict as predict_step
from raincast.steps import score as score_step
from raincast.steps.drift import record_drift
from tests.helpers import (
    api_command,
    free_port,
    http_status,
    mlflow_server_command,
    wait_until,
)

from .conftest import STATIONS, Api, start, stop

pytestmark = pytest.mark.slow

PATHS = ("/monitor/scores", "/monitor/reliability", "/monitor/drift", "/monitor/champions")
DAY = date(2021, 3, 10)


def _registry_up(api: Api) -> subprocess.Popen[bytes] | None:
    """The package's registry, restarted on its port if an earlier test stopped it
    (test_api.py ends with the registry down); the restarted server, to stop after."""
    uri = api.env["RAINCAST_MLFLOW_TRACKING_URI"]

    def healthy() -> bool:
        try:
            return http_status(uri + "/health") == 200
        except OSError:
            return False

    if healthy():
        return None
    port = int(uri.rsplit(":", 1)[1])
    log = api.work / "mlflow-server.log"
    cmd = mlflow_server_command(api.settings.tracking_uri, port)
    proc = start(cmd, api.env, api.work, log)
    wait_until("the registry again", healthy, 120, log)
    return proc


@pytest.fixture(scope="module")
def monitor(api: Api) -> Iterator[tuple[Api, Settings]]:
    """The API again, on its own port and raw store (absent until a test creates it)."""
    registry = _registry_up(api)
    work = api.work / "monitor"
    work.mkdir()
    db = work / "raincast.db"
    env = {**api.env, "RAINCAST_STORE_URL": f"sqlite:///{db}"}
    port = free_port()
    proc = start(api_command(port), env, api.work, work / "api.log")
    served = replace(api, url=f"http://127.0.0.1:{port}", proc=proc, env=env)
    settings = Settings(
        project_dir=api.work,
        home=work / "var",
        store_url=env["RAINCAST_STORE_URL"],
        mlflow_tracking_uri=env["RAINCAST_MLFLOW_TRACKING_URI"],
    )
    try:
        ready = lambda: http_status(served.url + "/readyz") == 200  # noqa: E731
        wait_until("the monitor API", ready, 180, work / "api.log")
        yield served, settings
    finally:
        stop(proc)
        if registry is not None:  # back to the state the earlier tests left
            stop(registry)


@pytest.fixture(scope="module")
def token(monitor: tuple[Api, Settings]) -> str:
    return monitor[0].token("bob-user")


def _champion(settings: Settings) -> str:
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    return str(client.get_model_version_by_alias(settings.model_name, "champion").version)


def _get(m: tuple[Api, Settings], path: str, token: str) -> tuple[int, object]:
    status, _, body = m[0].call("GET", path, token=token)
    return status, body


def test_monitor_needs_a_token(monitor: tuple[Api, Settings]) -> None:
    api, _ = monitor
    for path in PATHS:
        assert api.call("GET", path)[0] == 401, path
        assert api.call("GET", path, token="not.a.jwt")[0] == 401, path


def test_an_absent_store_is_503_with_the_reason(monitor: tuple[Api, Settings], token: str) -> None:
    for path in PATHS:
        status, body = _get(monitor, path, token)
        assert status == 503, (path, body)
        assert "absent" in body["detail"] and "RAINCAST_STORE_URL" in body["detail"]  # type: ignore[index]
    # /model still describes the served model; only its champion history is missing.
    status, body = _get(monitor, "/model", token)
    assert status == 200 and body["version"] == _champion(monitor[1])  # type: ignore[index]
    assert body["champion_history"] is None  # type: ignore[index]
    assert "absent" in body["champion_history_error"]  # type: ignore[index]


def test_an_empty_store_answers_nothing_yet(monitor: tuple[Api, Settings], token: str) -> None:
    _, settings = monitor
    store.connect(settings.raw_store_url)  # the tables, no rows
    assert _get(monitor, "/monitor/scores", token) == (
        200,
        {"model_name": "rain-tomorrow", "rows": []},
    )
    assert _get(monitor, "/monitor/drift", token) == (200, {"rows": []})
    status, body = _get(monitor, "/monitor/reliability", token)
    assert (status, body) == (200, {"kind": "live", "start": None, "end": None, "n": 0, "bins": []})
    status, body = _get(monitor, "/monitor/champions", token)
    # No decision recorded: the version the API serves is the current champion.
    assert status == 200 and body["rows"] == []  # type: ignore[index]
    assert body["current"] == _champion(monitor[1])  # type: ignore[index]
    status, body = _get(monitor, "/model", token)
    assert status == 200 and body["champion_history"] == []  # type: ignore[index]
    assert body["champion_history_error"] is None  # type: ignore[index]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/monitor/scores?kind=bogus", "kind must be one of live, replayed, all"),
        ("/monitor/reliability?kind=all", "kind must be one of replayed, live"),
        ("/monitor/reliability?window_days=0", "window_days must be between 1 and 366"),
        ("/monitor/reliability?window_days=367", "window_days must be between 1 and 366"),
        ("/monitor/reliability?window_days=abc", "window_days must be a whole number"),
        ("/monitor/reliability?bins=1", "bins must be between 2 and 50"),
        ("/monitor/reliability?bins=51", "bins must be between 2 and 50"),
        ("/monitor/reliability?bins=2.5", "bins must be a whole number"),
    ],
)
def test_bad_parameters_are_422_with_the_reason(
    monitor: tuple[Api, Settings], token: str, path: str, reason: str
) -> None:
    status, body = _get(monitor, path, token)
    assert status == 422
    assert isinstance(body, dict) and isinstance(body["detail"], str)
    assert body["detail"].startswith(reason), body


@pytest.fixture(scope="module")
def filled(monitor: tuple[Api, Settings]) -> Settings:
    """The store after a few days of the pipeline: observations, a replay of the champion,
    live predictions scored, drift results of two cycles, two registry decisions."""
    _, settings = monitor
    engine = store.connect(settings.raw_store_url)
    rows = SyntheticSource(seed=11, stations=list(STATIONS)).fetch(date(2021, 1, 1), DAY)
    store.upsert_observations(engine, rows, "synthetic", "load")
    replay(settings, ReplayParams(days=30, windows=(7, 30)), run_id="replay-test")
    for d in range(4, 9):
        predict_step.run(settings, date(2021, 3, d), run_id=f"live-{d}")
    for d in (9, 10):
        score_step.run(settings, date(2021, 3, d))
    body = {
        "drift_share": 0.25,
        "drift_detected": False,
        "drifted_columns": ["MinTemp", "Humidity3pm"],
        "columns": {f"c{i}": {} for i in range(8)},
        "share_threshold": 0.3,
    }
    record_drift(settings, body)
    later = {**body, "drift_share": 0.5, "drift_detected": True, "drifted_columns": ["MaxTemp"]}
    record_drift(settings.model_copy(update={"run_id": "manual__2021-03-10"}), later)
    for before, after, decision in ((None, "1", "promoted"), ("1", "1", "rejected")):
        store.record_decision(
            engine,
            model_name=settings.model_name,
            action="promote",
            decision=decision,
            candidate_version=after if before is None else "2",
            champion_before=before,
            champion_after=after,
            candidate_f1=0.61,
            champion_f1=None if before is None else 0.6,
            reasons="test",
        )
    return settings


def test_scores_of_both_kinds_never_mixed(
    monitor: tuple[Api, Settings], token: str, filled: Settings
) -> None:
    engine = store.connect(filled.raw_store_url)
    status, body = _get(monitor, "/monitor/scores", token)
    assert status == 200 and body["model_name"] == "rain-tomorrow"  # type: ignore[index]
    rows = body["rows"]  # type: ignore[index]
    replayed = [r for r in rows if r["kind"] == "replayed"]
    live = [r for r in rows if r["kind"] == "live"]
    assert len(replayed) == len(store.read_replayed_scores(engine)) > 50  # ~30 days x 2 windows
    assert len(live) == len(store.read_live_scores(engine)) == 4  # 2 days x 2 windows
    assert [r["as_of_date"] for r in rows] == sorted(r["as_of_date"] for r in rows)
    assert set(rows[0]) == {
        "kind", "as_of_date", "window_days", "window_start", "n_scored", "f1", "roc_auc",
        "calibration_error", "base_rate", "mean_probability", "model_versions",
    }  # fmt: skip
    assert {r["model_versions"] for r in rows} == {_champion(filled)}
    # The newest replayed 30-day F1 is the one recomputed from the stored predictions.
    preds = store.read_replayed_predictions(engine).dropna(subset=["outcome"])
    newest = max(r["as_of_date"] for r in replayed)
    start = (date.fromisoformat(newest) - timedelta(days=29)).isoformat()
    done = preds[(preds["target_date"] >= start) & (preds["target_date"] <= newest)]
    row = next(r for r in replayed if r["as_of_date"] == newest and r["window_days"] == 30)
    y = (done["outcome"] == "Yes").to_numpy(int)
    assert row["n_scored"] == len(done)
    assert row["f1"] == pytest.approx(skm.f1_score(y, (done["label"] == "Yes").to_numpy(int)))
    only_live = _get(monitor, "/monitor/scores?kind=live", token)[1]["rows"]  # type: ignore[index]
    assert only_live == live
    only_replayed = _get(monitor, "/monitor/scores?kind=replayed", token)[1]["rows"]  # type: ignore[index]
    assert only_replayed == replayed


def test_reliability_of_the_replayed_window_by_default(
    monitor: tuple[Api, Settings], token: str, filled: Settings
) -> None:
    preds = store.read_replayed_predictions(store.connect(filled.raw_store_url))
    preds = preds.dropna(subset=["outcome"])
    status, body = _get(monitor, "/monitor/reliability?window_days=7&bins=4", token)
    assert status == 200
    end = preds["target_date"].max()
    start = (date.fromisoformat(end) - timedelta(days=6)).isoformat()
    window = preds[preds["target_date"] >= start]
    assert body == {**body, "kind": "replayed", "start": start, "end": end, "n": len(window)}  # type: ignore[dict-item]
    bins = body["bins"]  # type: ignore[index]
    assert sum(b["n"] for b in bins) == len(window)
    p, y = window["probability"].to_numpy(), (window["outcome"] == "Yes").to_numpy(float)
    for b in bins:
        last = b["upper"] == 1.0
        inside = (p >= b["lower"]) & ((p <= b["upper"]) if last else (p < b["upper"]))
        assert b["n"] == int(inside.sum()) > 0
        assert b["mean_probability"] == pytest.approx(p[inside].mean())
        assert b["observed_frequency"] == pytest.approx(y[inside].mean())
    assert [b["lower"] for b in bins] == sorted(b["lower"] for b in bins)


def test_reliability_of_live_predictions(
    monitor: tuple[Api, Settings], token: str, filled: Settings
) -> None:
    status, body = _get(monitor, "/monitor/reliability?kind=live", token)
    assert status == 200 and body["kind"] == "live"  # type: ignore[index]
    # Predictions from 03-04 .. 03-08 are for 03-05 .. 03-09; the store ends on 03-10.
    assert (body["start"], body["end"]) == ("2021-02-08", "2021-03-09")  # type: ignore[index]
    engine = store.connect(filled.raw_store_url)
    outcomes = score_step.observed_outcomes(store.read_observations(engine))
    joined = store.read_predictions(engine).merge(outcomes, on=["target_date", "Location"])
    assert body["n"] == len(joined) > 3 * len(STATIONS)  # type: ignore[index]
    assert np.isclose(sum(b["n"] for b in body["bins"]), body["n"])  # type: ignore[index]


def test_drift_of_every_cycle(monitor: tuple[Api, Settings], token: str, filled: Settings) -> None:
    status, body = _get(monitor, "/monitor/drift", token)
    assert status == 200
    rows = body["rows"]  # type: ignore[index]
    assert [(r["run_id"], r["drift_share"], r["drifted_columns"]) for r in rows] == [
        ("cycle:2021-03-10", 0.25, ["MinTemp", "Humidity3pm"]),
        ("manual__2021-03-10", 0.5, ["MaxTemp"]),
    ]
    assert rows[1]["dataset_drift"] is True and rows[0]["dataset_drift"] is False
    assert (rows[0]["n_drifted"], rows[0]["n_columns"], rows[0]["cycle_date"]) == (
        2,
        8,
        "2021-03-10",
    )
    assert rows[0]["computed_at"].endswith("+00:00")


def test_champion_timeline(monitor: tuple[Api, Settings], token: str, filled: Settings) -> None:
    status, body = _get(monitor, "/monitor/champions", token)
    assert status == 200 and body["current"] == "1"  # type: ignore[index]
    rows = body["rows"]  # type: ignore[index]
    assert [(r["decision"], r["champion_before"], r["candidate_version"]) for r in rows] == [
        ("promoted", None, "1"),
        ("rejected", "1", "2"),
    ]
    assert rows[0]["champion_f1"] is None and rows[1]["champion_f1"] == 0.6
    assert rows[0]["decided_at"] <= rows[1]["decided_at"]
    # /model's spans: version 1 champion since its promotion; the rejection changed nothing.
    status, model = _get(monitor, "/model", token)
    assert status == 200 and model["champion_history_error"] is None  # type: ignore[index]
    assert model["champion_history"] == [  # type: ignore[index]
        {
            "version": "1",
            "from": rows[0]["decided_at"],
            "to": None,
            "decided_by": "promote/promoted",
        }
    ]


def test_a_broken_store_is_503_not_a_traceback(
    monitor: tuple[Api, Settings], token: str, filled: Settings
) -> None:
    db = Path(filled.raw_store_url.removeprefix("sqlite:///"))
    for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        extra.unlink(missing_ok=True)
    saved = db.with_name("saved.db")
    shutil.move(db, saved)
    try:
        db.write_bytes(b"this is not a database" * 100)
        for path in PATHS:
            status, body = _get(monitor, path, token)
            assert status == 503, (path, body)
            assert body["detail"].startswith("the raw store is unreachable")  # type: ignore[index]
            assert "Traceback" not in str(body)
        status, body = _get(monitor, "/model", token)
        assert status == 200 and body["champion_history"] is None  # type: ignore[index]
        assert body["champion_history_error"].startswith("the raw store is unreachable")  # type: ignore[index]
    finally:
        shutil.move(saved, db)
