"""The replayed window: the champion re-predicts recent real history it did not train on,
scored against the labels that followed, in tables apart from the live ones."""

from __future__ import annotations

import gzip
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn import metrics as skm
from testbed.params_file import LIBRARY_DEFAULTS, write_params
from typer.testing import CliRunner

from raincast import catalog, schema
from raincast.cli import app
from raincast.data import store
from raincast.params import ReplayParams, ValidateParams
from raincast.pipeline import cycle
from raincast.pipeline.replay import choose_window, replay, trained_through
from raincast.settings import Settings
from raincast.steps import fetch as fetch_step
from raincast.steps import predict as predict_step
from raincast.steps import process
from raincast.steps import score as score_step
from raincast.steps import validate as validate_step
from tests.helpers import train_on_split

STATIONS = ("Sydney", "Perth", "Darwin", "Hobart")
FIRST, LAST = date(2015, 1, 1), date(2017, 6, 25)
TRAIN_END, VALIDATION_END = date(2015, 12, 31), date(2016, 6, 30)
CFG = ReplayParams(days=30, windows=(7, 30))


# --- choosing the window (pure) --------------------------------------------------------------


def test_window_is_the_newest_days_after_the_training_data() -> None:
    w = choose_window(date(2017, 6, 24), date(2016, 6, 30), 60)
    assert (w.first, w.last, w.days, w.overlaps_training) == (
        date(2017, 4, 26),
        date(2017, 6, 24),
        60,
        False,
    )
    assert "out-of-sample" in w.note


def test_window_starts_after_training_when_few_days_are_new() -> None:
    w = choose_window(date(2017, 6, 24), date(2017, 6, 14), 60)
    assert (w.first, w.days, w.overlaps_training) == (date(2017, 6, 15), 10, False)
    assert "only 10 labelled days" in w.note


def test_a_champion_trained_on_everything_is_said_so() -> None:
    w = choose_window(date(2017, 6, 24), date(2017, 6, 24), 60)
    assert w.overlaps_training and w.days == 60
    assert "NOT out-of-sample" in w.note
    unknown = choose_window(date(2017, 6, 24), None, 60)
    assert unknown.overlaps_training and "unknown" in unknown.note


def test_trained_through_reads_the_lineage_tags() -> None:
    tags = {"train_window": "2015-01-01..2015-12-31", "validation_window": "2016-01-01..2016-06-30"}
    assert trained_through(tags) == date(2016, 6, 30)
    assert trained_through({"train_window": "2015-01-01..2015-12-31"}) == date(2015, 12, 31)
    assert trained_through({}) is None


def test_replay_params_refuse_bad_windows() -> None:
    with pytest.raises(ValueError, match="positive"):
        ReplayParams(windows=(7, 0))
    assert ReplayParams(windows=(30, 7, 7)).windows == (7, 30)


# --- a real store of real weatherAUS rows, and a small champion trained on its past ----------


def _real_csv(shared_data: Path, out: Path) -> Path:
    with gzip.open(shared_data / "weatherAUS.csv.gz", "rt") as fh:
        lines = fh.read().splitlines()
    keep = [lines[0]]
    for line in lines[1:]:
        day, loc = line.split(",", 2)[:2]
        if loc in STATIONS and FIRST.isoformat() <= day <= LAST.isoformat():
            keep.append(line)
    out.write_text("\n".join(keep) + "\n")
    return out


def _train(settings: Settings, seed: int, n_estimators: int) -> str:
    """A small model through the train step, trained on the store's rows up to
    VALIDATION_END (train < 2016, validation 2016-H1), made champion."""
    process.run(settings)
    rows = catalog.load_frame(settings.project_dir, catalog.PROCESSED)
    train = rows[rows[schema.DATE] <= TRAIN_END.isoformat()]
    val = rows[(rows[schema.DATE] > TRAIN_END.isoformat())]
    val = val[val[schema.DATE] <= VALIDATION_END.isoformat()]
    windows = {
        "train": [FIRST.isoformat(), TRAIN_END.isoformat()],
        "validation": ["2016-01-01", VALIDATION_END.isoformat()],
        "test": ["2016-07-01", LAST.isoformat()],
    }
    return train_on_split(settings, train, val, windows, seed, n_estimators)


