"""The `/predict_batch` path without pandas: `validate_columns` keeps the API's input rules
and `build_matrix_columns` gives exactly the matrix `build_features` gives."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pytest

from raincast.features import FEATURE_COLUMNS, build_features, build_matrix_columns
from raincast.serving.schemas import InputError, validate_columns
from tests.helpers import labelled_rows

STATIONS = ("Sydney", "Perth", "Darwin", "Hobart", "AliceSprings", "Albany")


def _columns(n: int) -> dict[str, list[Any]]:
    frame = labelled_rows(STATIONS, 11, date(2020, 1, 1), date(2021, 12, 31)).head(n)
    records = json.loads(frame.drop(columns=["RainTomorrow", "source"]).to_json(orient="records"))
    return {k: [r.get(k) for r in records] for k in records[0]}


def _frame(columns: dict[str, list[Any]]) -> pd.DataFrame:
    """The validated batch as raw weatherAUS rows (``Date`` as YYYY-MM-DD strings)."""
    valid = validate_columns(columns)
    valid["Date"] = valid["Date"].dt.strftime("%Y-%m-%d")
    return pd.DataFrame(valid)


def _as_matrix(features: pd.DataFrame) -> np.ndarray:
    cols = []
    for name in FEATURE_COLUMNS:
        col = features[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            codes = col.cat.codes.to_numpy().astype(np.float64)
            codes[codes < 0] = np.nan
            cols.append(codes)
        else:
            cols.append(col.to_numpy(dtype=np.float64))
    return np.column_stack(cols)


def test_columnar_matrix_equals_build_features() -> None:
    columns = _columns(3000)
    columns["WindDir3pm"][:50] = [None] * 50
    columns["Humidity3pm"][50:60] = [None] * 10
    columns["Rainfall"][60] = 0  # an int, as JSON may send it
    del columns["Sunshine"]  # absent columns are all-missing
    expected = _as_matrix(build_features(_frame(columns)))
    got = build_matrix_columns(validate_columns(columns))
    assert got.shape == (3000, len(FEATURE_COLUMNS))
    np.testing.assert_array_equal(got, expected)


def test_numbers_as_strings_are_accepted_as_before() -> None:
    columns = {"Date": ["2021-01-01"] * 2, "Location": ["Sydney"] * 2, "MinTemp": ["12.5", 3]}
    assert list(validate_columns(columns)["MinTemp"]) == [12.5, 3.0]


@pytest.mark.parametrize(
    ("column", "values", "row"),
    [
        ("MinTemp", [1.0, "warm"], 1),
        ("MinTemp", [1.0, 99.0], 1),
        ("MinTemp", [[1], 2.0], 0),
        ("Location", ["Sydney", "Narnia"], 1),
        ("Location", ["Sydney", None], 1),
        ("Location", [{"a": 1}, "Sydney"], 0),
        ("WindGustDir", ["N", "NORTH"], 1),
        ("WindGustDir", [["N"], None], 0),
        ("RainToday", ["Yes", "maybe"], 1),
        ("Date", ["2021-01-01", "01/02/2021"], 1),
    ],
)
def test_bad_values_name_column_and_row(column: str, values: list[Any], row: int) -> None:
    columns: dict[str, list[Any]] = {"Date": ["2021-01-01"] * 2, "Location": ["Sydney"] * 2}
    columns[column] = values
    with pytest.raises(InputError) as err:
        validate_columns(columns)
    assert err.value.errors[0]["loc"] == ["columns", column, row]


def test_missing_categories_are_fine_and_missing_in_the_matrix() -> None:
    columns = {
        "Date": ["2021-01-01", "2021-07-01"],
        "Location": ["Sydney", "Perth"],
        "WindGustDir": [None, "SSE"],
        "RainToday": [None, "No"],
    }
    matrix = build_matrix_columns(validate_columns(columns))
    gust = matrix[:, FEATURE_COLUMNS.index("WindGustDir")]
    assert np.isnan(gust[0]) and not np.isnan(gust[1])
