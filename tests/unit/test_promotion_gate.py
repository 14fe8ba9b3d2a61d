"""The promotion gate on real rows: paired bootstrap significance, the station guard and the
gate modes (enforce, dry_run, off).

The rows are the real weatherAUS 365-day test slice (2016-06-26..2017-06-25) of six
stations; the "models" are logistic regressions fitted on the year before, on one feature
(weak), two (mid) or six (strong): three real probability vectors for the same rows,
in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression
from testbed.params_file import write_params

from raincast import schema
from raincast.models.compare import (
    PairedRows,
    RowPredictions,
    paired_bootstrap,
    roc_auc,
    station_aucs,
)
from raincast.models.registry import (
    Decision,
    Scores,
    decide_promotion,
    decision_extra,
    decision_tags,
    gate_decision,
    score_predictions,
)
from raincast.params import PromoteParams, load_params

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
STATIONS = ("Albury", "Brisbane", "Hobart", "Melbourne", "Perth", "Sydney")
TEST_START = "2016-06-26"
FEATURES = {
    "weak": ["Humidity3pm"],
    "mid": ["Humidity3pm", "Pressure3pm"],
    "strong": [
        "Humidity3pm",
        "Pressure3pm",
        "WindGustSpeed",
        "Rainfall",
        "Temp3pm",
        "Humidity9am",
    ],
}
THRESHOLD = 0.35
#: The committed rule (station guard on, enforce) with the significance check on
#: (params.yaml ships it off).
RULE = PromoteParams(significance="bootstrap")


@pytest.fixture(scope="module")
def slice_() -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The test rows and each model's probability on them."""
    if not (SHARED / "weatherAUS.csv.gz").is_file():
        pytest.skip("../shared/data not present: real-data tests need the weatherAUS files")
    raw = pd.read_csv(
        SHARED / "weatherAUS.csv.gz",
        usecols=[schema.DATE, schema.LOCATION, schema.RAIN_TOMORROW, *FEATURES["strong"]],
        keep_default_na=False,
        na_values=["NA"],
    )
    rows = raw[
        raw[schema.LOCATION].isin(STATIONS)
        & raw[schema.RAIN_TOMORROW].notna()
        & (raw[schema.DATE] >= "2015-06-26")
    ]
    train, test = rows[rows[schema.DATE] < TEST_START], rows[rows[schema.DATE] >= TEST_START]
    probs = {}
    for name, cols in FEATURES.items():
        fill = train[cols].median()
        model = LogisticRegression(max_iter=1000)
        model.fit(train[cols].fillna(fill), train[schema.RAIN_TOMORROW] == "Yes")
        probs[name] = model.predict_proba(test[cols].fillna(fill))[:, 1]
    return test.reset_index(drop=True), probs


def _rows(test: pd.DataFrame, p: np.ndarray) -> RowPredictions:
    return RowPredictions(
        labels=(test[schema.RAIN_TOMORROW] == "Yes").to_numpy(dtype="int8"),
        probability=p,
        threshold=THRESHOLD,
        location=test[schema.LOCATION].to_numpy(dtype=str),
    )


def _gate(
    test: pd.DataFrame, cand_p: np.ndarray, champ_p: np.ndarray, rule: PromoteParams = RULE
) -> tuple[Decision, Scores, Scores]:
    cand_rows, champ_rows = _rows(test, cand_p), _rows(test, champ_p)
    cand, champ = score_predictions("2", cand_rows), score_predictions("1", champ_rows)
    return gate_decision(cand, champ, rule, PairedRows(cand_rows, champ_rows)), cand, champ


def _station(test: pd.DataFrame, name: str) -> np.ndarray:
    return np.flatnonzero(test[schema.LOCATION].to_numpy() == name)


def _good_at(test: pd.DataFrame, base: np.ndarray, good: np.ndarray, station: str) -> np.ndarray:
    """``base`` except at ``station``, where it is ``good``."""
    out = base.copy()
    at = _station(test, station)
    out[at] = good[at]
    return out


def _bad_at(test: pd.DataFrame, good: np.ndarray, station: str) -> np.ndarray:
    """``good`` except at ``station``, where its scores are shuffled among the rows on the
    same side of the threshold: the same yes/no answers there (so the same F1), but no
    ranking within them (a lower ROC AUC)."""
    out = good.copy()
    rng = np.random.default_rng(7)
    at = _station(test, station)
    for side in (good[at] >= THRESHOLD, good[at] < THRESHOLD):
        rows = at[side]
        out[rows] = rng.permutation(good[rows])
    return out


# --- the numbers the gate rests on ----------------------------------------------------------


