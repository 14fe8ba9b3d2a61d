"""Batch prediction with the champion and live scoring against observed outcomes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from raincast import schema
from raincast.cli import app
from raincast.data import store
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource
from raincast.steps import predict as predict_step
from raincast.steps import score as score_step
from tests.helpers import train_small_model

STATIONS = ("Darwin", "Perth", "Sydney", "Hobart")
DAY = date(2021, 3, 3)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A temp project whose embedded MLflow registry holds a small champion model."""
    root = tmp_path_factory.mktemp("batch")
    settings = Settings(project_dir=root, home=root / "var")
    version = train_small_model(settings, STATIONS, seed=3, n_estimators=20)
    return root, version


@pytest.fixture
def settings(project: tuple[Path, str], tmp_path: Path) -> Settings:
    """Shared registry, private raw store."""
    root, _ = project
    return Settings(project_dir=root, home=root / "var", store_url=f"sqlite:///{tmp_path}/s.db")


def _env(s: Settings, **extra: str) -> dict[str, str]:
    return {
        "RAINCAST_PROJECT_DIR": str(s.project_dir),
        "RAINCAST_HOME": str(s.state_dir),
        "RAINCAST_STORE_URL": s.raw_store_url,
        "RAINCAST_DATE": "",
        "RAINCAST_RUN_ID": "",
        **extra,
    }


def _cli(s: Settings, *args: str, **env: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args), env=_env(s, **env))
    return res.exit_code, res.output


def _load(s: Settings, start: date, end: date, stations: tuple[str, ...] = STATIONS) -> None:
    rows = SyntheticSource(seed=11, stations=stations).fetch(start, end)
    store.upsert_observations(store.connect(s.raw_store_url), rows, "synthetic", "load")


# --- predict -------------------------------------------------------------------------------


def test_predict_writes_one_row_per_station_on_the_day(
    settings: Settings, project: tuple[Path, str]
) -> None:
    _, version = project
    _load(settings, DAY - timedelta(days=2), DAY - timedelta(days=1))
    _load(settings, DAY, DAY, stations=STATIONS[:3])  # Hobart has not reported on DAY

    rep = predict_step.run(settings, DAY, run_id="run-1")

    assert (rep.rows, rep.inserted, rep.model_version) == (3, 3, version)
    assert rep.missing_stations == ("Hobart",)
    preds = store.read_predictions(store.connect(settings.raw_store_url))
    assert sorted(preds[schema.LOCATION]) == sorted(STATIONS[:3])
    assert set(preds["target_date"]) == {(DAY + timedelta(days=1)).isoformat()}
    assert set(preds["observation_date"]) == {DAY.isoformat()}
    assert set(preds["model_version"]) == {version}
    assert set(preds["run_id"]) == {"run-1"}
    assert preds["probability"].between(0, 1).all()
    assert ((preds["probability"] >= preds["threshold"]) == (preds["label"] == "Yes")).all()
    assert rep.mean_probability == pytest.approx(preds["probability"].mean())


def test_predicting_the_same_day_again_writes_nothing(settings: Settings) -> None:
    _load(settings, DAY, DAY)
    engine = store.connect(settings.raw_store_url)
    predict_step.run(settings, DAY, run_id="run-1")
    before = store.read_predictions(engine)

    again = predict_step.run(settings, DAY, run_id="run-2")

    assert (again.inserted, again.updated, again.unchanged) == (0, 0, len(STATIONS))
    pd.testing.assert_frame_equal(store.read_predictions(engine), before)  # run_id untouched


def test_predict_cli_defaults_to_the_newest_day_and_reads_the_run_id(settings: Settings) -> None:
    _load(settings, DAY - timedelta(days=1), DAY)
    code, out = _cli(settings, "predict", RAINCAST_RUN_ID="dag-run-7")
    assert code == 0, out
    assert f"predicted {DAY + timedelta(days=1)}" in out
    assert f"{len(STATIONS)} rows written" in out and "0 stations missing" in out
    preds = store.read_predictions(store.connect(settings.raw_store_url))
    assert set(preds["run_id"]) == {"dag-run-7"}


