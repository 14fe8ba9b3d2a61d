"""The logged model: an MLflow pyfunc that predicts from raw weatherAUS rows.

The booster file and a small JSON (threshold, feature list) are artifacts; the feature
function ships with it (``code_paths``), so ``mlflow.pyfunc.load_model(uri).predict(df)``
and ``mlflow models serve`` need nothing but raw rows.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, Schema

from raincast import schema

PREDICTION_COLUMNS = ("probability", "label", "threshold")


class RainModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    """P(rain tomorrow) and the Yes/No label at the threshold tuned on validation."""

    def load_context(self, context: Any) -> None:
        import xgboost as xgb

        self.booster = xgb.Booster()
        self.booster.load_model(context.artifacts["booster"])
        with open(context.artifacts["meta"]) as fh:
            self.meta = json.load(fh)
        self.threshold = float(self.meta["threshold"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        if len(model_input) <= SMALL_FRAME_ROWS and _fast_path_ok(model_input):
            # Few rows (online serving): pandas-free features, same values (parity tests).
            from raincast.features import build_matrix

            p = self.booster.inplace_predict(build_matrix(model_input.to_dict("records")))
            return _prediction_frame(
                np.asarray(p, dtype="float64"), self.threshold, model_input.index
            )
        return predict_frame(self.booster, model_input, self.threshold)


#: Up to this many rows the logged model skips pandas feature building (~0.3 ms vs ~20 ms).
SMALL_FRAME_ROWS = 64


def _fast_path_ok(raw: pd.DataFrame) -> bool:
    """Rows the pandas-free path can take; anything else goes the checked pandas way
    (which raises FeatureError with a clear message for bad rows)."""
    if schema.DATE not in raw.columns or schema.LOCATION not in raw.columns:
        return False
    if not raw[schema.LOCATION].isin(list(schema.stations())).all():
        return False
    dates = pd.to_datetime(raw[schema.DATE], format="%Y-%m-%d", errors="coerce")
    compass = set(schema.COMPASS_POINTS)
    directions_ok = all(
        raw[c].dropna().isin(compass).all() for c in schema.DIRECTION_COLUMNS if c in raw.columns
    )
    return bool(dates.notna().all()) and directions_ok


def _prediction_frame(p: np.ndarray, threshold: float, index: Any) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "probability": p,
            "label": ["Yes" if v >= threshold else "No" for v in p],
            "threshold": threshold,
        },
        index=index,
    )


def predict_frame(booster: Any, raw: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Probability, label and threshold per raw row (the one prediction path)."""
    from raincast.models.train import predict_proba

    return _prediction_frame(predict_proba(booster, raw), threshold, raw.index)


def pip_requirements() -> list[str]:
    """Pinned runtime requirements of the logged model (the versions training used).

    Given explicitly so MLflow does not infer them by loading the model in a subprocess.
    """
    from importlib.metadata import version

    dists = ("mlflow", "xgboost-cpu", "pandas", "numpy", "scikit-learn", "pydantic", "pyyaml")
    return [f"{d}=={version(d)}" for d in dists]


def signature() -> ModelSignature:
    """Raw weatherAUS rows in (Date and Location required), predictions out."""
    cols = [ColSpec("string", schema.DATE), ColSpec("string", schema.LOCATION)]
    cols += [ColSpec("double", c, required=False) for c in schema.NUMERIC_COLUMNS]
    cols += [
        ColSpec("string", c, required=False) for c in (*schema.DIRECTION_COLUMNS, schema.RAIN_TODAY)
    ]
    out = Schema(
        [
            ColSpec("double", "probability"),
            ColSpec("string", "label"),
            ColSpec("double", "threshold"),
        ]
    )
    return ModelSignature(inputs=Schema(cols), outputs=out)  # type: ignore[arg-type]
