"""The feature function: fixed columns and categories, missing-value tolerance, strict keys."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from raincast import schema
from raincast.features import (
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    FeatureError,
    build_features,
    label_vector,
)
from tests.conftest import RawRows


@pytest.fixture
def rows(raw_rows: RawRows) -> pd.DataFrame:
    return raw_rows(n_days=5)


def test_columns_and_dtypes(rows: pd.DataFrame) -> None:
    x = build_features(rows)
    assert list(x.columns) == list(FEATURE_COLUMNS)
    assert x.index.equals(rows.index)
    for col in CATEGORICAL_FEATURES:
        assert isinstance(x[col].dtype, pd.CategoricalDtype), col
    for col in set(FEATURE_COLUMNS) - set(CATEGORICAL_FEATURES):
        assert x[col].dtype == "float64", col
    assert list(x["Location"].cat.categories) == list(schema.station_names())
    assert list(x["WindDir3pm"].cat.categories) == list(schema.COMPASS_POINTS)
    assert set(x["State"].cat.categories) == {s.state for s in schema.stations().values()}
    # Values survive the conversion: no category silently became NaN.
    assert (x["Location"].astype(str) == rows[schema.LOCATION]).all()
    assert x["WindDir3pm"].isna().sum() == rows["WindDir3pm"].isna().sum()


def test_categories_do_not_depend_on_the_batch(raw_rows: RawRows) -> None:
    all_stations = build_features(raw_rows(n_days=1, stations=schema.station_names()))
    one_station = build_features(raw_rows(n_days=1, stations=["Uluru"]))
    for col in CATEGORICAL_FEATURES:
        assert list(one_station[col].cat.categories) == list(all_stations[col].cat.categories)
    uluru = all_stations[all_stations["Location"] == "Uluru"]
    assert one_station["Location"].cat.codes.tolist() == uluru["Location"].cat.codes.tolist()
    assert one_station["State"].cat.codes.tolist() == uluru["State"].cat.codes.tolist()


def test_missing_measurement_columns_become_nan(rows: pd.DataFrame) -> None:
    minimal = rows[[schema.DATE, schema.LOCATION]]
    x = build_features(minimal)
    assert list(x.columns) == list(FEATURE_COLUMNS)
    for col in (*schema.NUMERIC_COLUMNS, "TempRange", "RainTodayFlag", "DewDepression3pm"):
        assert x[col].isna().all(), col
    for col in schema.DIRECTION_COLUMNS:
        assert x[col].isna().all(), col
    assert x["Latitude"].notna().all() and x["DaySin"].notna().all()


def test_missing_cells_stay_nan(rows: pd.DataFrame) -> None:
    holes = rows.copy()
    holes.loc[0, ["Humidity3pm", "WindDir9am"]] = [np.nan, None]
    x = build_features(holes)
    assert np.isnan(x.loc[0, "Humidity3pm"]) and np.isnan(x.loc[0, "HumidityChange"])
    assert pd.isna(x.loc[0, "WindDir9am"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.drop(columns=[schema.LOCATION]), "Location is required"),
        (lambda df: df.assign(Location=[None, *df[schema.LOCATION].iloc[1:]]), "Location is"),
        (lambda df: df.drop(columns=[schema.DATE]), "Date is required"),
        (lambda df: df.assign(Location=["Gotham", *df[schema.LOCATION].iloc[1:]]), "Gotham"),
        (lambda df: df.assign(Date=["31/02/2020", *df[schema.DATE].iloc[1:]]), "ISO date"),
        (lambda df: df.assign(Date=["yesterday", *df[schema.DATE].iloc[1:]]), "ISO date"),
    ],
    ids=["no-location", "null-location", "no-date", "unknown-station", "bad-date", "text-date"],
)
@pytest.mark.filterwarnings("ignore:Could not infer format")
def test_bad_keys_raise_feature_error(
    rows: pd.DataFrame, mutate: Callable[[pd.DataFrame], pd.DataFrame], message: str
) -> None:
    with pytest.raises(FeatureError, match=message):
        build_features(mutate(rows))


def test_feature_error_is_a_value_error() -> None:
    assert issubclass(FeatureError, ValueError)


def test_rain_tomorrow_is_never_read(rows: pd.DataFrame) -> None:
    yes = rows.assign(RainTomorrow="Yes")
    no = rows.assign(RainTomorrow="No")
    without = rows.drop(columns=[schema.RAIN_TOMORROW])
    expected = build_features(yes)
    pd.testing.assert_frame_equal(build_features(no), expected)
    pd.testing.assert_frame_equal(build_features(without), expected)
    assert "RainTomorrow" not in expected.columns


def _hand_made(**values: object) -> pd.DataFrame:
    row = {
        schema.DATE: "2021-01-01",
        schema.LOCATION: "Sydney",
        "MinTemp": 18.0,
        "MaxTemp": 27.5,
        "Rainfall": 1.2,
        "Humidity9am": 70.0,
        "Humidity3pm": 50.0,
        "Pressure9am": 1015.0,
        "Pressure3pm": 1011.5,
        "Temp9am": 21.0,
        "Temp3pm": 20.0,
        "Cloud9am": 2.0,
        "Cloud3pm": 7.0,
        "WindSpeed9am": 9.0,
        "WindSpeed3pm": 24.0,
        "WindDir3pm": "SSE",
        **values,
    }
    return pd.DataFrame([row])


def test_derived_features_on_a_hand_made_row() -> None:
    x = build_features(_hand_made()).iloc[0]
    sydney = schema.stations()["Sydney"]
    angle = 2 * math.pi * 1 / 365.25  # 1 January is day 1
    assert x["DaySin"] == pytest.approx(math.sin(angle))
    assert x["DayCos"] == pytest.approx(math.cos(angle))
    assert x["Latitude"] == pytest.approx(sydney.latitude)
    assert x["Longitude"] == pytest.approx(sydney.longitude)
    assert x["State"] == sydney.state == "NSW"
    assert x["RainTodayFlag"] == 1.0
    assert x["TempRange"] == pytest.approx(9.5)
    assert x["HumidityChange"] == pytest.approx(-20.0)
    assert x["PressureChange"] == pytest.approx(-3.5)
    assert x["TempChange"] == pytest.approx(-1.0)
    assert x["CloudChange"] == pytest.approx(5.0)
    assert x["WindChange"] == pytest.approx(15.0)
    # 20 degC at 50 % relative humidity has a dew point of about 9.3 degC.
    assert x["DewDepression3pm"] == pytest.approx(20.0 - 9.26, abs=0.05)
    assert x["WindDir3pm"] == "SSE"


def test_dew_depression_vanishes_at_saturation() -> None:
    x = build_features(_hand_made(Humidity3pm=100.0, Temp3pm=15.0)).iloc[0]
    assert x["DewDepression3pm"] == pytest.approx(0.0, abs=1e-9)
    dry = build_features(_hand_made(Humidity3pm=0.0)).iloc[0]  # clipped to 1 %: finite
    assert np.isfinite(dry["DewDepression3pm"]) and dry["DewDepression3pm"] > 40


@pytest.mark.parametrize(("rainfall", "flag"), [(0.0, 0.0), (1.0, 0.0), (1.2, 1.0)])
def test_rain_today_flag_uses_the_1mm_threshold(rainfall: float, flag: float) -> None:
    assert build_features(_hand_made(Rainfall=rainfall)).iloc[0]["RainTodayFlag"] == flag


def test_rain_today_flag_is_missing_without_rainfall() -> None:
    assert np.isnan(build_features(_hand_made(Rainfall=None)).iloc[0]["RainTodayFlag"])


def test_season_is_a_smooth_cycle() -> None:
    dec31 = build_features(_hand_made(Date="2021-12-31")).iloc[0]
    jan1 = build_features(_hand_made(Date="2022-01-01")).iloc[0]
    jul1 = build_features(_hand_made(Date="2021-07-01")).iloc[0]
    near = math.hypot(dec31["DaySin"] - jan1["DaySin"], dec31["DayCos"] - jan1["DayCos"])
    far = math.hypot(jul1["DaySin"] - jan1["DaySin"], jul1["DayCos"] - jan1["DayCos"])
    assert near < 0.05 < 1.9 < far


def test_label_vector() -> None:
    labels = pd.DataFrame({schema.RAIN_TOMORROW: ["Yes", "No", "Yes"]})
    assert label_vector(labels).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="unlabelled"):
        label_vector(pd.DataFrame({schema.RAIN_TOMORROW: ["Yes", None]}))
