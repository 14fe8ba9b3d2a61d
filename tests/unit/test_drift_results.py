"""Every cycle's drift result goes into `drift_results`; a rerun replaces its row."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from raincast.data import store
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource
from raincast.steps.drift import record_drift

BODY = {
    "drift_share": 0.25,
    "drift_detected": False,
    "drifted_columns": ["MinTemp", "Sunshine"],
    "columns": {c: {} for c in ("MinTemp", "Sunshine", "MaxTemp", "Rainfall")},
    "share_threshold": 0.3,
    "reference_window": "2019-01-01..2020-06-30",
    "current_window": "2021-02-01..2021-03-02",
}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("RAINCAST_RUN_ID", raising=False)
    s = Settings(project_dir=tmp_path, home=tmp_path / "var")
    rows = SyntheticSource(seed=1, stations=["Sydney", "Perth"]).fetch(
        date(2021, 3, 1), date(2021, 3, 3)
    )
    store.upsert_observations(store.connect(s.raw_store_url), rows, "synthetic", "load")
    return s


def test_a_cycle_records_its_drift_result(settings: Settings) -> None:
    row = record_drift(settings, BODY)
    (stored,) = store.read_drift_results(store.connect(settings.raw_store_url)).to_dict("records")
    assert stored["cycle_date"] == "2021-03-03"  # the newest day in the store
    assert stored["run_id"] == row["run_id"] == "cycle:2021-03-03"
    assert (stored["drift_share"], stored["n_drifted"], stored["n_columns"]) == (0.25, 2, 4)
    assert json.loads(stored["drifted_columns"]) == ["MinTemp", "Sunshine"]
    assert not stored["dataset_drift"]
    assert stored["current_window"] == "2021-02-01..2021-03-02"


def test_rerunning_a_cycle_replaces_its_row(settings: Settings) -> None:
    engine = store.connect(settings.raw_store_url)
    record_drift(settings, BODY)
    record_drift(settings, {**BODY, "drift_share": 0.5, "drift_detected": True})
    (only,) = store.read_drift_results(engine).to_dict("records")
    assert only["drift_share"] == 0.5 and only["dataset_drift"]
    # Another orchestrator run of the same day is another row; its rerun is not.
    scheduled = settings.model_copy(update={"run_id": "scheduled__2021-03-03"})
    record_drift(scheduled, BODY)
    record_drift(scheduled, BODY)
    assert list(store.read_drift_results(engine)["run_id"]) == [
        "cycle:2021-03-03",
        "scheduled__2021-03-03",
    ]


def test_no_cycle_without_observations(tmp_path: Path) -> None:
    empty = Settings(project_dir=tmp_path, home=tmp_path / "var")
    with pytest.raises(ValueError, match="store is empty"):
        record_drift(empty, BODY)
    assert store.count_rows(store.connect(empty.raw_store_url), store.drift_results) == 0
