"""The retrain gate's rules: the champion's age and the live trigger (N of the champion's
last M scored windows below the live floor), pure and through `raincast retrain-due` on a
real store and registry."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from pydantic import ValidationError
from testbed.params_file import write_params
from typer.testing import CliRunner

from raincast.cli import app
from raincast.data import store
from raincast.models import tracking
from raincast.params import LiveFloor, RetrainParams, load_params
from raincast.settings import Settings
from raincast.steps.retrain_due import age_verdict, live_verdict
from raincast.steps.score import ScoreRow

#: 3 breaches of the last 5 7-day windows, floors F1 0.50 / ROC AUC 0.80.
RULE = RetrainParams(
    live_floor=LiveFloor(f1=0.5, roc_auc=0.8),
    live_window_days=7,
    breaches_needed=3,
    of_last=5,
)
#: F1 / ROC AUC of a healthy 7-day window on weatherAUS.
GOOD = (0.64, 0.91)
DAY0 = date(2017, 6, 1)


def window(
    i: int, f1: float | None, auc: float | None, version: str = "4", days: int = 7, **more: object
) -> ScoreRow:
    """The live-score row the score step writes for the window ending DAY0 + i."""
    end = DAY0 + timedelta(days=i)
    row = ScoreRow(
        as_of_date=end,
        window_days=days,
        model_name="rain-tomorrow",
        window_start=end - timedelta(days=days - 1),
        model_versions=version,
        n_scored=340,
        n_pending=49,
        f1=f1,
        precision=0.6,
        recall=0.7,
        roc_auc=auc,
        base_rate=0.22,
        predicted_positive_rate=0.25,
        mean_probability=0.23,
        scored_at=datetime(2017, 6, 30, tzinfo=UTC),
        run_id="test",
    )
    return replace(row, **more)  # type: ignore[arg-type]


def frame(rows: list[ScoreRow]) -> pd.DataFrame:
    """Rows as `store.read_live_scores` returns them (dates as ISO text)."""
    df = pd.DataFrame([asdict(r) for r in rows])
    for col in ("as_of_date", "window_start"):
        df[col] = df[col].map(date.isoformat)
    return df


def series(metrics: list[tuple[float | None, float | None]], **kw: object) -> list[ScoreRow]:
    return [window(i, f1, auc, **kw) for i, (f1, auc) in enumerate(metrics)]  # type: ignore[arg-type]


# --- the pure rules -------------------------------------------------------------------------


def test_n_of_the_last_m_windows_below_the_floor_is_due_and_names_them() -> None:
    scores = frame(
        series([(0.30, 0.70), (0.64, 0.91), (0.42, 0.90), (0.64, 0.91), (0.60, 0.78), (0.64, 0.91)])
    )
    # The oldest window (day 0) is outside the last 5: two breaches remain among them.
    v = live_verdict(scores, "4", RULE)
    assert not v.due
    assert "2 of the last 5 7-day windows of version 4" in v.reason
    assert "2017-06-03 F1 0.420" in v.reason and "2017-06-05 ROC AUC 0.780" in v.reason
    assert "2017-06-01" not in v.reason
    # One more bad window: 3 of the last 5.
    worse = frame([*series([(0.30, 0.70), (0.64, 0.91), (0.42, 0.90), (0.64, 0.91),
                            (0.60, 0.78), (0.64, 0.91)]), window(6, 0.45, 0.79)])  # fmt: skip
    v = live_verdict(worse, "4", RULE)
    assert v.due, v.reason
    assert "3 of the last 5" in v.reason and "3 needed" in v.reason
    assert "2017-06-07 F1 0.450 ROC AUC 0.790" in v.reason


def test_n_minus_one_breaches_is_not_due() -> None:
    scores = frame(series([(0.40, 0.91), (0.64, 0.91), (0.64, 0.75), (0.64, 0.91), (0.64, 0.91)]))
    v = live_verdict(scores, "4", RULE)
    assert not v.due
    assert v.reason.startswith("live trigger: 2 of the last 5")
    # At the floor is not below it.
    at_floor = frame(series([(0.50, 0.80)] * 5))
    assert not live_verdict(at_floor, "4", RULE).due


def test_windows_of_another_champion_version_do_not_count() -> None:
    old = series([(0.30, 0.70)] * 5, version="3")
    mixed = [window(5 + i, 0.35, 0.72, version="3,4") for i in range(3)]
    scores = frame([*old, *mixed, window(8, 0.64, 0.91), window(9, 0.45, 0.90)])
    v = live_verdict(scores, "4", RULE)
    assert not v.due
    assert "only 2 7-day windows of version 4 scored yet" in v.reason
    assert "1 of" in v.reason and "8 windows of other versions" in v.reason
    # The same rows decide for version 3, whose windows were bad.
    assert live_verdict(scores, "3", RULE).due


def test_other_window_lengths_do_not_count() -> None:
    scores = frame(series([(0.30, 0.70)] * 5, days=30))
    v = live_verdict(scores, "4", RULE)
    assert not v.due and "no 7-day windows of version 4 scored yet" in v.reason
    thirty = RULE.model_copy(update={"live_window_days": 30})
    assert live_verdict(scores, "4", thirty).due


def test_fewer_windows_than_m_still_need_n_breaches() -> None:
    two_bad = frame(series([(0.30, 0.70), (0.40, 0.75)]))
    v = live_verdict(two_bad, "4", RULE)
    assert not v.due
    assert "only 2 7-day windows of version 4 scored yet (of the last 5 counted)" in v.reason
    three_bad = frame(series([(0.30, 0.70), (0.40, 0.75), (0.45, 0.90)]))
    assert live_verdict(three_bad, "4", RULE).due


def test_a_window_with_one_class_is_skipped_not_a_breach() -> None:
    # A dry week: no rain observed, F1 0 and no ROC AUC (the score step stores None).
    dry = [window(i, 0.0, None, base_rate=0.0) for i in range(3)]
    scores = frame([*dry, window(3, 0.64, 0.91), window(4, 0.45, 0.90)])
    v = live_verdict(scores, "4", RULE)
    assert not v.due
    assert "1 of the last 5" in v.reason
    assert "skipped: 2017-06-01 (one class), 2017-06-02 (one class), 2017-06-03 (one class)" in (
        v.reason
    )


def test_a_missing_floored_metric_is_skipped_and_said() -> None:
    scores = frame([window(i, 0.45, float("nan")) for i in range(3)])
    v = live_verdict(scores, "4", RULE)
    assert not v.due and "2017-06-01 (ROC AUC n/a)" in v.reason
    f1_only = RULE.model_copy(update={"live_floor": RULE.live_floor.model_copy(
        update={"roc_auc": None})})  # fmt: skip
    v = live_verdict(scores, "4", f1_only)
    assert v.due and "(F1 0.50)" in v.reason


def test_no_scores_and_no_floor_are_not_due() -> None:
    empty = frame([window(0, 0.64, 0.91)]).iloc[0:0]
    v = live_verdict(empty, "4", RULE)
    assert not v.due and v.reason == "live trigger: no 7-day windows of version 4 scored yet"
    off = RULE.model_copy(update={"live_floor": RULE.live_floor.model_copy(
        update={"f1": None, "roc_auc": None})})  # fmt: skip
    v = live_verdict(frame(series([(0.1, 0.6)] * 5)), "4", off)
    assert not v.due and "live trigger off" in v.reason


def test_the_age_rule() -> None:
    assert age_verdict("4", 30, RULE).due
    v = age_verdict("4", 29, RULE)
    assert not v.due and v.reason == "champion version 4 is 29 days old (< 30)"


# --- params ---------------------------------------------------------------------------------


def test_more_breaches_needed_than_windows_counted_is_refused(tmp_path: Path) -> None:
    path = write_params(tmp_path, {"retrain": {"breaches_needed": 6, "of_last": 5}})
    with pytest.raises(ValidationError, match=r"retrain\.breaches_needed \(6\) must be at most "
                       r"retrain\.of_last \(5\)"):  # fmt: skip
        load_params(path)
    for bad in ({"breaches_needed": 0}, {"of_last": 0}, {"live_window_days": 0},
                {"live_floor": {"f1": 1.5}}):  # fmt: skip
        with pytest.raises(ValidationError):
            load_params(write_params(tmp_path, {"retrain": bad}))
    ok = load_params(write_params(tmp_path, {"retrain": {"breaches_needed": 5, "of_last": 5}}))
    assert ok.retrain.breaches_needed == ok.retrain.of_last == 5


# --- `raincast retrain-due` on a real store and registry ----------------------------------


@pytest.fixture
def project(tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    """A project folder with the committed params, a SQLite store and an embedded registry
    whose champion (version 1, registered now) has no live scores yet."""
    settings = Settings(
        project_dir=tmp_path, home=tmp_path / "var", store_url=f"sqlite:///{tmp_path}/s.db"
    )
    write_params(tmp_path)
    client: MlflowClient = tracking.configure(settings)
    client.create_registered_model(settings.model_name)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    mv = client.create_model_version(settings.model_name, model_dir.as_uri())
    client.set_registered_model_alias(settings.model_name, "champion", mv.version)
    env = {
        "RAINCAST_PROJECT_DIR": str(tmp_path),
        "RAINCAST_HOME": str(settings.home),
        "RAINCAST_STORE_URL": settings.raw_store_url,
        "RAINCAST_MLFLOW_TRACKING_URI": settings.tracking_uri,
        "RAINCAST_RUN_ID": "",
    }
    return settings, env


def _gate(env: dict[str, str], run_type: str = "scheduled") -> tuple[int, str]:
    res = CliRunner().invoke(app, ["retrain-due", "--run-type", run_type], env=env)
    return res.exit_code, res.output


def _store_scores(settings: Settings, rows: list[ScoreRow]) -> None:
    rows = [replace(r, model_name=settings.model_name) for r in rows]
    store.upsert_live_scores(store.connect(settings.raw_store_url), [asdict(r) for r in rows])


def test_retrain_due_fires_when_the_champion_breaches_its_floor(
    project: tuple[Settings, dict[str, str]],
) -> None:
    settings, env = project
    committed = load_params(Path(env["RAINCAST_PROJECT_DIR"]) / "params.yaml").retrain
    assert committed.breaches_needed == 3 and committed.of_last == 5
    # A fresh champion with healthy windows, and bad ones of the previous champion.
    _store_scores(settings, [*series([(0.30, 0.70)] * 5, version="0"),
                             *[window(5 + i, *GOOD, version="1") for i in range(5)]])  # fmt: skip
    code, out = _gate(env)
    assert code == 99, out
    assert out.startswith("not due: champion version 1 is 0 days old (< 30); live trigger: 0 of")
    # Three of its last five windows fall below the committed floor.
    _store_scores(settings, [window(10 + i, 0.30, 0.70, version="1") for i in range(3)])
    code, out = _gate(env)
    assert code == 0, out
    assert "retrain due: live trigger: 3 of the last 5 7-day windows of version 1" in out
    assert "2017-06-11 F1 0.300 ROC AUC 0.700" in out
    # Asset-triggered and manual runs go on as before, whatever the scores.
    assert _gate(env, "asset_triggered") == (0, "retrain due: asset_triggered run\n")
    assert _gate(env, "manual") == (0, "retrain due: manual run\n")


def test_retrain_due_skips_a_fresh_champion_with_no_scores_yet(
    project: tuple[Settings, dict[str, str]],
) -> None:
    _, env = project
    code, out = _gate(env)
    assert code == 99, out
    assert "live trigger: no 7-day windows of version 1 scored yet; skipping" in out
