"""Typed view of params.yaml, parsed once at the edge and passed down.

params.yaml is the only home of tunables: `load_params` refuses a file that leaves out any
key (a missing key must not silently change training), and the defaults below exist only
for tests and equal the committed params.yaml (``tests/unit/test_params.py`` checks it).
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValidateParams(_Strict):
    max_invalid_share: float = Field(0.05, ge=0.0, le=1.0)
    max_age_days: int = Field(3, ge=0)


class SplitParams(_Strict):
    test_start: date | None = None
    validation_start: date | None = None
    test_days: int = Field(365, gt=0)
    validation_days: int = Field(365, gt=0)
    min_train_rows: int = Field(1000, ge=1)


class XgbParams(_Strict):
    """The booster's settings (scikit-learn names; `raincast.models.train` maps them to
    XGBoost's native ones). A setting not listed here is refused, not ignored: add it here
    and to params.yaml to use it."""

    n_estimators: int = Field(2000, ge=1)
    learning_rate: float = Field(0.05, gt=0.0, le=1.0)
    max_depth: int = Field(8, ge=0)
    min_child_weight: float = Field(5.0, ge=0.0)
    subsample: float = Field(0.8, gt=0.0, le=1.0)
    colsample_bytree: float = Field(0.6, gt=0.0, le=1.0)
    reg_lambda: float = Field(1.0, ge=0.0)
    tree_method: Literal["hist", "approx", "exact"] = "hist"
    max_cat_to_onehot: int = Field(1, ge=1)
    max_bin: int = Field(256, ge=2)
    n_jobs: int = Field(2, ge=1)


class TrainParams(_Strict):
    seed: int = 42
    early_stopping_rounds: int = Field(50, ge=1)
    #: After early stopping, refit on train + validation with the chosen number of rounds
    #: scaled by this factor (more, and more recent, data); 0 keeps the first fit.
    refit_rounds_factor: float = Field(1.15, ge=0.0)
    xgb: XgbParams = Field(default_factory=XgbParams)


class PromoteParams(_Strict):
    """The promotion gate (``raincast.models.registry.gate_decision``)."""

    f1_margin: float = Field(0.002, gt=0.0)
    auc_tolerance: float = Field(0.005, ge=0.0)
    leakage_auc: float = Field(0.985, gt=0.5, le=1.0)
    #: enforce: the rule decides; dry_run: every check runs and is recorded, the challenger
    #: is promoted anyway; off: promoted without comparison (recorded as such).
    gate: Literal["enforce", "dry_run", "off"] = "enforce"
    #: bootstrap: the F1 gain must also be significant (paired bootstrap over the test rows)
    #: and a significant ROC AUC loss blocks; none: point estimates only.
    significance: Literal["none", "bootstrap"] = "none"
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    bootstrap_resamples: int = Field(1000, ge=100, le=100_000)
    seed: int = 0
    #: Stations with fewer test rows (or one class) are left out of the station guard.
    station_min_rows: int = Field(300, ge=2)
    #: Block when a station's ROC AUC falls more than this below the champion's there;
    #: None turns the station guard off.
    station_auc_drop: float | None = Field(0.05, gt=0.0, le=1.0)


class LiveFloor(_Strict):
    """The champion's live metrics below which a scored window counts as a breach; None
    leaves that metric out (both None turns the live trigger off)."""

    f1: float | None = Field(0.4, gt=0.0, le=1.0)
    roc_auc: float | None = Field(0.8, gt=0.5, le=1.0)


class RetrainParams(_Strict):
    """When the daily time-based run of the retrain DAG goes on (``raincast retrain-due``)."""

    max_age_days: int = Field(30, ge=1)
    #: Live trigger: retrain when ``breaches_needed`` of the champion's last ``of_last``
    #: scored ``live_window_days``-day windows fall below ``live_floor``.
    live_floor: LiveFloor = Field(default_factory=LiveFloor)
    live_window_days: int = Field(7, ge=1)
    breaches_needed: int = Field(3, ge=1)
    of_last: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _needed_within_last(self) -> RetrainParams:
        if self.breaches_needed > self.of_last:
            raise ValueError(
                f"retrain.breaches_needed ({self.breaches_needed}) must be at most "
                f"retrain.of_last ({self.of_last}): N breaches are counted among the last M "
                "scored windows"
            )
        return self


class HistoryParams(_Strict):
    synthetic_days: int = Field(1095, ge=1)
    openmeteo_days: int = Field(730, ge=1)


class DriftParams(_Strict):
    #: Current window: the last N days of the processed data.
    window_days: int = Field(30, ge=1)
    #: Reference: at most this many rows sampled from the champion's training window.
    reference_rows: int = Field(20000, ge=100)
    #: Dataset drift when at least this share of the columns drifted.
    share_threshold: float = Field(0.3, gt=0.0, le=1.0)
    #: Per-column threshold for numeric columns (None: Evidently's default for the test
    #: it picks, 0.1 for normed Wasserstein on large samples).
    num_threshold: float | None = Field(0.2, gt=0.0)
    #: annotate: record drift with the decision only; block: a drifted dataset also blocks
    #: the promotion of the model trained on it.
    mode: Literal["annotate", "block"] = "annotate"
    #: Compare with the same days of the year in the reference window (seasonality is
    #: not drift); false compares with the whole window.
    seasonal: bool = True
    seed: int = 0


class ReplayParams(_Strict):
    #: Observation days the champion re-predicts (the newest it did not train on).
    days: int = Field(60, ge=1, le=366)
    #: Rolling score windows (days) of the replayed predictions.
    windows: tuple[int, ...] = Field((7, 30), min_length=1)

    @field_validator("windows")
    @classmethod
    def _positive_sorted(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(w <= 0 for w in v):
            raise ValueError("replay.windows must be positive numbers of days")
        return tuple(sorted(set(v)))


class Params(_Strict):
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    split: SplitParams = Field(default_factory=SplitParams)
    train: TrainParams = Field(default_factory=TrainParams)
    promote: PromoteParams = Field(default_factory=PromoteParams)
    retrain: RetrainParams = Field(default_factory=RetrainParams)
    history: HistoryParams = Field(default_factory=HistoryParams)
    drift: DriftParams = Field(default_factory=DriftParams)
    replay: ReplayParams = Field(default_factory=ReplayParams)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MissingParamsError(ValueError):
    """params.yaml leaves out keys; the message names each as ``section.key``."""


def missing_keys(model: type[BaseModel], raw: object, prefix: str = "") -> list[str]:
    """Dotted names of the fields of ``model`` (and of its sections, recursively) that
    ``raw`` does not set."""
    given = raw if isinstance(raw, dict) else {}
    missing: list[str] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        dotted = f"{prefix}{key}"
        if key not in given:
            missing.append(dotted)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            missing += missing_keys(field.annotation, given[key], f"{dotted}.")
    return missing


def load_params(path: Path = Path("params.yaml")) -> Params:
    """Parse params.yaml: a missing file, a missing key, an unknown key or a value out of
    range is an error naming it, never a silent default."""
    if not path.exists():
        raise FileNotFoundError(f"params file not found: {path} (run from the project folder)")
    raw = yaml.safe_load(path.read_text()) or {}
    if missing := missing_keys(Params, raw):
        raise MissingParamsError(
            f"{path} leaves out {len(missing)} key(s): {', '.join(missing)} "
            "(every tunable must be set there; see the committed params.yaml)"
        )
    return Params.model_validate(raw)


def params_hash(section: BaseModel) -> str:
    """Stable short hash of a params section, for lineage tags."""
    blob = json.dumps(section.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
