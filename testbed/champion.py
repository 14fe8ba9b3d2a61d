"""A small real champion: synthetic labelled rows, a booster trained through the pipeline's
own train step into a project's MLflow registry, and the `champion` alias on it."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
from mlflow import MlflowClient

from raincast import catalog, schema
from raincast.data import store
from raincast.params import Params
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource
from raincast.steps import train as train_step
from testbed.params_file import LIBRARY_DEFAULTS, train_params, write_params


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
    """Train a small real model through the train step (the pipeline's own code path),
    register it, and (by default) make it the champion. Returns its version."""
    root = settings.project_dir
    rows = labelled_rows(stations, seed, date(2019, 1, 1), date(2020, 12, 31))
    train, val = rows[rows[schema.DATE] < "2020-07-01"], rows[rows[schema.DATE] >= "2020-07-01"]
    catalog.save_frame(root, catalog.PROCESSED, rows)
    windows = {"train": ["2019-01-01", "2020-06-30"], "validation": ["2020-07-01", "2020-12-30"]}
    windows["test"] = windows["validation"]
    if not (root / "params.yaml").exists():
        write_params(root, LIBRARY_DEFAULTS)
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
    small booster through the train step, and (by default) make it the champion."""
    split = settings.project_dir / catalog.TRAIN.path.parent
    split.mkdir(parents=True, exist_ok=True)
    train.to_parquet(split / "train.parquet", index=False)
    val.to_parquet(split / "validation.parquet", index=False)
    (split / "windows.json").write_text(json.dumps({"windows": windows}))
    params = Params(
        train=train_params(
            seed=seed,
            early_stopping_rounds=5,
            xgb={"n_estimators": n_estimators, "max_depth": 3, "n_jobs": 1},
        )
    )
    version = str(train_step.run(settings, params)["model_version"])
    if champion:
        client = MlflowClient(
            tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
        )
        client.set_registered_model_alias(settings.model_name, "champion", version)
    return version