def _client(settings: Settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str]:
    """A store of real weatherAUS rows (4 stations, 2015-01 to 2017-06) loaded through
    fetch + validate, and a small champion trained on its rows up to 2016-06."""
    if not (SHARED / "weatherAUS.csv.gz").is_file():
        pytest.skip("../shared/data not present: real-data tests need the weatherAUS files")
    shared_data = SHARED
    root = tmp_path_factory.mktemp("replay")
    write_params(root, LIBRARY_DEFAULTS)
    settings = Settings(project_dir=root, home=root / "var")
    source = fetch_step.make_source(f"csv:{_real_csv(shared_data, root / 'real.csv')}", settings)
    fetch_step.run(settings, source, LAST, FIRST)
    validate_step.run(settings, ValidateParams(max_invalid_share=0.5), LAST)
    return settings, _train(settings, seed=3, n_estimators=30)


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    return store.connect(settings.raw_store_url)


def test_replay_predicts_the_newest_untrained_days_and_scores_them(
    real: tuple[Settings, str],
) -> None:
    settings, version = real
    rep = replay(settings, CFG, run_id="replay-1")

    assert rep.written and rep.model_version == version
    # RainTomorrow(2017-06-25) is unknown until 06-26 arrives: the newest labelled day is 24.
    assert (rep.window.first, rep.window.last) == (date(2017, 5, 26), date(2017, 6, 24))
    assert not rep.window.overlaps_training and rep.window.trained_through == VALIDATION_END
    engine = _engine(settings)
    preds = store.read_replayed_predictions(engine, settings.model_name)
    assert set(preds["model_version"]) == {version}
    assert preds["observation_date"].min() == "2017-05-26"
    assert preds["observation_date"].max() == "2017-06-24"
    assert set(preds[schema.LOCATION]) == set(STATIONS)
    assert len(preds) == rep.n_predictions > 100

    # Outcomes come from the file itself: RainToday of the next day of the same station.
    raw = pd.read_csv(settings.project_dir / "real.csv", na_values="NA", keep_default_na=False)
    truth = raw.set_index([schema.DATE, schema.LOCATION])[schema.RAIN_TODAY]
    keys = zip(preds["target_date"], preds[schema.LOCATION], strict=True)
    expected = [truth.get(key) for key in keys]
    expected = [None if pd.isna(v) else v for v in expected]
    assert list(preds["outcome"].where(preds["outcome"].notna(), None)) == expected

    # The probability is the champion's own answer for the raw row of the observation day.
    import mlflow.pyfunc

    day = raw[raw[schema.DATE] == "2017-06-10"].sort_values(schema.LOCATION)
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/{version}")
    out = model.predict(day[list(schema.INPUT_COLUMNS)].reset_index(drop=True))
    stored = preds[preds["observation_date"] == "2017-06-10"].sort_values(schema.LOCATION)
    np.testing.assert_allclose(stored["probability"].to_numpy(), out["probability"], rtol=1e-6)

    # Scores recomputed independently from the stored rows.
    scores = store.read_replayed_scores(engine, settings.model_name)
    assert set(scores["window_days"]) == {7, 30}
    assert scores["as_of_date"].min() == "2017-05-27" and scores["as_of_date"].max() == "2017-06-25"
    for w in (7, 30):
        row = scores[(scores["as_of_date"] == "2017-06-25") & (scores["window_days"] == w)].iloc[0]
        start = (date(2017, 6, 25) - timedelta(days=w - 1)).isoformat()
        done = preds[(preds["target_date"] >= start) & preds["outcome"].notna()]
        y = (done["outcome"] == "Yes").to_numpy(int)
        p = done["probability"].to_numpy(float)
        assert row["n_scored"] == len(done)
        assert row["f1"] == pytest.approx(skm.f1_score(y, (done["label"] == "Yes").to_numpy(int)))
        assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
        assert row["base_rate"] == pytest.approx(y.mean())
        assert row["mean_probability"] == pytest.approx(p.mean())
        assert row["calibration_error"] == pytest.approx(
            score_step.expected_calibration_error(y, p)
        )
        assert rep.latest[w]["n_scored"] == len(done)
    # The first 30-day window holds one replayed day, and says where it starts.
    first = scores[(scores["as_of_date"] == "2017-05-27") & (scores["window_days"] == 30)].iloc[0]
    assert first["window_start"] == "2017-05-27"
    assert first["n_scored"] == len(preds[preds["target_date"] == "2017-05-27"].dropna())


