"""split: temporal train / validation / test slices; learn on the past, judge on the newest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pandas as pd

from raincast import catalog, schema
from raincast.params import Params, SplitParams
from raincast.settings import Settings


@dataclass(frozen=True)
class SplitWindows:
    train: tuple[str, str]
    validation: tuple[str, str]
    test: tuple[str, str]

    def as_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.__dict__.items()}


def split_by_time(
    labelled: pd.DataFrame, params: SplitParams
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, SplitWindows]:
    """Split labelled rows by date: train < validation_start <= validation < test_start <= test.

    Absolute dates in ``params`` win; otherwise the test slice is the last ``test_days``
    days of the data and validation the ``validation_days`` before it.
    """
    if labelled.empty:
        raise ValueError("no labelled rows to split")
    dates = pd.to_datetime(labelled[schema.DATE]).dt.date
    last = max(dates)
    test_start = params.test_start or last - timedelta(days=params.test_days - 1)
    val_start = params.validation_start or test_start - timedelta(days=params.validation_days)
    if not val_start < test_start:
        raise ValueError(f"validation_start {val_start} must be before test_start {test_start}")
    train = labelled[dates < val_start]
    val = labelled[(dates >= val_start) & (dates < test_start)]
    test = labelled[dates >= test_start]
    for name, part in (("validation", val), ("test", test)):
        if part.empty:
            raise ValueError(f"{name} slice is empty; check split params against the data")
    if len(train) < params.min_train_rows:
        raise ValueError(
            f"train slice has {len(train)} rows, fewer than min_train_rows={params.min_train_rows}"
        )

    def window(part: pd.DataFrame) -> tuple[str, str]:
        return (str(part[schema.DATE].min()), str(part[schema.DATE].max()))

    windows = SplitWindows(window(train), window(val), window(test))
    return (
        train.reset_index(drop=True),
        val.reset_index(drop=True),
        test.reset_index(drop=True),
        windows,
    )


def summary(
    train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame, windows: SplitWindows
) -> dict[str, Any]:
    """The slices' windows, row counts and sources (for the lineage tags of the model)."""
    parts = (("train", train), ("validation", validation), ("test", test))
    return {
        "windows": windows.as_dict(),
        "rows": {name: len(part) for name, part in parts},
        "sources": {
            name: sorted(set(part["source"].dropna())) if "source" in part else []
            for name, part in parts
        },
    }


def run(settings: Settings, params: Params) -> dict[str, Any]:
    """Split `catalog.PROCESSED` into the train, validation and test slices."""
    root = settings.project_dir
    train, validation, test, windows = split_by_time(
        catalog.load_frame(root, catalog.PROCESSED), params.split
    )
    for artifact, part in (
        (catalog.TRAIN, train),
        (catalog.VALIDATION, validation),
        (catalog.TEST, test),
    ):
        catalog.save_frame(root, artifact, part)
    body = summary(train, validation, test, windows)
    catalog.save_json(root, catalog.WINDOWS, body)
    return body