def test_predict_without_a_champion_is_skipped_with_a_message(settings: Settings) -> None:
    """A fresh deployment: batch predict runs on the same Asset event as the first retrain,
    before any champion exists. Exit 99 makes Airflow mark the task skipped, not failed."""
    _load(settings, DAY, DAY)
    code, out = _cli(settings, "predict", RAINCAST_MODEL_NAME="never-registered")
    assert code == 99
    assert "skipped: no champion: run `raincast run` or promote a model first" in out
    assert store.count_rows(store.connect(settings.raw_store_url), store.predictions) == 0


def test_predict_a_day_without_observations_fails(settings: Settings) -> None:
    _load(settings, DAY, DAY)
    with pytest.raises(predict_step.NoObservationsError, match="no observations on 2021-03-04"):
        predict_step.run(settings, DAY + timedelta(days=1))
    code, out = _cli(settings, "predict", "--date", "2021-03-04")
    assert code == 1 and "no observations on 2021-03-04" in out


def test_predict_on_an_empty_store_fails(settings: Settings) -> None:
    code, out = _cli(settings, "predict")
    assert code == 1 and "raw store is empty" in out


def test_a_changed_prediction_updates_its_row_in_place(settings: Settings) -> None:
    engine = store.connect(settings.raw_store_url)
    first = {**_pred(D2, "Sydney", 0.9, "Yes"), "run_id": "a"}
    assert store.upsert_predictions(engine, [first]).inserted == 1
    moved = {**first, "probability": 0.3, "label": "No", "run_id": "b"}
    res = store.upsert_predictions(engine, [moved, _pred(D2, "Sydney", 0.3, "No", version="2")])
    assert (res.inserted, res.updated, res.unchanged) == (1, 1, 0)
    rows = store.read_predictions(engine).set_index("model_version")
    assert rows.loc["1", ["probability", "label", "run_id"]].tolist() == [0.3, "No", "b"]


# --- score ---------------------------------------------------------------------------------

D2, D3, D4 = date(2020, 1, 2), date(2020, 1, 3), date(2020, 1, 4)


def _obs(day: date, location: str, rainfall: float) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(schema.COLUMNS)
    row.update({schema.DATE: day.isoformat(), schema.LOCATION: location, schema.RAINFALL: rainfall})
    return row


def _pred(
    target: date, location: str, p: float, label: str, version: str = "1", minute: int = 0
) -> dict[str, object]:
    return {
        "target_date": target,
        schema.LOCATION: location,
        "model_name": "rain-tomorrow",
        "model_version": version,
        "observation_date": target - timedelta(days=1),
        "probability": p,
        "label": label,
        "threshold": 0.5,
        "predicted_at": datetime(2020, 1, 1, 6, minute, tzinfo=UTC),
        "run_id": "test",
    }


@pytest.fixture
def scored_store(settings: Settings) -> sa.Engine:
    """Outcomes: Sydney rains on D2 and D3, Perth on neither; Hobart has not reported.

    Live predictions: D2 Sydney Yes .9 (TP), D2 Perth Yes .6 (FP), D3 Sydney No .4 (FN),
    D3 Perth No .1 (TN, by version 2). Plus a later version-2 re-prediction of D2 Sydney
    (not live), Hobart D3 (no outcome yet) and Sydney D4 (after the as-of date).
    """
    engine = store.connect(settings.raw_store_url)
    obs = [_obs(D2, "Sydney", 5.0), _obs(D2, "Perth", 0.0)]
    obs += [_obs(D3, "Sydney", 2.0), _obs(D3, "Perth", 0.5)]
    store.upsert_observations(engine, schema.conform(pd.DataFrame(obs)), "test", "t")
    store.upsert_predictions(
        engine,
        [
            _pred(D2, "Sydney", 0.9, "Yes"),
            _pred(D2, "Sydney", 0.2, "No", version="2", minute=30),
            _pred(D2, "Perth", 0.6, "Yes"),
            _pred(D3, "Sydney", 0.4, "No"),
            _pred(D3, "Perth", 0.1, "No", version="2"),
            _pred(D3, "Hobart", 0.7, "Yes"),
            _pred(D4, "Sydney", 0.8, "Yes"),
        ],
    )
    return engine


