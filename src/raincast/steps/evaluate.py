"""evaluate: score the trained model on the test slice; metrics and plots go to DVC files
and to its MLflow run."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from raincast import catalog
from raincast.features import label_vector
from raincast.params import Params
from raincast.settings import Settings

if TYPE_CHECKING:
    import xgboost as xgb

#: The plot files, by the name `score_test_slice` gives each curve.
PLOTS = (catalog.ROC, catalog.PR, catalog.CALIBRATION, catalog.IMPORTANCE)


def score_test_slice(
    booster: xgb.Booster, test: pd.DataFrame, threshold: float
) -> tuple[dict[str, float], dict[str, float], dict[str, pd.DataFrame]]:
    """Metrics at ``threshold``, ROC AUC per station, and the curves (ROC, PR, calibration,
    feature importance) of ``booster`` on the labelled ``test`` rows."""
    from raincast.models.metrics import classification_metrics, curves, per_station_auc
    from raincast.models.pyfunc import predict_frame

    y = label_vector(test)
    p = predict_frame(booster, test, threshold)["probability"].to_numpy()
    metrics = classification_metrics(y, p, threshold)
    stations = per_station_auc(test, y, p)
    if stations:
        vals = pd.Series(stations)
        metrics |= {
            "station_auc_min": float(vals.min()),
            "station_auc_median": float(vals.median()),
            "station_auc_max": float(vals.max()),
        }
    plots = curves(y, p)
    gain = booster.get_score(importance_type="total_gain")
    plots["importance"] = pd.DataFrame(
        {"feature": list(gain), "gain": list(gain.values())}
    ).sort_values("gain", ascending=False)
    return metrics, stations, plots


def run(settings: Settings, params: Params | None = None) -> dict[str, Any]:
    """Score the trained model on the test slice; metrics and plots go to DVC files and
    to its MLflow run."""
    import mlflow
    import xgboost as xgb

    from raincast.models import tracking

    root = settings.project_dir
    test = catalog.load_frame(root, catalog.TEST)
    info = catalog.load_json(root, catalog.TRAINED)
    booster = xgb.Booster()
    booster.load_model(catalog.BOOSTER.at(root))
    metrics, stations, plots = score_test_slice(booster, test, float(info["threshold"]))
    catalog.save_json(root, catalog.TEST_METRICS, metrics)
    catalog.save_json(root, catalog.STATION_AUC, stations)
    for artifact in PLOTS:
        catalog.save_csv(root, artifact, plots[artifact.name])
    plot_dir = root / catalog.PLOTS_DIR

    tracking.configure(settings)
    with mlflow.start_run(run_id=info["run_id"]):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.log_metrics({f"test_auc_{k}": v for k, v in stations.items()})
        mlflow.log_artifacts(str(plot_dir), artifact_path="plots")
        with tempfile.TemporaryDirectory() as tmp:
            for png in _render_plots(plots, Path(tmp)):
                mlflow.log_artifact(str(png), artifact_path="plots")
    return metrics


def _render_plots(plots: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = {
        "roc": ("fpr", "tpr", "False positive rate", "True positive rate"),
        "pr": ("recall", "precision", "Recall", "Precision"),
        "calibration": (
            "predicted",
            "observed",
            "Mean predicted probability",
            "Observed rain rate",
        ),
    }
    paths = []
    for name, (x, y, xl, yl) in specs.items():
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(plots[name][x], plots[name][y], marker="." if name == "calibration" else None)
        if name != "pr":
            ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
        ax.set(xlabel=xl, ylabel=yl, title=name.upper())
        fig.tight_layout()
        paths.append(out / f"{name}.png")
        fig.savefig(paths[-1], dpi=80)
        plt.close(fig)
    imp = plots["importance"].head(20).iloc[::-1]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.barh(imp["feature"], imp["gain"])
    ax.set(title="Feature importance (total gain)")
    fig.tight_layout()
    paths.append(out / "importance.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)
    return paths
