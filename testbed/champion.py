"""A small real champion: synthetic labelled rows, a booster trained through the pipeline's
own `stages.train` into a project's MLflow registry, and the `champion` alias on it."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
from mlflow import MlflowClient

from raincast import schema
from raincast.data import store
from raincast.params import Params, TrainParams
from raincast.pipeline import stages
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource


def labelled_rows(stations: tuple[str, ...], seed: int, start: date, end: date):  # type: ignore[no-untyped-def]
    rows = SyntheticSource(seed=seed, stations=list(stations)).fetch(start, end)
    rows[schema.RAIN_TOMORROW] = store.next_day_labels(rows)
    return rows[rows[schema.RAIN_TOMORROW].notna()].assign(source="synthetic")


def train_small_model(
    settings: Settings,
    stations: tuple[str, ...],
    seed: int = 3,
    n_estimators: int = 20,
    champion: bool = True,
) -> str:
    """Train a small real model through `stages.train` (the pipeline's own code path),
    register it, and (by default) make it the champion. Returns its version."""
    root = settings.project_dir
    rows = labelled_rows(stations, seed, date(2019, 1, 1), date(2020, 12, 31))
    train, val = rows[rows[schema.DATE] < "2020-07-01"], rows[rows[schema.DATE] >= "2020-07-01"]
    (root / stages.PROCESSED).parent.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(root / stages.PROCESSED, index=False)
    windows = {"train": ["2019-01-01", "2020-06-30"], "validation": ["2020-07-01", "2020-12-30"]}
    windows["test"] = windows["validation"]
    if not (root / "params.yaml").exists():
        (root / "params.yaml").write_text("{}\n")
    return train_on_split(settings, train, val, windows, seed, n_estimators, champion)


def train_on_split(
    settings: Settings,
    train: pd.DataFrame,
    val: pd.DataFrame,
    windows: dict[str, list[str]],
    seed: int,
    n_estimators: int,
    champion: bool = True,
) -> str:
    """Write the split stage's outputs (train/validation parquet, windows.json), train a
    small booster through `stages.train`, and (by default) make it the champion."""
    split = settings.project_dir / stages.SPLIT_DIR
    split.mkdir(parents=True, exist_ok=True)
    train.to_parquet(split / "train.parquet", index=False)
    val.to_parquet(split / "validation.parquet", index=False)
    (split / "windows.json").write_text(json.dumps({"windows": windows}))
    params = Params(
        train=TrainParams(
            seed=seed,
            early_stopping_rounds=5,
            xgb={"n_estimators": n_estimators, "max_depth": 3, "n_jobs": 1},
        )
    )
    version = str(stages.train(settings, params)["model_version"])
    if champion:
        client = MlflowClient(
            tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
        )
        client.set_registered_model_alias(settings.model_name, "champion", version)
    return version
