"""The DVC stages process, split, train and evaluate: file IO around the pure core.

Each stage is its own process under `dvc repro`, so MLflow, scikit-learn and XGBoost
(~8 s of imports together) are imported only by the stages that use them.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from raincast import schema
from raincast.data import store
from raincast.features import FEATURE_COLUMNS, label_vector
from raincast.params import Params, params_hash
from raincast.settings import Settings
from raincast.split import split_by_time

log = logging.getLogger(__name__)

PROCESSED = Path("data/processed/observations.parquet")
SPLIT_DIR = Path("data/split")
MODEL_DIR = Path("data/model")
METRICS_DIR = Path("data/metrics")
PLOTS_DIR = Path("data/plots")
DRIFT_DIR = Path("data/drift")


def _write_json(path: Path, body: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2, sort_keys=True, default=str) + "\n")


def process(settings: Settings) -> int:
    """Export the labelled rows of the raw store (schema columns + source) to parquet."""
    engine = store.connect(settings.raw_store_url)
    df = store.read_observations(engine)
    labelled = df[df[schema.RAIN_TOMORROW].notna()][[*schema.COLUMNS, "source"]]
    out = settings.project_dir / PROCESSED
    out.parent.mkdir(parents=True, exist_ok=True)
    labelled.reset_index(drop=True).to_parquet(out, index=False)
    log.info("processed %d labelled rows of %d", len(labelled), len(df))
    return len(labelled)


def split(settings: Settings, params: Params) -> dict[str, Any]:
    df = pd.read_parquet(settings.project_dir / PROCESSED)
    train, val, test, windows = split_by_time(df, params.split)
    out = settings.project_dir / SPLIT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("validation", val), ("test", test)):
        part.to_parquet(out / f"{name}.parquet", index=False)
    summary = {
        "windows": windows.as_dict(),
        "rows": {"train": len(train), "validation": len(val), "test": len(test)},
        # Provenance of every slice, for the lineage tags of the model trained on them.
        "sources": {
            name: sorted(set(part["source"].dropna())) if "source" in part else []
            for name, part in (("train", train), ("validation", val), ("test", test))
        },
    }
    _write_json(out / "windows.json", summary)
    return summary


def _champion_train_window(settings: Settings) -> list[str] | None:
    """The champion's training window from its MLflow run tags (None without a champion)."""
    from raincast.models import tracking
    from raincast.models.registry import CHAMPION

    try:
        client = tracking.configure(settings)
        mv = client.get_model_version_by_alias(settings.model_name, CHAMPION)
        window = client.get_run(str(mv.run_id)).data.tags["train_window"]
    except Exception as err:  # no registry, no champion, no tag: fall back to the split
        log.info("no champion training window (%s); using this split's train window", err)
        return None
    return window.split("..")


def drift(settings: Settings, params: Params) -> dict[str, Any]:
    """Evidently drift: a sample of the champion's training window vs the last N days.

    The champion lives in MLflow, outside DVC's view: the stage reruns when the processed
    data or drift params change (daily), not when only the alias moves.
    """
    from datetime import date, timedelta

    from raincast.monitoring.drift import detect_drift

    root, cfg = settings.project_dir, params.drift
    df = pd.read_parquet(root / PROCESSED)
    window = _champion_train_window(settings)
    source = "champion" if window else "split"
    if window is None:
        window = json.loads((root / SPLIT_DIR / "windows.json").read_text())["windows"]["train"]
    reference = df[(df[schema.DATE] >= window[0]) & (df[schema.DATE] <= window[1])]
    last = date.fromisoformat(str(df[schema.DATE].max()))
    start = (last - timedelta(days=cfg.window_days - 1)).isoformat()
    if cfg.seasonal:  # same days of the year only: winter is not drift from summer
        doy = pd.to_datetime(reference[schema.DATE]).dt.dayofyear
        lo, hi = date.fromisoformat(start).timetuple().tm_yday, last.timetuple().tm_yday
        same_season = reference[
            (doy >= lo) & (doy <= hi) if lo <= hi else (doy >= lo) | (doy <= hi)
        ]
        if same_season.empty:
            log.warning("reference window has none of the current days of the year; using all")
        else:
            reference = same_season
    if len(reference) > cfg.reference_rows:
        reference = reference.sample(cfg.reference_rows, random_state=cfg.seed)
    current = df[df[schema.DATE] >= start]
    result = detect_drift(reference, current, cfg.share_threshold, cfg.num_threshold)
    out = root / DRIFT_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text(result.html)
    body = {
        **result.summary(),
        "share_threshold": cfg.share_threshold,
        "mode": cfg.mode,
        "reference_window": "..".join(window),
        "seasonal": cfg.seasonal,
        "reference_source": source,
        "current_window": f"{start}..{last.isoformat()}",
    }
    _write_json(out / "drift.json", body)
    log.info("drift share %.2f (%s drifted)", result.share, ", ".join(result.drifted) or "none")
    record_drift(settings, body)
    return body


