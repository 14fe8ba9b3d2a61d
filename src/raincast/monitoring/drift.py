"""Data drift between the champion's training window and the most recent days (Evidently
0.7, new API: `Report` + `DataDriftPreset` over `Dataset`s with an explicit
`DataDefinition`). Raw weatherAUS columns, not model-encoded features.

Evidently picks each column's test from its type and the sample size (K-S / chi-square
p-values for small samples, normed Wasserstein / Jensen-Shannon distances for large
ones); we keep that choice and read every column's verdict from the metric it reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd

from raincast import schema

NUMERICAL = list(schema.NUMERIC_COLUMNS)
CATEGORICAL = [schema.LOCATION, *schema.DIRECTION_COLUMNS, schema.RAIN_TODAY, schema.RAIN_TOMORROW]
COLUMNS = [*NUMERICAL, *CATEGORICAL]


@dataclass(frozen=True)
class DriftResult:
    share: float
    drifted: list[str]
    detected: bool
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    reference_rows: int = 0
    current_rows: int = 0
    html: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "drift_share": self.share,
            "drift_detected": self.detected,
            "drifted_columns": self.drifted,
            "n_drifted": len(self.drifted),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "columns": self.columns,
            "skipped_columns": self.skipped,
        }


def _drifted(method: str, value: float, threshold: float) -> bool:
    # p-value tests drift when p < threshold; distances drift when d >= threshold.
    return value < threshold if "p_value" in method else value >= threshold


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    share_threshold: float,
    num_threshold: float | None = None,
) -> DriftResult:
    """Per-column drift and the dataset verdict (drifted share >= ``share_threshold``)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    if reference.empty or current.empty:
        raise ValueError(
            f"drift needs rows on both sides (reference {len(reference)}, current {len(current)})"
        )
    # Columns empty on either side cannot drift-test (e.g. Sunshine at stations without
    # the instrument); they are reported as skipped, not silently dropped.
    cols = [
        c
        for c in COLUMNS
        if c in reference.columns
        and c in current.columns
        and reference[c].notna().any()
        and current[c].notna().any()
    ]
    skipped = [c for c in COLUMNS if c not in cols]
    definition = DataDefinition(
        numerical_columns=[c for c in NUMERICAL if c in cols],
        categorical_columns=[c for c in CATEGORICAL if c in cols],
    )

    def dataset(frame: pd.DataFrame) -> Any:
        data = frame[cols].copy()
        for c in definition.categorical_columns or []:
            data[c] = data[c].astype(object).where(data[c].notna(), None)
        return Dataset.from_pandas(data, data_definition=definition)

    preset = DataDriftPreset(columns=cols, drift_share=share_threshold, num_threshold=num_threshold)
    report = Report([preset], include_tests=False)
    snapshot = report.run(current_data=dataset(current), reference_data=dataset(reference))
    columns: dict[str, dict[str, Any]] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith("ValueDrift"):
            value = float(metric["value"])
            method, threshold = str(config["method"]), float(config["threshold"])
            columns[config["column"]] = {
                "method": method,
                "value": value,
                "threshold": threshold,
                "drifted": _drifted(method, value, threshold),
            }
    drifted = sorted(c for c, v in columns.items() if v["drifted"])
    share = len(drifted) / len(columns) if columns else 0.0
    return DriftResult(
        share=share,
        drifted=drifted,
        detected=share >= share_threshold,
        columns=columns,
        skipped=skipped,
        reference_rows=len(reference),
        current_rows=len(current),
        html=snapshot.get_html_str(as_iframe=False),
    )


def result_row(
    body: dict[str, Any], cycle_date: date, run_id: str, computed_at: datetime
) -> dict[str, Any]:
    """The `drift_results` row of one cycle from the drift stage's summary (drift.json)."""
    drifted = list(body["drifted_columns"])
    return {
        "cycle_date": cycle_date,
        "run_id": run_id,
        "computed_at": computed_at,
        "drift_share": float(body["drift_share"]),
        "n_drifted": len(drifted),
        "n_columns": len(body.get("columns") or {}),
        "drifted_columns": json.dumps(drifted),
        "dataset_drift": bool(body["drift_detected"]),
        "share_threshold": body.get("share_threshold"),
        "reference_window": body.get("reference_window"),
        "current_window": body.get("current_window"),
    }
