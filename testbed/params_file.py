"""params.yaml for a test's project folder: the committed file with a test's overrides.

`raincast.params.load_params` refuses a file that leaves out a key, so a test never writes
a partial params.yaml; it states only what it changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from raincast.params import Params, TrainParams

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied section by section (nested dicts merge)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def project_params(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The committed params.yaml as a dict, with ``overrides`` merged in."""
    return merged(yaml.safe_load(REPO_PARAMS.read_text()), overrides or {})


def write_params(folder: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Write ``folder/params.yaml``: the committed file with ``overrides`` merged in."""
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(project_params(overrides), sort_keys=False))
    return path


#: XGBoost's own settings (and no refit), which the small test models were written against
#: before params.yaml became complete: small data trains in a second with them.
LIBRARY_XGB: dict[str, Any] = {
    "n_estimators": 500,
    "learning_rate": 0.3,
    "max_depth": 6,
    "min_child_weight": 1.0,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
    "reg_lambda": 1.0,
    "tree_method": "hist",
    "max_cat_to_onehot": 4,
    "max_bin": 256,
    "n_jobs": 2,
}
#: Overrides for a test project that trains small models: the settings above, early stopping
#: after 100 rounds, and Evidently's own per-column drift threshold.
LIBRARY_DEFAULTS: dict[str, Any] = {
    "train": {"early_stopping_rounds": 100, "refit_rounds_factor": 0.0, "xgb": LIBRARY_XGB},
    "drift": {"num_threshold": None},
}


def train_params(xgb: dict[str, Any] | None = None, **fields: Any) -> TrainParams:
    """`TrainParams` for a small test model: `LIBRARY_DEFAULTS` with the given changes."""
    section = {**LIBRARY_DEFAULTS["train"], **fields}
    return TrainParams.model_validate({**section, "xgb": {**LIBRARY_XGB, **(xgb or {})}})


def small_model_params(overrides: dict[str, Any] | None = None) -> Params:
    """`Params` of the committed file with `LIBRARY_DEFAULTS` and ``overrides`` merged in."""
    return Params.model_validate(project_params(merged(LIBRARY_DEFAULTS, overrides or {})))
