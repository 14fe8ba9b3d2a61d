"""The baseline for the cycle-time ratio: a plain script doing the same fit, nothing else.

Reads the CSV, takes its labelled rows, splits by the same dates, builds the same features,
fits XGBoost with the same params (early stopping, then the refit) and scores the
test slice. No store, DVC or MLflow.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from raincast import schema
from raincast.features import label_vector
from raincast.models.train import booster_params, dmatrix, quantile_matrix
from raincast.params import load_params
from raincast.steps.split import split_by_time


def main(csv: str, params_file: str = "params.yaml") -> dict[str, float]:
    t0 = time.perf_counter()
    params = load_params(Path(params_file))
    df = pd.read_csv(csv, na_values=["NA"])
    df = df[df[schema.RAIN_TOMORROW].notna()]
    train, val, test, _ = split_by_time(df, params.split)
    native, rounds = booster_params(params.train)
    dtrain = quantile_matrix(train, native)
    dval = dmatrix(val, labelled=True)
    booster = xgb.train(
        native,
        dtrain,
        rounds,
        evals=[(dval, "v")],
        early_stopping_rounds=params.train.early_stopping_rounds,
        verbose_eval=False,
    )
    if params.train.refit_rounds_factor > 0:  # the same refit on train + validation
        both = pd.concat([train, val])
        booster = xgb.train(
            native,
            quantile_matrix(both, native),
            round((booster.best_iteration + 1) * params.train.refit_rounds_factor),
        )
    p = booster.predict(dmatrix(test))
    return {
        "seconds": time.perf_counter() - t0,
        "roc_auc": float(roc_auc_score(label_vector(test), p)),
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
