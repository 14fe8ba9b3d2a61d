"""The backtest replays days through the pipeline's own split, fit, promotion, drift and
scoring code: point-in-time correct, on each policy's schedule, with its outputs written,
and refusing bad requests in one line. Small synthetic data and tiny models (seconds)."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from testbed.params_file import small_model_params, write_params
from typer.testing import CliRunner

from raincast import schema
from raincast.catalog import BACKTEST_PLOTS, BACKTEST_RESULT
from raincast.cli import app
from raincast.params import Params
from raincast.pipeline import backtest as bt
from raincast.serving.backtest import BacktestResults
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource

pytestmark = pytest.mark.slow
runner = CliRunner()

STATIONS = ("Sydney", "Perth", "Darwin")
FIRST, LAST = date(2019, 1, 1), date(2020, 3, 31)
#: Ten days to replay, 2020-03-01 among them (the monthly retrain).
START, END = date(2020, 2, 25), date(2020, 3, 5)
N_DAYS = (END - START).days + 1
#: Tiny and quick: 20 rounds at most, 30-day validation and test slices.
OVERRIDES: dict[str, Any] = {
    "train": {
        "early_stopping_rounds": 5,
        "xgb": {"n_estimators": 20, "max_depth": 3, "n_jobs": 1},
    },
    "split": {"test_days": 30, "validation_days": 30, "min_train_rows": 100},
}


def _params(overrides: dict[str, Any] | None = None) -> Params:
    return small_model_params({**OVERRIDES, **(overrides or {})})


@pytest.fixture(scope="module")
def observations() -> pd.DataFrame:
    rows = SyntheticSource(seed=1, stations=list(STATIONS)).fetch(FIRST, LAST)
    return rows.assign(source="synthetic")


#: The whole gate: significance is off in the committed params.yaml, on here; the 30-day
#: test slices have 30 rows a station, so the station guard counts stations from 20.
WHOLE_GATE: dict[str, Any] = {"promote": {"significance": "bootstrap", "station_min_rows": 20}}


@dataclass
class Seen:
    """What the spied split and fit were given, call by call."""

    labelled_through: list[date] = field(default_factory=list)
    fitted_through: list[date] = field(default_factory=list)
    newest_labels_ok: list[bool] = field(default_factory=list)


@pytest.fixture(scope="module")
def replayed(observations: pd.DataFrame) -> tuple[bt.BacktestResult, Seen]:
    """daily, weekly, monthly and never over ten days under the whole gate, with split and
    fit spied on."""
    seen = Seen()
    real_split, real_fit = bt.split_by_time, bt.fit
    rain = observations.set_index([schema.DATE, schema.LOCATION])[schema.RAINFALL]

    def split_spy(labelled: pd.DataFrame, params: Any) -> Any:
        newest = str(labelled[schema.DATE].max())
        seen.labelled_through.append(date.fromisoformat(newest))
        # The newest label is the next day's rain (> 1 mm), known only once that day is seen.
        last = labelled[labelled[schema.DATE] == newest]
        next_day = (date.fromisoformat(newest) + timedelta(days=1)).isoformat()
        expected = [
            "Yes" if rain[(next_day, loc)] > schema.RAIN_THRESHOLD_MM else "No"
            for loc in last[schema.LOCATION]
        ]
        seen.newest_labels_ok.append(list(last[schema.RAIN_TOMORROW]) == expected)
        return real_split(labelled, params)

    def fit_spy(train: pd.DataFrame, validation: pd.DataFrame, params: Any) -> Any:
        newest = max(train[schema.DATE].max(), validation[schema.DATE].max())
        seen.fitted_through.append(date.fromisoformat(str(newest)))
        return real_fit(train, validation, params)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bt, "split_by_time", split_spy)
        mp.setattr(bt, "fit", fit_spy)
        result = bt.run_backtest(
            observations, START, END, _params(WHOLE_GATE), ["daily", "weekly", "monthly", "never"]
        )
    return result, seen


def test_no_model_sees_a_day_at_or_after_one_it_predicts(
    replayed: tuple[bt.BacktestResult, Seen], observations: pd.DataFrame
) -> None:
    result, seen = replayed
    # One fit per day at most, shared by the policies: the first champion (end of the day
    # before START), then daily's ten (weekly and monthly retrain on days daily does).
    fit_days = [START - timedelta(days=1) + timedelta(days=i) for i in range(N_DAYS + 1)]
    assert result.distinct_fits == len(fit_days) == len(seen.fitted_through)
    # A model trained at the end of day D was given labelled rows up to D - 1 exactly: D's
    # label is D + 1's rain, unknown at the end of D.
    assert seen.labelled_through == [d - timedelta(days=1) for d in fit_days]
    assert all(seen.newest_labels_ok)
    assert all(f < d for f, d in zip(seen.fitted_through, fit_days, strict=True))
    for r in [result.initial, *result.retrains]:
        assert r.data_through is not None and r.trained_through is not None
        assert r.trained_through <= r.data_through < r.day
    # Every prediction of a day D comes from a model trained at the end of a day before D.
    preds = result.predictions
    assert len(preds) == len(result.policies) * N_DAYS * len(STATIONS)
    assert (preds["model_version"] < preds["observation_date"]).all()
    assert all(d.champion_data_through < d.date for d in result.days)
    # ... and is scored on the next day's rain (RainToday of the next day's row).
    next_day = pd.to_datetime(preds["observation_date"]) + pd.Timedelta(days=1)
    assert (preds["target_date"] == next_day.dt.strftime("%Y-%m-%d")).all()
    rain_today = observations.set_index([schema.DATE, schema.LOCATION])[schema.RAIN_TODAY]
    expected = [
        rain_today.get((t, loc))
        for t, loc in zip(preds["target_date"], preds[schema.LOCATION], strict=True)
    ]
    assert preds["outcome"].where(preds["outcome"].notna(), None).tolist() == expected
    assert preds["outcome"].notna().mean() > 0.9


def test_policies_retrain_on_their_schedule(replayed: tuple[bt.BacktestResult, Seen]) -> None:
    result, _ = replayed
    s = result.summaries
    assert s["daily"].retrains == N_DAYS
    assert s["weekly"].retrains == math.ceil(N_DAYS / 7)
    assert s["monthly"].retrains == 1
    assert s["never"].retrains == s["never"].promotions == 0
    assert [r.day for r in result.retrains if r.policy == "monthly"] == ["2020-03-01"]
    assert [r.day for r in result.retrains if r.policy == "weekly"] == ["2020-02-25", "2020-03-03"]
    # weekly and monthly retrain on days daily retrained first: the fit is shared.
    assert all(r.fit_shared for r in result.retrains if r.policy in ("weekly", "monthly"))
    assert not any(r.fit_shared for r in result.retrains if r.policy == "daily")
    # never keeps the first champion; the others switch only on a promotion.
    assert {d.champion_version for d in result.days if d.policy == "never"} == {
        result.initial.version
    }
    for policy in ("daily", "weekly", "monthly"):
        versions = {d.champion_version for d in result.days if d.policy == policy}
        assert len(versions) <= 1 + s[policy].promotions
    for summary in s.values():
        assert summary.days == N_DAYS and summary.n_predictions == N_DAYS * len(STATIONS)
        assert summary.n_scored == sum(
            d.n_scored for d in result.days if d.policy == summary.policy
        )
        assert summary.roc_auc is not None and 0.0 <= summary.roc_auc <= 1.0
        assert summary.mean_rolling_f1 is not None


def test_on_drift_retrains_when_drift_is_found_at_most_once_a_week(
    observations: pd.DataFrame,
) -> None:
    # Every column counts as drifted (p < 0.99), so each check finds drift: the first day
    # retrains, the next six do not even check, the eighth checks and retrains again.
    params = _params({"drift": {"num_threshold": 0.99, "share_threshold": 0.05}})
    last = START + timedelta(days=8)
    result = bt.run_backtest(observations, START, last, params, ["on-drift"])
    days = result.days
    assert [d.drift_checked for d in days] == [True, *[False] * 6, True, False]
    assert [d.retrained for d in days] == [d.drift_checked for d in days]
    assert all(d.drift_detected for d in days if d.drift_checked)
    assert result.summaries["on-drift"].drift_seconds > 0


#: What a failed check of the promotion rule says in its reason.
BLOCKING = (
    ": not enough",
    ": regression",
    ": not significant",
    ": significant loss",
    "station ROC AUC drops more than",
)


def test_retrains_go_through_the_whole_gate(replayed: tuple[bt.BacktestResult, Seen]) -> None:
    """The whole gate (enforce, bootstrap significance, station guard) with the paired
    per-row predictions of candidate and champion on the new test slice; each retrain
    names the checks that blocked it."""
    result, _ = replayed
    decided = [r for r in result.retrains if r.candidate is not None]
    assert decided
    for r in decided:
        assert any(x.startswith("F1 gain ") and "[95% CI " in x for x in r.reasons), r.reasons
        assert any(x.startswith("station ROC AUC: no drop") or "drops more than" in x
                   for x in r.reasons), r.reasons  # fmt: skip
        failed = [x for x in r.reasons if any(b in x for b in BLOCKING)]
        assert r.promoted == (not failed) == (not r.blocked_by), r.reasons
        assert len(r.blocked_by) == len(failed), (r.blocked_by, r.reasons)
    rejected = Counter(c for r in decided if not r.promoted for c in r.blocked_by)
    for policy, summary in result.summaries.items():
        mine = [r for r in decided if r.policy == policy]
        assert summary.rejections == sum(not r.promoted for r in mine)
        assert summary.promotions == sum(r.promoted for r in mine)
    assert sum(sum(s.blocked_by.values()) for s in result.summaries.values()) == sum(
        rejected.values()
    )


def test_a_dry_run_backtest_promotes_what_enforce_would_reject(
    observations: pd.DataFrame,
) -> None:
    params = _params({"promote": {"gate": "dry_run", "f1_margin": 0.9}})
    last = START + timedelta(days=2)
    result = bt.run_backtest(observations, START, last, params, ["daily"])
    assert len(result.retrains) == 3
    for r in result.retrains:
        assert r.promoted
        assert r.reasons[0].startswith("dry run: would have rejected"), r.reasons
        assert any(x.endswith("needs >= 0.9): not enough") for x in r.reasons)
    versions = [d.champion_version for d in result.days]
    assert versions == [
        result.initial.version,
        START.isoformat(),
        (START + timedelta(days=1)).isoformat(),
    ]


def test_promotion_rules_share_the_fits_and_decide_apart(observations: pd.DataFrame) -> None:
    """Two rules over weekly and monthly: each retrain day is fitted once for the four
    lanes, a champion is scored once per day for every lane it serves, and the rule no
    challenger can pass keeps the first champion while the point rule moves on."""
    params = _params()
    point = params.promote.model_copy(update={"significance": "none", "station_auc_drop": None})
    rules = {"point": point, "never": point.model_copy(update={"f1_margin": 1.0})}
    fitted: list[date] = []
    scored: list[str] = []
    real_fit, real_score = bt.fit, bt.score_model

    def fit_spy(train: pd.DataFrame, validation: pd.DataFrame, p: Any) -> Any:
        fitted.append(date.fromisoformat(str(validation[schema.DATE].max())))
        return real_fit(train, validation, p)

    def score_spy(model: bt.Model, test: pd.DataFrame) -> Any:
        scored.append(model.version)
        return real_score(model, test)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bt, "fit", fit_spy)
        mp.setattr(bt, "score_model", score_spy)
        result = bt.run_backtest(
            observations, START, END, params, ["weekly", "monthly"], rules=rules
        )

    lanes = ["weekly/point", "weekly/never", "monthly/point", "monthly/never"]
    assert list(result.policies) == lanes
    assert result.lanes["monthly/never"] == {"policy": "monthly", "rule": "never"}
    # The first champion, weekly's 02-25 and 03-03 and monthly's 03-01: four fits for the
    # six retrains of four lanes.
    assert result.distinct_fits == len(fitted) == 4
    assert len(result.retrains) == 6
    by_day: dict[str, list[bt.Retrain]] = {}
    for r in result.retrains:
        by_day.setdefault(r.day, []).append(r)
    assert sorted(by_day) == ["2020-02-25", "2020-03-01", "2020-03-03"]
    for same_day in by_day.values():  # one candidate per day, whatever the rule
        assert len({json.dumps(r.candidate, sort_keys=True) for r in same_day}) == 1
        assert len(same_day) == 2 and all(r.candidate for r in same_day)
    # Each fit's candidate is scored once; a champion once per day, however many lanes
    # it serves (on 02-25 both weekly lanes still have the first champion).
    pairs = {(r.day, r.champion["version"]) for r in result.retrains if r.champion}
    assert len(pairs) < len(result.retrains)
    assert len(scored) == 4 + len(pairs)

    s = result.summaries
    for policy in ("weekly", "monthly"):
        never, point_lane = s[f"{policy}/never"], s[f"{policy}/point"]
        assert never.promotions == 0 and never.rejections == never.retrains > 0
        assert never.blocked_by["f1_margin"] == never.retrains  # (an AUC loss may add one)
        assert never.champion_versions == [result.initial.version]
        assert point_lane.retrains == never.retrains
        assert point_lane.promotions + point_lane.rejections == point_lane.retrains
        assert len(point_lane.champion_versions) == 1 + point_lane.promotions
    # The point rule promoted at least once where the other did not: the same candidate,
    # two decisions, and from then on two champions with their own live scores.
    apart = [
        (a, b)
        for same_day in by_day.values()
        for a in same_day
        for b in same_day
        if a.policy.endswith("/point") and b.policy.endswith("/never") and a.promoted
    ]
    assert apart and all(not b.promoted and "f1_margin" in b.blocked_by for _, b in apart)
    moved = [lane for lane in lanes if s[lane].promotions]
    for lane in moved:
        other = lane.replace("/point", "/never")
        assert s[lane].champion_versions != s[other].champion_versions
        assert s[lane].n_scored == s[other].n_scored
        assert (s[lane].roc_auc, s[lane].f1) != (s[other].roc_auc, s[other].f1)

    body = json.loads(json.dumps(result.as_dict(), default=str))
    assert body["rules"]["never"]["f1_margin"] == 1.0
    for lane in lanes:
        summary = body["summary"][lane]
        assert {"retrains", "promotions", "rejections", "blocked_by", "roc_auc", "f1"} <= set(
            summary
        )
        assert summary["champion_versions"][0] == result.initial.version


def test_a_rule_name_that_cannot_name_a_lane_is_refused(observations: pd.DataFrame) -> None:
    params = _params()
    with pytest.raises(bt.BacktestError, match="bad rule name 'a/b'"):
        bt.run_backtest(
            observations, START, END, params, ["monthly"], rules={"a/b": params.promote}
        )


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame[list(schema.COLUMNS)].to_csv(path, index=False, na_rep="NA", compression="gzip")
    return path


def test_the_command_writes_the_json_and_the_plots(
    observations: pd.DataFrame, tmp_path: Path
) -> None:
    write_params(tmp_path, OVERRIDES)
    csv = _write_csv(observations[observations[schema.DATE] <= "2020-03-10"], tmp_path / "w.csv.gz")
    env = {"RAINCAST_PROJECT_DIR": str(tmp_path), "RAINCAST_HOME": str(tmp_path / "var")}
    args = ["backtest", "--data", str(csv), "--start", "2020-03-01", "--end", "2020-03-03"]
    done = runner.invoke(app, [*args, "--policy", "weekly", "--policy", "never"], env=env)
    assert done.exit_code == 0, done.output
    out = tmp_path / "var" / "backtest"
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "backtest.json",
        "backtest_compute.png",
        "backtest_retrains.png",
        "backtest_rolling.png",
    ]
    body = json.loads((out / "backtest.json").read_text())
    assert body["policies"] == ["weekly", "never"]
    assert body["meta"]["data"] == "w.csv.gz"
    assert body["history"]["last_day"] == "2020-02-29"
    assert body["summary"]["weekly"]["retrains"] == 1 and body["summary"]["never"]["retrains"] == 0
    assert len(body["days"]) == 2 * 3
    assert "| weekly | 3 |" in done.output  # the summary table


def test_the_api_serves_what_the_command_writes_to_the_configured_folder(
    observations: pd.DataFrame, tmp_path: Path
) -> None:
    """RAINCAST_BACKTEST_DIR is where the command writes and the API reads (one setting)."""
    write_params(tmp_path, OVERRIDES)
    csv = _write_csv(observations[observations[schema.DATE] <= "2020-03-10"], tmp_path / "w.csv.gz")
    folder = tmp_path / "results"
    env = {
        "RAINCAST_PROJECT_DIR": str(tmp_path),
        "RAINCAST_HOME": str(tmp_path / "var"),
        "RAINCAST_BACKTEST_DIR": str(folder),
    }
    args = ["backtest", "--data", str(csv), "--start", "2020-03-01", "--end", "2020-03-03"]
    done = runner.invoke(app, [*args, "--policy", "daily", "--policy", "never"], env=env)
    assert done.exit_code == 0, done.output
    assert not (tmp_path / "var" / "backtest").exists()
    written = json.loads((folder / BACKTEST_RESULT).read_text())

    results = BacktestResults(Settings(backtest_dir=folder).backtest_results_dir)
    answer = results.summary()
    assert answer["source"] == BACKTEST_RESULT and answer["policies"] == ["daily", "never"]
    assert answer["summary"] == [written["summary"][p] for p in ("daily", "never")]
    assert answer["retrains"] == written["retrains"] and len(answer["retrains"]) == 3
    assert answer["n_days"] == len(written["days"]) == 6
    assert [(r["policy"], r["date"]) for r in answer["rolling"]] == [
        (p, f"2020-03-0{d}") for p in ("daily", "never") for d in (1, 2, 3)
    ]
    assert answer["plots"] == list(BACKTEST_PLOTS)
    for name in BACKTEST_PLOTS:
        assert results.plot(name) == (folder / name).read_bytes()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temp files


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2020-03-05", "--end", "2020-03-01"], "start 2020-03-05 is after end"),
        (["--start", "2020-03-01", "--end", "2020-03-02", "--policy", "hourly"], "unknown policy"),
        (["--start", "2021-01-01", "--end", "2021-01-31"], "no rows between 2021-01-01"),
        (["--start", "2019-01-01", "--end", "2019-01-31"], "no rows before 2019-01-01"),
        (["--start", "2020-13-01", "--end", "2020-12-31"], "--start '2020-13-01' is not a date"),
    ],
)
def test_the_command_refuses_a_bad_request_in_one_line(
    observations: pd.DataFrame, tmp_path: Path, args: list[str], message: str
) -> None:
    write_params(tmp_path, OVERRIDES)
    csv = _write_csv(observations[observations[schema.DATE] <= "2020-01-31"], tmp_path / "w.csv")
    env = {"RAINCAST_PROJECT_DIR": str(tmp_path), "RAINCAST_HOME": str(tmp_path / "var")}
    refused = runner.invoke(app, ["backtest", "--data", str(csv), *args], env=env)
    assert refused.exit_code == 1
    (line,) = [ln for ln in refused.output.splitlines() if ln.startswith("error:")]
    assert message in line and "Traceback" not in refused.output, refused.output
    assert not (tmp_path / "var" / "backtest").exists()


def test_a_missing_file_is_one_line_too(tmp_path: Path) -> None:
    write_params(tmp_path, OVERRIDES)
    env = {"RAINCAST_PROJECT_DIR": str(tmp_path), "RAINCAST_HOME": str(tmp_path / "var")}
    args = ["backtest", "--data", str(tmp_path / "nope.csv"), "--start", "2020-01-01"]
    refused = runner.invoke(app, [*args, "--end", "2020-01-02"], env=env)
    assert refused.exit_code == 1
    assert refused.output.startswith("error: weatherAUS file not found")


def test_the_engine_refuses_what_the_command_refuses(observations: pd.DataFrame) -> None:
    with pytest.raises(bt.BacktestError, match="is after end"):
        bt.run_backtest(observations, END, START, _params())
    with pytest.raises(bt.BacktestError, match="unknown policy yearly"):
        bt.run_backtest(observations, START, END, _params(), ["daily", "yearly"])
    with pytest.raises(bt.BacktestError, match="no rows between"):
        bt.run_backtest(observations, date(2030, 1, 1), date(2030, 1, 2), _params())
    with pytest.raises(bt.BacktestError, match="first champion cannot be trained: split"):
        # Too little history for the split's minimum train rows.
        bt.run_backtest(observations, date(2019, 3, 1), date(2019, 3, 2), _params())


def test_the_progress_line_leaves_the_first_fit_out_of_the_eta() -> None:
    p = bt.BacktestProgress(done=2, total=6, day=START, elapsed_s=50.0, fits=3, setup_s=30.0)
    assert p.eta_s == 40.0  # (50 - 30) s for 2 days, 4 to go
    assert p.line(width=6).startswith("[##....] 2/6 days 2020-02-25  fits 3")
    assert p.line().endswith("elapsed 0m50s  eta 0m40s")
    assert bt.BacktestProgress(0, 6, START, 1.0, 0).eta_s is None
