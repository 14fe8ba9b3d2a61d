"""Classification metrics and plot data for a scored slice."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from raincast import schema


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """F1/precision/recall/accuracy at ``threshold`` plus threshold-free ROC/PR AUC and log loss."""
    pred = (p >= threshold).astype(int)
    return {
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "roc_auc": float(skm.roc_auc_score(y, p)) if len(set(y)) > 1 else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, p)) if len(set(y)) > 1 else float("nan"),
        "log_loss": float(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "base_rate": float(np.mean(y)),
        "threshold": float(threshold),
        "rows": float(len(y)),
    }


def per_station_auc(raw: pd.DataFrame, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC AUC per station (stations with a single class are skipped)."""
    out: dict[str, float] = {}
    frame = pd.DataFrame({"loc": raw[schema.LOCATION].to_numpy(), "y": y, "p": p})
    for loc, g in frame.groupby("loc", sort=True):
        if g["y"].nunique() == 2:
            out[str(loc)] = float(skm.roc_auc_score(g["y"], g["p"]))
    return out


def curves(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, pd.DataFrame]:
    """ROC, PR and calibration curves as tables (DVC plots and MLflow artifacts)."""
    fpr, tpr, _ = skm.roc_curve(y, p)
    precision, recall, _ = skm.precision_recall_curve(y, p)
    # Thin long curves: a few hundred points draw the same picture.
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr}).iloc[:: max(1, len(fpr) // 400)]
    pr = pd.DataFrame({"recall": recall, "precision": precision}).iloc[
        :: max(1, len(recall) // 400)
    ]
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    cal = (
        pd.DataFrame({"bin": idx, "y": y, "p": p})
        .groupby("bin")
        .agg(predicted=("p", "mean"), observed=("y", "mean"), count=("y", "size"))
        .reset_index(drop=True)
    )
    return {"roc": roc, "pr": pr, "calibration": cal}