def record_drift(settings: Settings, body: dict[str, Any]) -> dict[str, Any]:
    """Store this cycle's drift result in `drift_results` (Monitor's drift history).

    The cycle is the newest observation day in the raw store (the day the cycle brought
    in); the run is the orchestrator's (``settings.run_id``) or ``cycle:<day>``. Keyed by both:
    re-running a cycle replaces its row.
    """
    from datetime import UTC, datetime

    from raincast.monitoring.drift import result_row

    engine = store.connect(settings.raw_store_url)
    span = store.date_range(engine)
    if span is None:
        raise ValueError("the raw store is empty: no cycle to record drift for")
    cycle_date = span[1]
    run_id = settings.run_id or f"cycle:{cycle_date.isoformat()}"
    row = result_row(body, cycle_date, run_id, datetime.now(UTC))
    store.upsert_drift_result(engine, row)
    return row


def train(settings: Settings, params: Params) -> dict[str, Any]:
    """Fit; log an MLflow run with lineage and the raw-row pyfunc model; register it as
    challenger."""
    import mlflow

    from raincast.models import tracking
    from raincast.models.metrics import classification_metrics
    from raincast.models.pyfunc import RainModel, pip_requirements, signature
    from raincast.models.registry import CHALLENGER
    from raincast.models.train import fit

    root = settings.project_dir
    train_df = pd.read_parquet(root / SPLIT_DIR / "train.parquet")
    val_df = pd.read_parquet(root / SPLIT_DIR / "validation.parquet")
    split_summary = json.loads((root / SPLIT_DIR / "windows.json").read_text())
    windows = split_summary["windows"]
    model = fit(train_df, val_df, params.train)
    # Validation metrics come from the early-stopped fit: the refit has seen these rows.
    val_metrics = classification_metrics(
        label_vector(val_df), model.validation_proba, model.threshold
    )

    model_dir = root / MODEL_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    booster_path = model_dir / "model.ubj"
    model.booster.save_model(booster_path)
    meta = {
        "threshold": model.threshold,
        "best_iteration": model.best_iteration,
        "rounds": model.rounds,
        "features": list(FEATURE_COLUMNS),
    }
    meta_path = model_dir / "meta.json"
    _write_json(meta_path, meta)

    client = tracking.configure(settings)
    slice_sources = {
        "train": sorted(set(train_df["source"].dropna())),
        "validation": sorted(set(val_df["source"].dropna())),
        "test": split_summary.get("sources", {}).get("test", []),
    }
    sources = sorted({s for found in slice_sources.values() for s in found})
    tags = {
        "git_sha": tracking.git_sha(root),
        "dvc_data_md5": tracking.file_md5(root / PROCESSED),
        "params_hash": params_hash(params.train),
        "data_window": f"{windows['train'][0]}..{windows['test'][1]}",
        "train_window": "..".join(windows["train"]),
        "validation_window": "..".join(windows["validation"]),
        "test_window": "..".join(windows["test"]),
        # Every slice the model is fitted, tuned and judged on (train, validation, test).
        "data_source": "+".join(sources) or "unknown",
        **{f"data_source_{k}": "+".join(v) or "unknown" for k, v in slice_sources.items()},
    }
    if settings.run_id:  # the orchestrator's run (Airflow run id)
        tags["orchestrator_run_id"] = settings.run_id
    with mlflow.start_run(run_name="train", tags=tags) as run:
        mlflow.log_params(
            {
                "seed": params.train.seed,
                "early_stopping_rounds": params.train.early_stopping_rounds,
                "refit_rounds_factor": params.train.refit_rounds_factor,
                **{f"xgb.{k}": v for k, v in params.train.xgb.items()},
                "train_rows": len(train_df),
                "validation_rows": len(val_df),
            }
        )
        mlflow.log_metrics({f"validation_{k}": v for k, v in val_metrics.items()})
        mlflow.log_metrics({"best_iteration": model.best_iteration, "rounds": model.rounds})
        drift_json = root / DRIFT_DIR / "drift.json"
        if drift_json.exists():  # the data this model was trained on, vs the champion's
            drift_body = json.loads(drift_json.read_text())
            mlflow.log_metric("drift_share", drift_body["drift_share"])
            mlflow.set_tag("drift_detected", str(drift_body["drift_detected"]).lower())
            mlflow.log_artifacts(str(root / DRIFT_DIR), artifact_path="drift")
        example = train_df.drop(columns=[schema.RAIN_TOMORROW, "source"]).head(5)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=RainModel(),
            artifacts={"booster": str(booster_path), "meta": str(meta_path)},
            code_paths=[str(Path(__file__).resolve().parents[1])],
            signature=signature(),
            pip_requirements=pip_requirements(),
            input_example=example,
            registered_model_name=settings.model_name,
        )
        version = str(info.registered_model_version)
        client.set_registered_model_alias(settings.model_name, CHALLENGER, version)
        client.set_model_version_tag(settings.model_name, version, "run_id", run.info.run_id)
    body = {
        "run_id": run.info.run_id,
        "model_version": version,
        "model_name": settings.model_name,
        **meta,
    }
    body.pop("features")
    _write_json(model_dir / "train.json", body)
    _write_json(root / METRICS_DIR / "validation.json", val_metrics)
    log.info(
        "trained version %s (best iteration %d, threshold %.3f)",
        version,
        model.best_iteration,
        model.threshold,
    )
    return body


