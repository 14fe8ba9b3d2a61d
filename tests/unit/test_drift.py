"""Drift: a shifted synthetic batch is detected and recorded, an unshifted one is not."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from raincast.models.registry import Decision, Scores, apply_drift, decision_tags
from raincast.monitoring.drift import COLUMNS, detect_drift
from raincast.sources.synthetic import SyntheticSource

STATIONS = ["Sydney", "Perth", "Darwin", "Hobart", "Cairns"]


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    src = SyntheticSource(seed=1, stations=STATIONS)
    reference = src.fetch(date(2018, 1, 1), date(2019, 12, 31))
    current = src.fetch(date(2020, 3, 1), date(2020, 5, 30))
    reference = reference[pd.to_datetime(reference["Date"]).dt.month.isin([3, 4, 5])]
    return reference, current


def test_unshifted_batch_is_not_drift(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference, current = frames
    result = detect_drift(reference, current, share_threshold=0.3, num_threshold=0.2)
    assert not result.detected
    assert result.share < 0.3
    assert set(result.columns) | set(result.skipped) == set(COLUMNS)
    assert "RainTomorrow" in result.skipped  # the generator leaves labels to the store
    assert "<html" in result.html.lower()


def test_shifted_batch_is_detected_and_names_the_columns(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    reference, current = frames
    shifted = current.assign(
        MinTemp=current["MinTemp"] + 9,
        MaxTemp=current["MaxTemp"] + 9,
        Temp9am=current["Temp9am"] + 9,
        Temp3pm=current["Temp3pm"] + 9,
        Humidity9am=(current["Humidity9am"] - 35).clip(lower=0),
        Humidity3pm=(current["Humidity3pm"] - 35).clip(lower=0),
        Pressure9am=current["Pressure9am"] + 15,
        Pressure3pm=current["Pressure3pm"] + 15,
    )
    result = detect_drift(reference, shifted, share_threshold=0.3, num_threshold=0.2)
    assert result.detected
    assert {"MinTemp", "MaxTemp", "Humidity3pm", "Pressure9am"} <= set(result.drifted)
    assert result.summary()["n_drifted"] == len(result.drifted)


def test_empty_side_is_a_clear_error(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference, current = frames
    with pytest.raises(ValueError, match="rows on both sides"):
        detect_drift(reference, current.iloc[0:0], share_threshold=0.3)


def test_drift_is_recorded_with_the_decision_and_can_block() -> None:
    drift = {"drift_share": 0.5, "drift_detected": True, "drifted_columns": ["MinTemp", "MaxTemp"]}
    win = Decision(True, ["F1 gain"])
    annotated = apply_drift(win, drift, "annotate")
    assert annotated.promote and "drift share 0.50 (MinTemp, MaxTemp drifted)" in annotated.reasons
    blocked = apply_drift(win, drift, "block")
    assert not blocked.promote and "blocked by drift.mode=block" in blocked.reasons[-1]
    calm = apply_drift(win, {**drift, "drift_detected": False}, "block")
    assert calm.promote
    tags = decision_tags(blocked, Scores("2", 0.7, 0.9, 0.3), None, drift)
    assert tags["promotion.drift_share"] == "0.5000"
    assert tags["promotion.drifted_columns"] == "MinTemp,MaxTemp"
    assert tags["promotion.drift_detected"] == "true"
