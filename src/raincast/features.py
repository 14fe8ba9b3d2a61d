"""The one feature function, shared by training, batch and online prediction.

Features come from a single raw weatherAUS row (no lags), so the API can score one
observation exactly as training saw it. Categoricals use fixed category lists so codes
never depend on which rows happen to be in a batch; missing values stay NaN for XGBoost.

The model sees one float matrix (`model_matrix`): measurements as they are, categoricals
as their integer codes, declared categorical through ``FEATURE_TYPES``. XGBoost then keeps
no category encoder inside the model (it needs none: the codes are fixed here), which is
what lets Treelite compile it for serving (`raincast.serving.compiled`).
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from raincast import schema

_LOCATION_TYPE = pd.CategoricalDtype(list(schema.station_names()))
_COMPASS_TYPE = pd.CategoricalDtype(list(schema.COMPASS_POINTS))
_STATE_TYPE = pd.CategoricalDtype(sorted({s.state for s in schema.stations().values()}))

CATEGORICAL_FEATURES: tuple[str, ...] = (schema.LOCATION, "State", *schema.DIRECTION_COLUMNS)
DERIVED_FEATURES: tuple[str, ...] = (
    "DaySin", "DayCos", "Latitude", "Longitude", "RainTodayFlag", "TempRange",
    "HumidityChange", "PressureChange", "TempChange", "CloudChange", "WindChange",
    "DewDepression3pm",
)  # fmt: skip
FEATURE_COLUMNS: tuple[str, ...] = (
    *schema.NUMERIC_COLUMNS, *CATEGORICAL_FEATURES, *DERIVED_FEATURES,
)  # fmt: skip
#: XGBoost feature types of the model matrix: "c" (categorical, integer codes) or "q".
FEATURE_TYPES: tuple[str, ...] = tuple(
    "c" if c in CATEGORICAL_FEATURES else "q" for c in FEATURE_COLUMNS
)


class FeatureError(ValueError):
    """Raw rows cannot be turned into features (a required field is missing or unknown)."""


def build_features(raw: pd.DataFrame) -> pd.DataFrame:
    """Model matrix (``FEATURE_COLUMNS``) from raw weatherAUS rows.

    ``Date`` and ``Location`` are required; every measurement may be missing (absent
    columns are treated as all-missing). ``RainTomorrow`` is never read.
    """
    for col in (schema.DATE, schema.LOCATION):
        if col not in raw.columns or raw[col].isna().any():
            raise FeatureError(f"{col} is required for every row")
    unknown = sorted(set(raw[schema.LOCATION]) - set(_LOCATION_TYPE.categories))
    if unknown:
        raise FeatureError(f"unknown station(s): {unknown[:5]}")
    dates = pd.to_datetime(raw[schema.DATE], format="%Y-%m-%d", errors="coerce")
    if dates.isna().any():
        raise FeatureError("Date must be an ISO date (YYYY-MM-DD)")

    x = pd.DataFrame(index=raw.index)
    for col in schema.NUMERIC_COLUMNS:
        x[col] = (
            pd.to_numeric(raw[col], errors="coerce").astype("float64")
            if col in raw.columns
            else np.nan
        )
    stations = schema.stations()
    x[schema.LOCATION] = raw[schema.LOCATION].astype(_LOCATION_TYPE)
    x["State"] = raw[schema.LOCATION].map(lambda s: stations[s].state).astype(_STATE_TYPE)
    for col in schema.DIRECTION_COLUMNS:
        values = raw[col] if col in raw.columns else pd.Series(None, index=raw.index)
        x[col] = values.astype(object).where(values.notna(), None).astype(_COMPASS_TYPE)

    # Southern-hemisphere seasons as a smooth cycle, so 31 Dec and 1 Jan are neighbours.
    angle = 2 * np.pi * dates.dt.dayofyear.to_numpy() / 365.25
    x["DaySin"], x["DayCos"] = np.sin(angle), np.cos(angle)
    x["Latitude"] = raw[schema.LOCATION].map(lambda s: stations[s].latitude).astype("float64")
    x["Longitude"] = raw[schema.LOCATION].map(lambda s: stations[s].longitude).astype("float64")
    x["RainTodayFlag"] = (x[schema.RAINFALL] > schema.RAIN_THRESHOLD_MM).astype("float64")
    x.loc[x[schema.RAINFALL].isna(), "RainTodayFlag"] = np.nan
    x["TempRange"] = x["MaxTemp"] - x["MinTemp"]
    x["HumidityChange"] = x["Humidity3pm"] - x["Humidity9am"]
    x["PressureChange"] = x["Pressure3pm"] - x["Pressure9am"]
    x["TempChange"] = x["Temp3pm"] - x["Temp9am"]
    x["CloudChange"] = x["Cloud3pm"] - x["Cloud9am"]
    x["WindChange"] = x["WindSpeed3pm"] - x["WindSpeed9am"]
    # Magnus approximation of the 3 pm dew-point depression: small = air near saturation.
    t, rh = x["Temp3pm"], x["Humidity3pm"].clip(lower=1.0)
    gamma = np.log(rh / 100.0) + 17.62 * t / (243.12 + t)
    x["DewDepression3pm"] = t - 243.12 * gamma / (17.62 - gamma)
    return x.loc[:, list(FEATURE_COLUMNS)]


def model_matrix(raw: pd.DataFrame) -> np.ndarray:
    """``build_features`` as the float64 matrix the model is trained and scored on:
    categoricals as their category codes, NaN for missing (what `build_matrix` builds
    row by row for the API)."""
    x = build_features(raw)
    for col in CATEGORICAL_FEATURES:
        codes = x[col].cat.codes.to_numpy()
        x[col] = np.where(codes < 0, np.nan, codes.astype("float64"))
    return x.to_numpy(dtype="float64")


def label_vector(raw: pd.DataFrame) -> np.ndarray:
    """1 for RainTomorrow == 'Yes', 0 for 'No'; rows must be labelled."""
    labels = raw[schema.RAIN_TOMORROW]
    if labels.isna().any():
        raise ValueError("unlabelled rows passed where labels are required")
    return (labels == "Yes").to_numpy(dtype="int8")


_CODES = {
    schema.LOCATION: {c: float(i) for i, c in enumerate(_LOCATION_TYPE.categories)},
    "State": {c: float(i) for i, c in enumerate(_STATE_TYPE.categories)},
    **{
        d: {c: float(i) for i, c in enumerate(_COMPASS_TYPE.categories)}
        for d in schema.DIRECTION_COLUMNS
    },
}


_COL = {name: i for i, name in enumerate(FEATURE_COLUMNS)}
#: Per location code: its state's code, latitude and longitude.
_BY_LOCATION = np.array(
    [
        (_CODES["State"][st.state], st.latitude, st.longitude)
        for st in (schema.stations()[name] for name in _CODES[schema.LOCATION])
    ],
    dtype=np.float64,
)
_DIFFERENCES = {
    "TempRange": ("MaxTemp", "MinTemp"),
    "HumidityChange": ("Humidity3pm", "Humidity9am"),
    "PressureChange": ("Pressure3pm", "Pressure9am"),
    "TempChange": ("Temp3pm", "Temp9am"),
    "CloudChange": ("Cloud3pm", "Cloud9am"),
    "WindChange": ("WindSpeed3pm", "WindSpeed9am"),
}


def _derive(x: np.ndarray, day_of_year: np.ndarray) -> np.ndarray:
    """Fill the derived columns of a matrix whose raw numeric and code columns are set."""
    x[:, [_COL["State"], _COL["Latitude"], _COL["Longitude"]]] = _BY_LOCATION[
        x[:, _COL[schema.LOCATION]].astype(int)
    ]
    angle = 2 * np.pi * day_of_year / 365.25
    x[:, _COL["DaySin"]], x[:, _COL["DayCos"]] = np.sin(angle), np.cos(angle)
    rain = x[:, _COL[schema.RAINFALL]]
    x[:, _COL["RainTodayFlag"]] = np.where(
        np.isnan(rain), np.nan, (rain > schema.RAIN_THRESHOLD_MM) * 1.0
    )
    for out, (a, b) in _DIFFERENCES.items():
        x[:, _COL[out]] = x[:, _COL[a]] - x[:, _COL[b]]
    t, rh = x[:, _COL["Temp3pm"]], np.fmax(x[:, _COL["Humidity3pm"]], 1.0)
    rh[np.isnan(x[:, _COL["Humidity3pm"]])] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = np.log(rh / 100.0) + 17.62 * t / (243.12 + t)
        x[:, _COL["DewDepression3pm"]] = t - 243.12 * gamma / (17.62 - gamma)
    return x


#: sin/cos of the season angle per day of year (1..366), computed once the way `_derive`
#: computes them, so the row-by-row path below gives bit-identical values.
_DAY_OF_YEAR = np.arange(367, dtype=np.float64)
_SEASON = [
    (float(s), float(c))
    for s, c in zip(
        np.sin(2 * np.pi * _DAY_OF_YEAR / 365.25),
        np.cos(2 * np.pi * _DAY_OF_YEAR / 365.25),
        strict=True,
    )
]
_NAN = float("nan")
_NUMERIC_AT = tuple((c, _COL[c]) for c in schema.NUMERIC_COLUMNS)
_DIRECTION_AT = tuple((c, _COL[c], _CODES[c]) for c in schema.DIRECTION_COLUMNS)
_DIFFERENCE_AT = tuple((_COL[out], _COL[a], _COL[b]) for out, (a, b) in _DIFFERENCES.items())
_LOCATION_AT, _STATE_AT = _COL[schema.LOCATION], _COL["State"]
_LATITUDE_AT, _LONGITUDE_AT = _COL["Latitude"], _COL["Longitude"]
_SIN_AT, _COS_AT, _RAIN_FLAG_AT = _COL["DaySin"], _COL["DayCos"], _COL["RainTodayFlag"]
_RAIN_AT, _T3_AT, _H3_AT = _COL[schema.RAINFALL], _COL["Temp3pm"], _COL["Humidity3pm"]
_DEW_AT = _COL["DewDepression3pm"]
_BY_LOCATION_ROWS = [tuple(float(v) for v in row) for row in _BY_LOCATION]


def _day_of_year(day: object) -> int:
    if isinstance(day, str):
        try:
            day = date.fromisoformat(day)
        except ValueError:
            day = pd.Timestamp(day)
    return int(day.timetuple().tm_yday)  # type: ignore[attr-defined]


def build_row(record: dict[str, object]) -> list[float]:
    """One validated raw row as its model-matrix row (``FEATURE_COLUMNS`` order, NaN for
    missing), in plain Python: a one-row request pays no numpy call per column.

    Value-identical to ``build_features`` (tests/model/test_parity.py, on real rows)."""
    x = [_NAN] * len(FEATURE_COLUMNS)
    get = record.get
    for col, at in _NUMERIC_AT:
        v = get(col)
        if v is not None:
            x[at] = float(v)  # type: ignore[arg-type]
    location = _CODES[schema.LOCATION][record[schema.LOCATION]]
    x[_LOCATION_AT] = location
    x[_STATE_AT], x[_LATITUDE_AT], x[_LONGITUDE_AT] = _BY_LOCATION_ROWS[int(location)]
    for col, at, codes in _DIRECTION_AT:
        v = get(col)
        if v is not None and v == v:  # None and NaN are missing
            x[at] = codes[v]
    x[_SIN_AT], x[_COS_AT] = _SEASON[_day_of_year(record[schema.DATE])]
    rain = x[_RAIN_AT]
    if rain == rain:
        x[_RAIN_FLAG_AT] = 1.0 if rain > schema.RAIN_THRESHOLD_MM else 0.0
    for out, a, b in _DIFFERENCE_AT:
        x[out] = x[a] - x[b]
    t, humidity = x[_T3_AT], x[_H3_AT]
    if t == t and humidity == humidity:
        try:
            gamma = math.log(max(humidity, 1.0) / 100.0) + 17.62 * t / (243.12 + t)
            x[_DEW_AT] = t - 243.12 * gamma / (17.62 - gamma)
        except (ZeroDivisionError, ValueError):  # outside validated ranges: numpy's answer
            x[_DEW_AT] = float(_derive(np.array([x]), np.array([1.0]))[0, _DEW_AT])
    return x


def build_matrix(records: list[dict[str, object]]) -> np.ndarray:
    """``build_features`` without pandas, for small online requests: float64 rows in
    ``FEATURE_COLUMNS`` order, categoricals as their category codes (what XGBoost sees),
    NaN for missing. Rows must already be valid (the API validates them first).

    Must stay value-identical to ``build_features`` (tests/model/test_parity.py checks it
    on thousands of real rows and on the predictions to 1e-6).
    """
    return np.array([build_row(r) for r in records], dtype=np.float64).reshape(
        len(records), len(FEATURE_COLUMNS)
    )


def _codes(values: Any, codes: dict[str, float]) -> np.ndarray:
    """Category codes of validated values; NaN for missing (None)."""
    get = codes.get
    return np.fromiter((get(v, np.nan) for v in values), dtype=np.float64, count=len(values))


def build_matrix_columns(columns: dict[str, Any]) -> np.ndarray:
    """The columnar twin of ``build_matrix``, for large validated batches
    (`raincast.serving.schemas.validate_columns`: column name -> values, ``Date`` a
    datetime Series): the same matrix, built column by column in numpy.

    Must stay value-identical to ``build_features`` (tests/serving/test_matrix.py).
    """
    dates: pd.Series = columns[schema.DATE]
    x = np.full((len(dates), len(FEATURE_COLUMNS)), np.nan)
    for col in schema.NUMERIC_COLUMNS:
        if col in columns:
            x[:, _COL[col]] = columns[col]
    x[:, _COL[schema.LOCATION]] = _codes(columns[schema.LOCATION], _CODES[schema.LOCATION])
    for col in schema.DIRECTION_COLUMNS:
        if col in columns:
            x[:, _COL[col]] = _codes(columns[col], _CODES[col])
    return _derive(x, dates.dt.dayofyear.to_numpy())
