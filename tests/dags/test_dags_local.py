"""`airflow dags test` in local mode on replay data: data update -> Asset event -> retrain
-> champion; the same logical date again changes nothing; a failed validation emits nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from raincast.data import store
from raincast.settings import Settings

from .conftest import BIN, LAST, run

pytestmark = pytest.mark.slow


def _asset_events(env: dict[str, str]) -> int:
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        return int(db.execute("SELECT count(*) FROM asset_event").fetchone()[0])


def _dags_test(work: Path, env: dict[str, str], dag_id: str, *date: str):  # type: ignore[no-untyped-def]
    return run([str(BIN / "airflow"), "dags", "test", dag_id, *date], work, env, timeout=900)


def _client(work: Path) -> MlflowClient:
    s = Settings(project_dir=work)
    return MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)


def _rows(work: Path) -> int:
    return store.count_rows(store.connect(Settings(project_dir=work).raw_store_url))


@pytest.fixture(scope="module")
def updated(af_project):  # type: ignore[no-untyped-def]
    """One data-update run for LAST - 1 day, then one retrain run."""
    work, env = af_project()
    before = _rows(work)
    day = date_before_last_iso()
    out = _dags_test(work, env, "weather_data_update", day)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    out = _dags_test(work, env, "weather_retrain")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return work, env, before


def date_before_last_iso() -> str:
    return LAST.replace(day=LAST.day - 1).isoformat()


def test_update_loads_the_day_and_records_one_asset_event(updated) -> None:  # type: ignore[no-untyped-def]
    work, env, before = updated
    assert _rows(work) == before + 6  # six stations, one new day
    assert _asset_events(env) == 1


def test_retrain_leaves_a_champion_tagged_with_the_airflow_run(updated) -> None:  # type: ignore[no-untyped-def]
    work, _, _ = updated
    champ = _client(work).get_model_version_by_alias("rain-tomorrow", "champion")
    assert str(champ.version) == "1"
    run = _client(work).get_run(champ.run_id)
    assert run.data.tags["orchestrator_run_id"].startswith("manual__")


def test_same_logical_date_again_adds_no_rows_and_no_model_version(updated) -> None:  # type: ignore[no-untyped-def]
    work, env, _ = updated
    rows = _rows(work)
    for dag_id, date in (
        ("weather_data_update", [date_before_last_iso()]),
        ("weather_retrain", []),
    ):
        out = _dags_test(work, env, dag_id, *date)
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert _rows(work) == rows
    versions = _client(work).search_model_versions("name='rain-tomorrow'")
    assert [str(v.version) for v in versions] == ["1"]


def test_failed_validation_exits_1_and_emits_no_asset_event(updated) -> None:  # type: ignore[no-untyped-def]
    work, env, _ = updated
    bad = work / "bad.csv"
    lines = (work / "replay.csv").read_text().splitlines()
    header, last_day = lines[0], [ln for ln in lines if ln.startswith(LAST.isoformat())]
    # Every row of the last day claims 999 mm of rain: all fail the physical-range check.
    col = header.split(",").index("Rainfall")
    broken = []
    for ln in last_day:
        cells = ln.split(",")
        cells[col] = "999"
        broken.append(",".join(cells))
    bad.write_text("\n".join([header, *broken]) + "\n")
    events = _asset_events(env)
    rows = _rows(work)
    out = _dags_test(
        work, {**env, "RAINCAST_SOURCE": "csv:bad.csv"}, "weather_data_update", LAST.isoformat()
    )
    assert out.returncode == 1
    assert _asset_events(env) == events
    assert _rows(work) == rows
    with store.connect(Settings(project_dir=work).raw_store_url).connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(store.quarantine)).scalar_one()
    assert n >= len(broken)


def test_batch_predict_dag_writes_tomorrows_predictions(updated) -> None:  # type: ignore[no-untyped-def]
    work, env, _ = updated
    out = _dags_test(work, env, "weather_batch_predict")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    engine = store.connect(Settings(project_dir=work).raw_store_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(store.predictions.c.target_date, store.predictions.c.model_version)
        ).all()
    assert len(rows) == 6  # one per station, for the day after the newest observations
    assert {str(r.model_version) for r in rows} == {"1"}


def test_retrain_gate_skips_a_time_triggered_run_while_the_champion_is_fresh(updated) -> None:  # type: ignore[no-untyped-def]
    work, env, _ = updated
    gate = [str(BIN / "raincast"), "retrain-due", "--run-type"]
    out = run([*gate, "scheduled"], work, env)
    assert out.returncode == 99, out.stdout + out.stderr
    assert "not due" in out.stdout
    assert run([*gate, "asset_triggered"], work, env).returncode == 0
    stale = run([*gate, "scheduled"], work, {**env, "RAINCAST_MODEL_NAME": "never-trained"})
    assert stale.returncode == 0 and "no champion" in stale.stdout


def test_live_scoring_on_replay_matches_a_hand_computed_f1(updated) -> None:  # type: ignore[no-untyped-def]
    """Predictions made for LAST from LAST-1's rows, then LAST arrives: `raincast score`
    must report the F1 one computes by hand from the two tables."""
    from sklearn.metrics import f1_score

    work, env, _ = updated
    out = _dags_test(work, env, "weather_batch_predict")  # idempotent: predictions for LAST
    assert out.returncode == 0, out.stdout[-3000:]
    out = _dags_test(work, env, "weather_data_update", LAST.isoformat())  # outcomes arrive
    assert out.returncode == 0, out.stdout[-3000:]
    scored = run([str(BIN / "raincast"), "score", "--date", LAST.isoformat()], work, env)
    assert scored.returncode == 0, scored.stdout + scored.stderr
    engine = store.connect(Settings(project_dir=work).raw_store_url)
    preds = store.read_predictions(engine)
    obs = store.read_observations(engine, LAST, LAST)
    joined = preds[preds["target_date"].astype(str) == LAST.isoformat()].merge(
        obs[["Location", "RainToday"]], on="Location"
    )
    assert len(joined) == 6
    expected = f1_score(joined["RainToday"] == "Yes", joined["label"] == "Yes", zero_division=0)
    live = store.read_live_scores(engine)
    row = live[(live["window_days"] == 7) & (live["as_of_date"].astype(str) == LAST.isoformat())]
    assert len(row) == 1 and int(row["n_scored"].iloc[0]) == 6
    assert abs(float(row["f1"].iloc[0]) - expected) < 1e-12
    assert 0.0 <= float(row["calibration_error"].iloc[0]) <= 1.0