def test_replayed_rows_never_enter_the_live_tables(real: tuple[Settings, str]) -> None:
    settings, _ = real
    replay(settings, CFG)
    engine = _engine(settings)
    assert store.count_rows(engine, store.predictions) == 0
    assert store.count_rows(engine, store.live_scores) == 0
    before = store.read_replayed_predictions(engine)
    # A live prediction and its scoring leave the replayed window as it was.
    predict_step.run(settings, date(2017, 6, 23), run_id="live")
    score_step.run(settings, date(2017, 6, 25))
    assert store.count_rows(engine, store.predictions) == len(STATIONS)
    assert set(store.read_live_scores(engine)["n_scored"]) == {len(STATIONS)}
    pd.testing.assert_frame_equal(store.read_replayed_predictions(engine), before)


def test_rerun_with_the_same_champion_writes_nothing(real: tuple[Settings, str]) -> None:
    settings, _ = real
    replay(settings, CFG)
    engine = _engine(settings)
    runs, scores = store.count_rows(engine, store.replay_runs), store.read_replayed_scores(engine)
    again = replay(settings, CFG)
    assert not again.written and again.reason.startswith("unchanged")
    assert store.count_rows(engine, store.replay_runs) == runs
    pd.testing.assert_frame_equal(store.read_replayed_scores(engine), scores)
    # Other windows are another replay: the stored one is replaced, not added to.
    wider = replay(settings, ReplayParams(days=10, windows=(7,)))
    assert wider.written
    assert set(store.read_replayed_scores(engine)["window_days"]) == {7}
    assert store.read_replayed_predictions(engine)["observation_date"].min() == "2017-06-15"


def test_a_new_champion_replaces_the_replayed_window(real: tuple[Settings, str]) -> None:
    settings, old = real
    replay(settings, CFG)
    new = _train(settings, seed=5, n_estimators=40)
    assert new != old
    rep = replay(settings, CFG)
    assert rep.written and rep.model_version == new
    engine = _engine(settings)
    assert set(store.read_replayed_predictions(engine)["model_version"]) == {new}
    assert set(store.read_replayed_scores(engine)["model_version"]) == {new}
    assert store.latest_replay_run(engine, settings.model_name)["model_version"] == new  # type: ignore[index]
    # Back to the old champion (a rollback): its window comes back, the new one goes.
    _client(settings).set_registered_model_alias(settings.model_name, "champion", old)
    assert replay(settings, CFG).written
    assert set(store.read_replayed_predictions(engine)["model_version"]) == {old}


def test_one_run_id_given_twice_records_its_latest_window(real: tuple[Settings, str]) -> None:
    settings, _ = real
    engine = _engine(settings)
    runs = store.count_rows(engine, store.replay_runs)  # the module's store is shared
    assert replay(settings, ReplayParams(days=20, windows=(7,)), run_id="ops:replay").written
    # Same id, other windows: the stored window and its run record are replaced, no
    # IntegrityError on the run table's key.
    rep = replay(settings, ReplayParams(days=10, windows=(7,)), run_id="ops:replay")
    assert rep.written
    run = store.latest_replay_run(engine, settings.model_name)
    assert run is not None and run["run_id"] == "ops:replay" and run["days"] == 10
    assert store.count_rows(engine, store.replay_runs) == runs + 1


def test_no_champion_is_a_clear_skip_not_a_crash(
    tmp_path: Path, real: tuple[Settings, str]
) -> None:
    settings, _ = real
    # Same store, a registry without a champion.
    bare = Settings(project_dir=tmp_path, home=tmp_path / "var", store_url=settings.raw_store_url)
    write_params(tmp_path, LIBRARY_DEFAULTS)
    with pytest.raises(predict_step.NoChampionError):
        replay(bare, CFG)
    report, reason = cycle.replay(bare, CFG)
    assert report is None and reason.startswith("no champion")
    res = CliRunner().invoke(
        app,
        ["replay"],
        env={
            "RAINCAST_PROJECT_DIR": str(tmp_path),
            "RAINCAST_HOME": str(tmp_path / "var"),
            "RAINCAST_STORE_URL": settings.raw_store_url,
            "RAINCAST_RUN_ID": "",
        },
    )
    assert res.exit_code == 99 and "skipped: no champion" in res.output


def test_an_empty_store_is_a_skip_too(tmp_path: Path, real: tuple[Settings, str]) -> None:
    settings, _ = real
    empty = settings.model_copy(update={"store_url": f"sqlite:///{tmp_path}/empty.db"})
    report, reason = cycle.replay(empty, CFG)
    assert report is None and "no labelled day" in reason
    assert store.count_rows(store.connect(empty.raw_store_url), store.replay_runs) == 0
