"""XGBoost fitting and decision-threshold tuning (pure: data + params in, model out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import precision_recall_curve

from raincast.features import FEATURE_COLUMNS, FEATURE_TYPES, label_vector, model_matrix
from raincast.params import TrainParams

#: Keys of params.train.xgb that are sklearn-style names, mapped to native booster names.
_RENAMES = {
    "n_estimators": None,
    "learning_rate": "eta",
    "n_jobs": "nthread",
    "reg_lambda": "lambda",
}


@dataclass(frozen=True)
class FittedModel:
    booster: xgb.Booster
    threshold: float
    best_iteration: int
    validation_f1: float
    #: Out-of-sample validation probabilities (from the early-stopped fit, before any refit).
    validation_proba: np.ndarray
    rounds: int


def booster_params(params: TrainParams) -> tuple[dict[str, Any], int]:
    """Native XGBoost params and the maximum number of boosting rounds."""
    native: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "seed": params.seed,
    }
    rounds = 500
    for key, value in params.xgb.model_dump().items():
        if key == "n_estimators":
            rounds = int(value)
            continue
        native[_RENAMES.get(key) or key] = value
    return native, rounds


#: How every XGBoost matrix names and types the model matrix's columns.
_MATRIX_META: dict[str, Any] = {
    "feature_names": list(FEATURE_COLUMNS),
    "feature_types": list(FEATURE_TYPES),
    "enable_categorical": True,
}


def quantile_matrix(frame: pd.DataFrame, native: dict[str, Any]) -> xgb.QuantileDMatrix:
    """Training matrix of labelled raw rows, binned with the booster's ``max_bin`` (XGBoost
    refuses to train when the matrix and the booster disagree on it)."""
    return xgb.QuantileDMatrix(
        model_matrix(frame),
        label_vector(frame),
        max_bin=int(native.get("max_bin", 256)),
        **_MATRIX_META,
    )


def dmatrix(raw: pd.DataFrame, labelled: bool = False) -> xgb.DMatrix:
    """Plain matrix of raw rows (for evaluation and prediction); labels when asked."""
    return xgb.DMatrix(model_matrix(raw), label_vector(raw) if labelled else None, **_MATRIX_META)


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Threshold maximising F1 on (y, p), and that F1."""
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    i = int(np.nanargmax(f1[:-1])) if len(thresholds) else 0
    return (float(thresholds[i]) if len(thresholds) else 0.5), float(f1[i])


def fit(train: pd.DataFrame, validation: pd.DataFrame, params: TrainParams) -> FittedModel:
    """Fit on ``train`` with early stopping and threshold tuning on ``validation``."""
    native, rounds = booster_params(params)
    dtrain = quantile_matrix(train, native)
    dval = dmatrix(validation, labelled=True)
    booster = xgb.train(
        native,
        dtrain,
        num_boost_round=rounds,
        evals=[(dval, "validation")],
        early_stopping_rounds=params.early_stopping_rounds,
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    booster = booster[: best + 1]  # keep only the trees early stopping chose
    p_val = booster.predict(dval)
    threshold, f1 = best_f1_threshold(label_vector(validation), p_val)
    rounds = best + 1
    if params.refit_rounds_factor > 0:
        # The threshold was tuned out-of-sample above; the refit only adds the most recent
        # year to the trees, with the round count early stopping found (scaled for more rows).
        both = pd.concat([train, validation], ignore_index=True)
        del dtrain
        dall = quantile_matrix(both, native)
        rounds = max(1, round((best + 1) * params.refit_rounds_factor))
        booster = xgb.train(native, dall, num_boost_round=rounds, verbose_eval=False)
    return FittedModel(booster, threshold, best, f1, p_val, rounds)


def predict_proba(booster: xgb.Booster, raw: pd.DataFrame) -> np.ndarray:
    """P(RainTomorrow = Yes) for raw weatherAUS rows."""
    return booster.predict(dmatrix(raw))