def test_score_computes_live_metrics_from_the_first_prediction(
    settings: Settings, scored_store: sa.Engine
) -> None:
    rows = score_step.run(settings, D3, (7,))
    assert len(rows) == 1
    r = rows[0]
    assert (r.n_scored, r.n_pending, r.model_versions, r.window_start) == (
        4,
        1,
        "1,2",
        D3 - timedelta(days=6),
    )
    assert (r.f1, r.precision, r.recall) == (0.5, 0.5, 0.5)
    assert r.roc_auc == pytest.approx(0.75)  # (.9>.6, .9>.1, .4>.1) of 4 pairs
    assert (r.base_rate, r.predicted_positive_rate) == (0.5, 0.5)
    assert r.mean_probability == pytest.approx(0.5)
    assert score_step.count_pending(settings, D3, 7) == 2  # Hobart D3 and Sydney D4
    stored = store.read_live_scores(scored_store)
    assert stored[["as_of_date", "window_days", "n_scored"]].values.tolist() == [
        [D3.isoformat(), 7, 4]
    ]


def test_a_single_class_window_has_no_auc(settings: Settings, scored_store: sa.Engine) -> None:
    store.upsert_observations(
        scored_store, schema.conform(pd.DataFrame([_obs(D3, "Sydney", 0.0)])), "test", "t"
    )
    one_day, week = score_step.run(settings, D3, (1, 7))
    assert (one_day.window_days, one_day.n_scored, one_day.base_rate) == (1, 2, 0.0)
    assert one_day.roc_auc is None
    assert week.roc_auc is not None
    stored = store.read_live_scores(scored_store).set_index("window_days")
    assert pd.isna(stored.loc[1, "roc_auc"]) and stored.loc[7, "roc_auc"] == week.roc_auc


def test_rescoring_the_same_date_replaces_its_rows(
    settings: Settings, scored_store: sa.Engine
) -> None:
    score_step.run(settings, D3, (1, 7), run_id="first")
    store.upsert_observations(
        scored_store, schema.conform(pd.DataFrame([_obs(D3, "Hobart", 9.0)])), "test", "t"
    )
    score_step.run(settings, D3, (1, 7), run_id="second")
    stored = store.read_live_scores(scored_store)
    assert len(stored) == 2
    assert set(stored["run_id"]) == {"second"}
    assert stored.set_index("window_days").loc[7, "n_scored"] == 5  # Hobart's outcome arrived


def test_score_cli_prints_each_window(settings: Settings, scored_store: sa.Engine) -> None:
    code, out = _cli(settings, "score", "--date", D3.isoformat(), "--windows", "7,1")
    assert code == 0, out
    assert "live 1d" in out and "live 7d" in out and "n=4 F1 0.500" in out
    assert "2 predictions pending outcomes" in out


def test_first_day_has_nothing_to_score_then_the_outcome_arrives(settings: Settings) -> None:
    _load(settings, DAY, DAY)
    assert _cli(settings, "predict")[0] == 0
    code, out = _cli(settings, "score")
    assert code == 0, out
    assert f"nothing to score yet ({len(STATIONS)} predictions pending outcomes)" in out
    engine = store.connect(settings.raw_store_url)
    assert store.count_rows(engine, store.live_scores) == 0

    _load(settings, DAY + timedelta(days=1), DAY + timedelta(days=1))
    code, out = _cli(settings, "score", "--windows", "7")
    assert code == 0, out
    assert f"n={len(STATIONS)}" in out
    assert store.count_rows(engine, store.live_scores) == 1


@pytest.mark.parametrize("windows", ["7,x", "0", "-3", "", "7.5"])
def test_score_rejects_bad_windows(settings: Settings, windows: str) -> None:
    code, out = _cli(settings, "score", "--date", D3.isoformat(), f"--windows={windows}")
    assert code != 0
    assert "--windows" in out


def test_parse_windows_sorts_and_dedupes() -> None:
    assert score_step.parse_windows(" 30,7,7 ") == (7, 30)
    with pytest.raises(ValueError, match="not a positive"):
        score_step.parse_windows("7,-1")