def test_auc_and_f1_agree_with_scikit_learn(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    rows = _rows(test, probs["strong"])
    assert roc_auc(rows.labels, probs["strong"]) == pytest.approx(
        skm.roc_auc_score(rows.labels, probs["strong"]), abs=1e-12
    )
    coarse = np.round(probs["strong"], 1)  # many ties: each counts half
    assert roc_auc(rows.labels, coarse) == pytest.approx(
        skm.roc_auc_score(rows.labels, coarse), abs=1e-12
    )
    f1, auc = paired_bootstrap(PairedRows(rows, _rows(test, probs["weak"])), 0.95, 200, seed=0)
    strong, weak = score_predictions("2", rows), score_predictions("1", _rows(test, probs["weak"]))
    assert f1.estimate == pytest.approx(strong.f1 - weak.f1, abs=1e-12)
    assert auc.estimate == pytest.approx(strong.roc_auc - weak.roc_auc, abs=1e-12)


def test_bootstrap_is_deterministic_for_a_seed(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    pair = PairedRows(_rows(test, probs["strong"]), _rows(test, probs["mid"]))
    first = paired_bootstrap(pair, 0.95, 1000, seed=3)
    assert paired_bootstrap(pair, 0.95, 1000, seed=3) == first
    other = paired_bootstrap(pair, 0.95, 1000, seed=4)
    assert other[0].estimate == first[0].estimate  # the point estimate is not resampled
    assert (other[0].low, other[0].high) != (first[0].low, first[0].high)


def test_the_bootstrap_is_paired(slice_) -> None:  # type: ignore[no-untyped-def]
    """Both models are scored on the same draw: a model against itself differs by exactly
    0 in every resample (an unpaired bootstrap would give a wide interval around 0)."""
    test, probs = slice_
    same = _rows(test, probs["mid"])
    f1, auc = paired_bootstrap(PairedRows(same, same), 0.95, 500, seed=0)
    assert (f1.low, f1.high, auc.low, auc.high) == (0.0, 0.0, 0.0, 0.0)


def test_rows_of_another_slice_are_refused(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    other = test.sample(frac=1.0, random_state=1)  # same rows, another order
    with pytest.raises(ValueError, match="not scored on the same rows"):
        PairedRows(_rows(test, probs["strong"]), _rows(other, probs["strong"]))


def test_a_rule_that_needs_rows_refuses_to_run_without_them() -> None:
    cand, champ = Scores("2", 0.62, 0.88, 0.4), Scores("1", 0.60, 0.88, 0.4)
    with pytest.raises(ValueError, match="per-row predictions"):
        decide_promotion(cand, champ, RULE)
    point_only = RULE.model_copy(update={"significance": "none", "station_auc_drop": None})
    assert decide_promotion(cand, champ, point_only).promote


# --- significance ----------------------------------------------------------------------------


def test_a_significant_gain_is_promoted(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    d, cand, champ = _gate(test, probs["strong"], probs["weak"])
    assert d.promote and d.label == "promoted" and d.gate == "enforce" and d.blocked_by == ()
    assert d.f1_gain is not None and d.f1_gain.low > 0
    assert f"F1 gain {d.f1_gain}: significant" in d.reasons
    tags = decision_tags(d, cand, champ)
    assert tags["promotion.f1_gain_ci"] == str(d.f1_gain)
    assert tags["promotion.f1_gain_ci"].startswith("+0.06") and "[95% CI +0.0" in str(d.f1_gain)
    assert tags["promotion.gate"] == "enforce" and tags["promotion.gate_verdict"] == "promote"


def test_a_gain_above_the_margin_that_is_not_significant_is_rejected(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    d, cand, champ = _gate(test, probs["strong"], probs["mid"])
    assert cand.f1 - champ.f1 >= RULE.f1_margin  # the margin rule alone would promote
    assert d.reasons[0].endswith("ok") and d.reasons[1].endswith("ok")
    assert not d.promote and d.label == "rejected" and d.blocked_by == ("f1_significance",)
    assert d.f1_gain is not None and d.f1_gain.low < 0 < d.f1_gain.high
    (reason,) = [r for r in d.reasons if r.startswith("F1 gain")]
    assert reason == f"F1 gain {d.f1_gain}: not significant"
    assert "[95% CI -0.0" in reason
    point_only = RULE.model_copy(update={"significance": "none"})
    assert _gate(test, probs["strong"], probs["mid"], point_only)[0].promote


def test_a_significant_loss_is_rejected_and_named(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    d, cand, champ = _gate(test, probs["weak"], probs["strong"])
    assert not d.promote
    assert d.auc_gain is not None and d.auc_gain.high < -RULE.auc_tolerance
    assert {"f1_significance", "auc_significance"} <= set(d.blocked_by)
    assert f"ROC AUC change {d.auc_gain}: significant loss beyond -0.005" in d.reasons
    assert f"F1 gain {d.f1_gain}: significant loss" in d.reasons
    tags = decision_tags(d, cand, champ)
    assert tags["promotion.auc_gain_ci"] == str(d.auc_gain)
    assert tags["promotion.gate_verdict"] == "reject"


def test_the_confidence_level_widens_the_interval(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    pair = PairedRows(_rows(test, probs["strong"]), _rows(test, probs["mid"]))
    f1_90, _ = paired_bootstrap(pair, 0.90, 1000, seed=0)
    f1_99, _ = paired_bootstrap(pair, 0.99, 1000, seed=0)
    assert f1_99.low < f1_90.low < f1_90.high < f1_99.high
    assert str(f1_99).startswith(f"{f1_99.estimate:+.4f} [99% CI ")


# --- the station guard -----------------------------------------------------------------------


def test_one_bad_station_blocks_and_is_named(slice_) -> None:  # type: ignore[no-untyped-def]
    """A champion that is good at Hobart; a challenger better everywhere else, and as good
    at Hobart by F1, but with a much worse ranking there."""
    test, probs = slice_
    champ_p = _good_at(test, probs["weak"], probs["strong"], "Hobart")
    cand_p = _bad_at(test, probs["strong"], "Hobart")
    d, _, _ = _gate(test, cand_p, champ_p)
    assert d.f1_gain is not None and d.f1_gain.low > 0  # better overall, significantly
    assert not d.promote
    assert [s.location for s in d.stations_blocking] == ["Hobart"]
    assert d.blocked_by == ("station",)
    hobart = d.stations_blocking[0]
    assert hobart.drop > RULE.station_auc_drop  # type: ignore[operator]
    (reason,) = [r for r in d.reasons if r.startswith("station ROC AUC")]
    assert "drops more than 0.05 at 1 of 6 station(s) with >= 300 rows" in reason
    assert f"Hobart {hobart.candidate:.4f} vs {hobart.champion:.4f}" in reason
    assert "Sydney" not in reason
    tags = decision_tags(d, Scores("2", 0.6, 0.8, 0.3), None)
    assert tags["promotion.stations_checked"] == "6"
    assert tags["promotion.station_auc_drops"].startswith("Hobart ")
    assert decision_extra(d)["stations_blocking"][0]["location"] == "Hobart"


def test_a_station_with_too_few_rows_is_ignored(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    # Hobart keeps only its last 90 days: too few rows to judge a model by.
    hobart = test[schema.LOCATION] == "Hobart"
    keep = ~hobart | (test[schema.DATE] >= "2017-03-27")
    short, short_probs = (
        test[keep].reset_index(drop=True),
        {k: v[keep.to_numpy()] for k, v in probs.items()},
    )
    assert 60 < (short[schema.LOCATION] == "Hobart").sum() < RULE.station_min_rows
    champ_p = _good_at(short, short_probs["weak"], short_probs["strong"], "Hobart")
    cand_p = _bad_at(short, short_probs["strong"], "Hobart")
    d, _, _ = _gate(short, cand_p, champ_p)
    assert d.promote, d.reasons
    assert d.stations_checked == 5 and d.stations_blocking == ()
    assert any(
        r.startswith("station ROC AUC: no drop over 0.05 at 5 station(s)") for r in d.reasons
    )
    # The same rows block once the guard counts stations that small.
    low = RULE.model_copy(update={"station_min_rows": 60})
    blocked, _, _ = _gate(short, cand_p, champ_p, low)
    assert not blocked.promote and [s.location for s in blocked.stations_blocking] == ["Hobart"]


def test_stations_with_one_class_are_left_out(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    dry = test[(test[schema.LOCATION] != "Perth") | (test[schema.RAIN_TOMORROW] == "No")]
    keep = dry.index.to_numpy()
    pair = PairedRows(
        _rows(dry.reset_index(drop=True), probs["strong"][keep]),
        _rows(dry.reset_index(drop=True), probs["weak"][keep]),
    )
    assert "Perth" not in {s.location for s in station_aucs(pair, 2)}
    assert len(station_aucs(pair, 2)) == 5


def test_a_slice_without_a_large_enough_station_says_so(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    strict = RULE.model_copy(update={"station_min_rows": 1000})
    d, cand, champ = _gate(test, probs["strong"], probs["weak"], strict)
    assert d.promote and d.stations_checked == 0
    assert d.reasons[-1] == (
        "station ROC AUC: not compared, no station has >= 1000 test rows with both classes"
    )
    assert decision_tags(d, cand, champ)["promotion.stations_checked"] == "0"
    off = RULE.model_copy(update={"station_auc_drop": None})
    unguarded, cand, champ = _gate(test, probs["strong"], probs["weak"], off)
    assert unguarded.stations_checked is None
    assert not any(r.startswith("station") for r in unguarded.reasons)
    assert "promotion.stations_checked" not in decision_tags(unguarded, cand, champ)


# --- gate modes ------------------------------------------------------------------------------


def test_dry_run_promotes_and_records_the_would_be_rejection(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    dry = RULE.model_copy(update={"gate": "dry_run"})
    d, cand, champ = _gate(test, probs["weak"], probs["strong"], dry)
    assert d.promote and d.verdict is False
    assert d.label == "promoted-dry-run" and len(d.label) <= 16
    assert d.reasons[0] == "dry run: would have rejected; promoted anyway (promote.gate: dry_run)"
    enforced, _, _ = _gate(test, probs["weak"], probs["strong"])
    assert d.reasons[1:] == enforced.reasons  # everything enforce would have said
    tags = decision_tags(d, cand, champ)
    assert tags["promotion.decision"] == "promoted-dry-run"
    assert tags["promotion.gate"] == "dry_run" and tags["promotion.gate_verdict"] == "reject"
    assert tags["promotion.auc_gain_ci"] == str(enforced.auc_gain)
    assert decision_extra(d)["gate"] == "dry_run"


def test_dry_run_of_a_winner_says_it_would_have_promoted(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    dry = RULE.model_copy(update={"gate": "dry_run"})
    d, _, _ = _gate(test, probs["strong"], probs["weak"], dry)
    assert d.promote and d.verdict is True and d.label == "promoted-dry-run"
    assert d.reasons[0].startswith("dry run: would have promoted")


def test_off_promotes_without_comparison_and_says_so(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    off = RULE.model_copy(update={"gate": "off"})
    d, cand, _ = _gate(test, probs["weak"], probs["strong"], off)
    assert d.promote and d.verdict is None and d.label == "promoted-no-gate"
    assert d.reasons == [
        "gate off (promote.gate: off): promoted without comparison to the champion"
    ]
    tags = decision_tags(d, cand, None)
    assert tags["promotion.gate"] == "off" and tags["promotion.gate_verdict"] == "not run"
    assert "promotion.f1_gain_ci" not in tags


@pytest.mark.parametrize(
    ("gate", "promote", "head"),
    [
        ("enforce", False, "leakage alarm: ROC AUC 0.9950"),
        ("dry_run", True, "dry run: would have rejected"),
        ("off", True, "gate off"),
    ],
)
def test_the_leakage_alarm_blocks_in_enforce_only_and_is_reported_otherwise(
    gate: str, promote: bool, head: str
) -> None:
    rule = RULE.model_copy(update={"gate": gate})
    d = gate_decision(Scores("2", 0.9, 0.995, 0.4), None, rule)
    assert d.promote is promote
    assert d.reasons[0].startswith(head)
    assert any("leakage alarm: ROC AUC 0.9950 > 0.985" in r for r in d.reasons)


def test_drift_block_is_a_would_be_rejection_in_dry_run(slice_) -> None:  # type: ignore[no-untyped-def]
    test, probs = slice_
    drift = {"drift_share": 0.6, "drift_detected": True, "drifted_columns": ["MinTemp"]}
    cand_rows, champ_rows = _rows(test, probs["strong"]), _rows(test, probs["weak"])
    cand, champ = score_predictions("2", cand_rows), score_predictions("1", champ_rows)
    pair = PairedRows(cand_rows, champ_rows)
    blocked = gate_decision(cand, champ, RULE, pair, drift, "block")
    assert not blocked.promote and blocked.reasons[-1].endswith("blocked by drift.mode=block")
    assert blocked.blocked_by == ("drift",)
    dry = gate_decision(
        cand, champ, RULE.model_copy(update={"gate": "dry_run"}), pair, drift, "block"
    )
    assert dry.promote and dry.reasons[0].startswith("dry run: would have rejected")
    assert dry.blocked_by == ("drift",)  # what would have blocked it


@pytest.mark.parametrize("value", ["enforced", "dry-run", "", True])
def test_an_unknown_gate_is_refused_by_params_validation(tmp_path: Path, value: object) -> None:
    path = write_params(tmp_path, {"promote": {"gate": value}})
    with pytest.raises(ValidationError, match="gate"):
        load_params(path)


@pytest.mark.parametrize(
    "change",
    [
        {"significance": "t-test"},
        {"confidence": 1.0},
        {"bootstrap_resamples": 10},
        {"station_auc_drop": 0},
        {"station_min_rows": 1},
    ],
)
def test_out_of_range_gate_settings_are_refused(tmp_path: Path, change: dict[str, object]) -> None:
    path = write_params(tmp_path, {"promote": change})
    with pytest.raises(ValidationError, match=next(iter(change))):
        load_params(path)


def test_the_station_guard_can_be_turned_off(tmp_path: Path) -> None:
    path = write_params(tmp_path, {"promote": {"station_auc_drop": None}})
    assert load_params(path).promote.station_auc_drop is None
