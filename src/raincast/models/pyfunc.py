"""The logged model: an MLflow pyfunc that predicts from raw weatherAUS rows.

The booster file and a small JSON (threshold, feature list) are artifacts; the feature
function ships with it (``code_paths``), so ``mlflow.pyfunc.load_model(uri).predict(df)``
and ``mlflow models serve`` need nothing but raw rows.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow.pyfunc
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
        return predict_frame(self.booster, model_input, self.threshold)


def predict_frame(booster: Any, raw: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Probability, label and threshold per raw row (the one prediction path)."""
    from raincast.models.train import predict_proba

    p = predict_proba(booster, raw)
    return pd.DataFrame(
        {
            "probability": p,
            "label": ["Yes" if v >= threshold else "No" for v in p],
            "threshold": threshold,
        },
        index=raw.index,
    )


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
