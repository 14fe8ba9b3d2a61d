"""Lineage tags name the provenance of every slice a model was fitted, tuned and judged on."""

from __future__ import annotations

from datetime import date

import pytest
from mlflow import MlflowClient
from testbed.params_file import train_params

from raincast import catalog, schema
from raincast.data import store
from raincast.params import Params, SplitParams
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource
from raincast.steps import split, train

STATIONS = ("Sydney", "Perth", "Darwin")


@pytest.mark.timeout(300)
def test_every_slice_is_tagged_with_its_sources(settings: Settings) -> None:
    rows = SyntheticSource(seed=4, stations=list(STATIONS)).fetch(
        date(2019, 1, 1), date(2020, 12, 31)
    )
    rows[schema.RAIN_TOMORROW] = store.next_day_labels(rows)
    rows = rows[rows[schema.RAIN_TOMORROW].notna()].reset_index(drop=True)
    # The most recent slice comes from another source than the rest (as after a mix
    # that an operator allowed): the test slice must not hide behind train + validation.
    rows["source"] = ["openmeteo" if d >= "2020-10-01" else "csv" for d in rows[schema.DATE]]
    processed = settings.project_dir / catalog.PROCESSED.path
    processed.parent.mkdir(parents=True)
    rows.to_parquet(processed, index=False)
    params = Params(
        split=SplitParams(test_start=date(2020, 10, 1), validation_start=date(2020, 7, 1)),
        train=train_params(early_stopping_rounds=5, xgb={"n_estimators": 10, "max_depth": 2}),
    )

    summary = split.run(settings, params)
    assert summary["sources"] == {"train": ["csv"], "validation": ["csv"], "test": ["openmeteo"]}
    written = catalog.load_json(settings.project_dir, catalog.WINDOWS)
    assert written["sources"] == summary["sources"]

    run_id = train.run(settings, params)["run_id"]
    tags = MlflowClient(tracking_uri=settings.tracking_uri).get_run(run_id).data.tags
    assert tags["data_source"] == "csv+openmeteo"
    assert tags["data_source_train"] == "csv"
    assert tags["data_source_validation"] == "csv"
    assert tags["data_source_test"] == "openmeteo"


def test_the_split_of_a_processed_file_without_sources_says_so(settings: Settings) -> None:
    rows = SyntheticSource(seed=4, stations=list(STATIONS)).fetch(
        date(2019, 1, 1), date(2020, 12, 31)
    )
    rows[schema.RAIN_TOMORROW] = store.next_day_labels(rows)
    processed = settings.project_dir / catalog.PROCESSED.path
    processed.parent.mkdir(parents=True)
    rows[rows[schema.RAIN_TOMORROW].notna()].to_parquet(processed, index=False)
    params = Params(split=SplitParams(test_days=90, validation_days=90))
    assert split.run(settings, params)["sources"] == {
        "train": [],
        "validation": [],
        "test": [],
    }
