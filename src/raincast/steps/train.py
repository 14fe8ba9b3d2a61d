"""train: fit the booster, log an MLflow run with its lineage, register it as challenger."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from raincast import catalog, schema
from raincast.features import FEATURE_COLUMNS, label_vector
from raincast.params import Params, params_hash
from raincast.settings import Settings

log = logging.getLogger(__name__)


def slice_sources(
    train: pd.DataFrame, validation: pd.DataFrame, split_summary: dict[str, Any]
) -> dict[str, list[str]]:
    """Where the rows of each slice came from (csv, openmeteo, synthetic...)."""
    return {
        "train": sorted(set(train["source"].dropna())),
        "validation": sorted(set(validation["source"].dropna())),
        "test": split_summary.get("sources", {}).get("test", []),
    }


def lineage_tags(
    windows: dict[str, list[str]],
    sources: dict[str, list[str]],
    params: Params,
    git_sha: str,
    data_md5: str,
    run_id: str,
) -> dict[str, str]:
    """The MLflow run tags that say what the model was built from."""
    every = sorted({s for found in sources.values() for s in found})
    tags = {
        "git_sha": git_sha,
        "dvc_data_md5": data_md5,
        "params_hash": params_hash(params.train),
        "data_window": f"{windows['train'][0]}..{windows['test'][1]}",
        "train_window": "..".join(windows["train"]),
        "validation_window": "..".join(windows["validation"]),
        "test_window": "..".join(windows["test"]),
        # Every slice the model is fitted, tuned and judged on (train, validation, test).
        "data_source": "+".join(every) or "unknown",
        **{f"data_source_{k}": "+".join(v) or "unknown" for k, v in sources.items()},
    }
    if run_id:  # the orchestrator's run (Airflow run id)
        tags["orchestrator_run_id"] = run_id
    return tags


def run(settings: Settings, params: Params) -> dict[str, Any]:
    """Fit on the train slice (early stopping and threshold on validation); save the booster
    and its metrics; log the MLflow run and register the version as challenger."""
    import mlflow

    from raincast.models import tracking
    from raincast.models.metrics import classification_metrics
    from raincast.models.pyfunc import RainModel, pip_requirements, signature
    from raincast.models.registry import CHALLENGER
    from raincast.models.train import fit

    root = settings.project_dir
    train_df = catalog.load_frame(root, catalog.TRAIN)
    val_df = catalog.load_frame(root, catalog.VALIDATION)
    split_summary = catalog.load_json(root, catalog.WINDOWS)
    windows = split_summary["windows"]
    model = fit(train_df, val_df, params.train)
    # Validation metrics come from the early-stopped fit: the refit has seen these rows.
    val_metrics = classification_metrics(
        label_vector(val_df), model.validation_proba, model.threshold
    )

    booster_path = catalog.BOOSTER.at(root)
    booster_path.parent.mkdir(parents=True, exist_ok=True)
    model.booster.save_model(booster_path)
    meta = {
        "threshold": model.threshold,
        "best_iteration": model.best_iteration,
        "rounds": model.rounds,
        "features": list(FEATURE_COLUMNS),
    }
    meta_path = catalog.save_json(root, catalog.MODEL_META, meta)

    client = tracking.configure(settings)
    tags = lineage_tags(
        windows,
        slice_sources(train_df, val_df, split_summary),
        params,
        git_sha=tracking.git_sha(root),
        data_md5=tracking.file_md5(catalog.PROCESSED.at(root)),
        run_id=settings.run_id,
    )
    with mlflow.start_run(run_name="train", tags=tags) as run:
        mlflow.log_params(
            {
                "seed": params.train.seed,
                "early_stopping_rounds": params.train.early_stopping_rounds,
                "refit_rounds_factor": params.train.refit_rounds_factor,
                **{f"xgb.{k}": v for k, v in params.train.xgb.model_dump().items()},
                "train_rows": len(train_df),
                "validation_rows": len(val_df),
            }
        )
        mlflow.log_metrics({f"validation_{k}": v for k, v in val_metrics.items()})
        mlflow.log_metrics({"best_iteration": model.best_iteration, "rounds": model.rounds})
        drift_json = catalog.DRIFT.at(root)
        if drift_json.exists():  # the data this model was trained on, vs the champion's
            drift_body = catalog.load_json(root, catalog.DRIFT)
            mlflow.log_metric("drift_share", drift_body["drift_share"])
            mlflow.set_tag("drift_detected", str(drift_body["drift_detected"]).lower())
            mlflow.log_artifacts(str(root / catalog.DRIFT_DIR), artifact_path="drift")
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
    catalog.save_json(root, catalog.TRAINED, body)
    catalog.save_json(root, catalog.VALIDATION_METRICS, val_metrics)
    log.info(
        "trained version %s (best iteration %d, threshold %.3f)",
        version,
        model.best_iteration,
        model.threshold,
    )
    return body
