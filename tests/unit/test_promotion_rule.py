"""The promotion rule, stage-name resolution and strict parsing of params.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from testbed.params_file import REPO_PARAMS, project_params, write_params

from raincast.models.registry import CHALLENGER, CHAMPION, Scores, decide_promotion, resolve_stage
from raincast.params import MissingParamsError, Params, PromoteParams, load_params, missing_keys

#: The point-estimate rule alone: these tests give scores, not per-row predictions (the
#: significance and station checks are tested in test_promotion_gate.py).
RULE = PromoteParams(
    f1_margin=0.002,
    auc_tolerance=0.005,
    leakage_auc=0.985,
    significance="none",
    station_auc_drop=None,
)
CHAMP = Scores(version="1", f1=0.600, roc_auc=0.880, threshold=0.4)


def _cand(f1: float, auc: float) -> Scores:
    return Scores(version="2", f1=f1, roc_auc=auc, threshold=0.35)


def test_clear_f1_gain_with_healthy_auc_is_promoted() -> None:
    d = decide_promotion(_cand(0.610, 0.881), CHAMP, RULE)
    assert d.promote and d.label == "promoted" and d.blocked_by == ()
    assert "F1 0.6100 vs champion 0.6000 (gain +0.0100, needs >= 0.002): ok" in d.reasons[0]
    assert "ROC AUC 0.8810 vs floor 0.8750" in d.reasons[1]
    assert d.reasons[1].endswith("ok")


def test_gain_of_exactly_the_margin_is_enough() -> None:
    # Binary-exact numbers (2**-7), so the boundary is tested and not float rounding.
    rule = RULE.model_copy(update={"f1_margin": 0.0078125})
    champ = Scores(version="1", f1=0.5, roc_auc=0.88, threshold=0.4)
    assert decide_promotion(_cand(0.5078125, 0.88), champ, rule).promote
    assert not decide_promotion(_cand(0.5078, 0.88), champ, rule).promote


def test_gain_below_the_margin_is_rejected() -> None:
    d = decide_promotion(_cand(0.601, 0.90), CHAMP, RULE)
    assert not d.promote and d.label == "rejected" and d.blocked_by == ("f1_margin",)
    assert "gain +0.0010, needs >= 0.002): not enough" in d.reasons[0]


def test_a_tie_is_not_a_win() -> None:
    d = decide_promotion(_cand(0.600, 0.880), CHAMP, RULE)
    assert not d.promote
    assert "gain +0.0000" in d.reasons[0] and "not enough" in d.reasons[0]


def test_worse_f1_is_rejected() -> None:
    d = decide_promotion(_cand(0.55, 0.95), CHAMP, RULE)
    assert not d.promote and d.blocked_by == ("f1_margin",)
    assert "gain -0.0500" in d.reasons[0]


def test_auc_guardrail_blocks_an_f1_win() -> None:
    d = decide_promotion(_cand(0.650, 0.874), CHAMP, RULE)  # floor is 0.880 - 0.005 = 0.875
    assert not d.promote
    assert d.reasons[0].endswith("ok")  # the F1 part alone would have won
    assert d.blocked_by == ("auc_tolerance",)
    assert "ROC AUC 0.8740 vs floor 0.8750 (champion 0.8800 - 0.005): regression" in d.reasons[1]


def test_auc_just_inside_the_tolerance_is_accepted() -> None:
    assert decide_promotion(_cand(0.650, 0.876), CHAMP, RULE).promote


def test_leakage_alarm_blocks_a_winner() -> None:
    d = decide_promotion(_cand(0.95, 0.990), CHAMP, RULE)
    assert not d.promote
    assert d.reasons == ["leakage alarm: ROC AUC 0.9900 > 0.985 is implausibly high"]
    assert d.blocked_by == ("leakage",)


def test_leakage_alarm_blocks_a_first_model_too() -> None:
    d = decide_promotion(_cand(0.95, 0.999), None, RULE)
    assert not d.promote
    assert "leakage alarm" in d.reasons[0] and "0.9990" in d.reasons[0]


def test_first_model_is_promoted() -> None:
    d = decide_promotion(_cand(0.30, 0.70), None, RULE)
    assert d.promote
    assert d.reasons == ["first model: no champion yet"]


# --- stage names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "alias"),
    [
        ("Production", CHAMPION),
        ("production", CHAMPION),
        ("Staging", CHALLENGER),
        (" STAGING ", CHALLENGER),
        ("Archived", None),
        ("None", None),
        ("Canary", "canary"),
        ("shadow_2", "shadow_2"),
    ],
)
def test_resolve_stage(label: str, alias: str | None) -> None:
    assert resolve_stage(label) == alias


@pytest.mark.parametrize("label", ["", "2fast", "has space", "v3", "latest", "a/b", "x" * 64])
def test_resolve_stage_rejects_invalid_labels(label: str) -> None:
    with pytest.raises(ValueError, match="is not a valid alias"):
        resolve_stage(label)


# --- params.yaml ------------------------------------------------------------------------


def test_project_params_load() -> None:
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    assert params.validate_.max_invalid_share == pytest.approx(0.05)
    assert params.promote.leakage_auc == pytest.approx(0.985)
    assert params.train.xgb.n_jobs == 2


def test_unknown_key_inside_a_section_is_an_error(tmp_path: Path) -> None:
    path = write_params(tmp_path, {"promote": {"f1_marign": 0.02}})
    with pytest.raises(ValidationError, match="f1_marign"):
        load_params(path)


def test_out_of_range_value_is_an_error(tmp_path: Path) -> None:
    path = write_params(tmp_path, {"validate": {"max_invalid_share": 1.5}})
    with pytest.raises(ValidationError, match="max_invalid_share"):
        load_params(path)


def test_an_unknown_booster_setting_is_an_error(tmp_path: Path) -> None:
    path = write_params(tmp_path, {"train": {"xgb": {"max_detph": 4}}})
    with pytest.raises(ValidationError, match="max_detph"):
        load_params(path)


def test_a_file_that_leaves_out_keys_is_refused_naming_them(tmp_path: Path) -> None:
    """A missing key must not silently fall back to a default: it is an error."""
    full = project_params()
    del full["train"]["xgb"]["max_depth"], full["drift"]["num_threshold"], full["replay"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(full))
    with pytest.raises(MissingParamsError) as err:
        load_params(path)
    msg = str(err.value)
    assert "train.xgb.max_depth" in msg and "drift.num_threshold" in msg and "replay" in msg
    assert "train.seed" not in msg


def test_an_empty_params_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("")
    with pytest.raises(MissingParamsError, match="validate, split, train"):
        load_params(path)


def test_code_defaults_are_the_committed_params() -> None:
    """The models' defaults (used by tests only) equal params.yaml, key by key."""
    committed = load_params(REPO_PARAMS)
    assert Params() == committed
    assert missing_keys(Params, project_params()) == []


def test_missing_params_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