def evaluate(settings: Settings) -> dict[str, Any]:
    """Score the trained model on the test slice; metrics and plots go to DVC files and
    to its MLflow run."""
    import mlflow
    import xgboost as xgb

    from raincast.models import tracking
    from raincast.models.metrics import classification_metrics, curves, per_station_auc
    from raincast.models.pyfunc import predict_frame

    root = settings.project_dir
    test = pd.read_parquet(root / SPLIT_DIR / "test.parquet")
    info = json.loads((root / MODEL_DIR / "train.json").read_text())
    booster = xgb.Booster()
    booster.load_model(root / MODEL_DIR / "model.ubj")
    y = label_vector(test)
    p = predict_frame(booster, test, info["threshold"])["probability"].to_numpy()
    metrics = classification_metrics(y, p, info["threshold"])
    stations = per_station_auc(test, y, p)
    if stations:
        vals = pd.Series(stations)
        metrics |= {
            "station_auc_min": float(vals.min()),
            "station_auc_median": float(vals.median()),
            "station_auc_max": float(vals.max()),
        }
    _write_json(root / METRICS_DIR / "test.json", metrics)
    _write_json(root / METRICS_DIR / "station_auc.json", stations)

    plots = curves(y, p)
    gain = booster.get_score(importance_type="total_gain")
    plots["importance"] = pd.DataFrame(
        {"feature": list(gain), "gain": list(gain.values())}
    ).sort_values("gain", ascending=False)
    plot_dir = root / PLOTS_DIR
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in plots.items():
        frame.to_csv(plot_dir / f"{name}.csv", index=False)

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
