"""The synthetic source: schema, determinism, physical plausibility and learnability."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from raincast import schema
from raincast.sources import Source
from raincast.sources.synthetic import SyntheticSource, missing_instruments

START, END = date(2015, 1, 1), date(2017, 12, 31)


@pytest.fixture(scope="module")
def three_years() -> pd.DataFrame:
    """49 stations x 3 years, seed 0 (generation time is measured in `make bench`)."""
    return SyntheticSource(seed=0).fetch(START, END)


@pytest.fixture(scope="module")
def labelled(three_years: pd.DataFrame) -> pd.DataFrame:
    """Rows with RainTomorrow derived the way the store does: next day's RainToday."""
    df = three_years.sort_values([schema.LOCATION, schema.DATE]).copy()
    df[schema.RAIN_TOMORROW] = df.groupby(schema.LOCATION)[schema.RAIN_TODAY].shift(-1)
    return df.dropna(subset=[schema.RAIN_TODAY, schema.RAIN_TOMORROW])


def test_columns_and_one_row_per_station_per_day(three_years: pd.DataFrame) -> None:
    source: Source = SyntheticSource()
    assert source.name == "synthetic"
    assert list(three_years.columns) == list(schema.COLUMNS)
    days = (END - START).days + 1
    assert len(three_years) == days * len(schema.station_names())
    assert not three_years.duplicated([schema.DATE, schema.LOCATION]).any()
    assert three_years[schema.DATE].min() == START.isoformat()
    assert three_years[schema.DATE].max() == END.isoformat()
    assert three_years[schema.DATE].is_monotonic_increasing


def test_labels_follow_rainfall(three_years: pd.DataFrame) -> None:
    assert three_years[schema.RAIN_TOMORROW].isna().all()
    expected = schema.rain_flag(three_years[schema.RAINFALL])
    pd.testing.assert_series_equal(
        three_years[schema.RAIN_TODAY], expected, check_names=False, check_dtype=False
    )


def test_same_seed_same_rows_and_different_seed_different_rows() -> None:
    start, end = date(2020, 3, 1), date(2020, 4, 15)
    first = SyntheticSource(seed=7).fetch(start, end)
    again = SyntheticSource(seed=7).fetch(start, end)
    other = SyntheticSource(seed=8).fetch(start, end)
    pd.testing.assert_frame_equal(first, again)
    assert not first[schema.RAINFALL].equals(other[schema.RAINFALL])
    assert not first["Humidity3pm"].equals(other["Humidity3pm"])


@pytest.mark.parametrize("day", [date(2016, 1, 1), date(2016, 2, 29), date(2016, 12, 31)])
def test_single_day_equals_slice_of_longer_range(day: date) -> None:
    source = SyntheticSource(seed=3)
    single = source.fetch(day, day)
    longer = source.fetch(day - timedelta(days=30), day + timedelta(days=30))
    sliced = longer[longer[schema.DATE] == day.isoformat()].reset_index(drop=True)
    assert len(single) == len(schema.station_names())
    pd.testing.assert_frame_equal(single, sliced)


def test_station_subset_matches_full_output() -> None:
    start, end = date(2019, 6, 1), date(2019, 6, 30)
    full = SyntheticSource(seed=1).fetch(start, end)
    subset = SyntheticSource(seed=1, stations=["Sydney", "Darwin"]).fetch(start, end)
    expected = full[full[schema.LOCATION].isin(["Sydney", "Darwin"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(subset, expected)


def test_datetime_bounds_are_accepted() -> None:
    source = SyntheticSource(stations=["Hobart"])
    by_date = source.fetch(date(2018, 5, 1), date(2018, 5, 3))
    by_datetime = source.fetch(datetime(2018, 5, 1, 12), datetime(2018, 5, 3, 8))
    pd.testing.assert_frame_equal(by_date, by_datetime)


def test_numeric_values_within_physical_ranges(three_years: pd.DataFrame) -> None:
    for col, (lo, hi) in schema.NUMERIC_RANGES.items():
        values = three_years[col].dropna()
        assert len(values) > 0, col
        assert values.between(lo, hi).all(), f"{col} outside [{lo}, {hi}]"
    assert three_years["Pressure9am"].dropna().between(970, 1045).all()


def test_weatheraus_coding_conventions(three_years: pd.DataFrame) -> None:
    # Wind speeds are whole knots converted to whole km/h.
    allowed = {round(k * 1.852) for k in range(200)}
    for col in ("WindGustSpeed", "WindSpeed9am", "WindSpeed3pm"):
        assert set(three_years[col].dropna().astype(int)) <= allowed, col
    for col in ("Cloud9am", "Cloud3pm"):
        cloud = three_years[col].dropna()
        assert cloud.between(0, 8).all() and (cloud == cloud.round()).all()
    for col in ("Humidity9am", "Humidity3pm"):
        humidity = three_years[col].dropna()
        assert (humidity == humidity.round()).all()
    for col in schema.DIRECTION_COLUMNS:
        assert set(three_years[col].dropna()) <= set(schema.COMPASS_POINTS)
    temps = three_years[["MinTemp", "MaxTemp"]].dropna()
    assert (temps["MaxTemp"] >= temps["MinTemp"]).all()


def test_calm_means_no_direction(three_years: pd.DataFrame) -> None:
    for speed, direction in (("WindSpeed9am", "WindDir9am"), ("WindSpeed3pm", "WindDir3pm")):
        calm = three_years[speed] == 0
        assert calm.any(), speed
        assert three_years.loc[calm, direction].isna().all()
    no_gust = three_years["WindGustSpeed"].isna()
    assert three_years.loc[no_gust, "WindGustDir"].isna().all()


def test_missing_values_are_few_except_absent_instruments(three_years: pd.DataFrame) -> None:
    for col in ("MinTemp", "MaxTemp", schema.RAINFALL, "Humidity3pm", "Temp3pm"):
        assert 0 < three_years[col].isna().mean() < 0.05, col
    by_station = three_years.groupby(schema.LOCATION)
    absent = {s: missing_instruments(s) for s in schema.station_names()}
    assert sum("Sunshine" in cols for cols in absent.values()) >= 5
    assert sum("Cloud3pm" in cols for cols in absent.values()) >= 3
    for station, cols in absent.items():
        group = by_station.get_group(station)
        for col in schema.NUMERIC_COLUMNS:
            share = group[col].isna().mean()
            assert share == 1.0 if col in cols else share < 0.15, (station, col)


def test_rain_rate_is_realistic(three_years: pd.DataFrame) -> None:
    rate = (three_years[schema.RAINFALL].dropna() > schema.RAIN_THRESHOLD_MM).mean()
    assert 0.15 <= rate <= 0.30


def test_seasonality_follows_climate(three_years: pd.DataFrame) -> None:
    month = pd.to_datetime(three_years[schema.DATE]).dt.month
    rain = three_years[schema.RAINFALL] > schema.RAIN_THRESHOLD_MM

    def rate(station: str, months: list[int]) -> float:
        return rain[(three_years[schema.LOCATION] == station) & month.isin(months)].mean()

    assert rate("Darwin", [12, 1, 2]) > rate("Darwin", [6, 7, 8]) + 0.3  # monsoon
    assert rate("Perth", [6, 7, 8]) > rate("Perth", [12, 1, 2]) + 0.15  # winter rain
    assert rate("AliceSprings", list(range(1, 13))) < rate("Sydney", list(range(1, 13)))


def test_rain_persists(labelled: pd.DataFrame) -> None:
    tomorrow = labelled[schema.RAIN_TOMORROW] == "Yes"
    today = labelled[schema.RAIN_TODAY] == "Yes"
    assert tomorrow[today].mean() > tomorrow[~today].mean() + 0.15


def test_afternoon_humidity_is_higher_before_rain(labelled: pd.DataFrame) -> None:
    humid = labelled.groupby(schema.RAIN_TOMORROW)["Humidity3pm"].mean()
    assert humid["Yes"] > humid["No"] + 10
    cloud = labelled.groupby(schema.RAIN_TOMORROW)["Cloud3pm"].mean()
    assert cloud["Yes"] > cloud["No"] + 1


def test_rain_tomorrow_is_learnable(labelled: pd.DataFrame) -> None:
    xgboost = pytest.importorskip("xgboost")
    from sklearn.metrics import roc_auc_score

    features = labelled.drop(columns=[schema.DATE, schema.RAIN_TOMORROW])
    features[schema.LOCATION] = pd.Categorical(
        features[schema.LOCATION], categories=schema.station_names()
    )
    for col in (*schema.DIRECTION_COLUMNS, schema.RAIN_TODAY):
        features[col] = features[col].astype("category")
    target = (labelled[schema.RAIN_TOMORROW] == "Yes").to_numpy()
    train = (labelled[schema.DATE] < "2017-01-01").to_numpy()

    model = xgboost.XGBClassifier(
        n_estimators=100, tree_method="hist", enable_categorical=True, n_jobs=1
    )
    model.fit(features[train], target[train])
    auc = roc_auc_score(target[~train], model.predict_proba(features[~train])[:, 1])
    assert auc >= 0.82


def test_start_after_end_is_rejected() -> None:
    with pytest.raises(ValueError, match="after"):
        SyntheticSource().fetch(date(2020, 1, 2), date(2020, 1, 1))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"stations": ["Sydney", "Atlantis"]}, ValueError),
        ({"stations": []}, ValueError),
        ({"stations": "Sydney"}, TypeError),
        ({"seed": -1}, ValueError),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        SyntheticSource(**kwargs)  # type: ignore[arg-type]


def test_bad_dates_and_stations_are_rejected() -> None:
    with pytest.raises(TypeError):
        SyntheticSource().fetch("2020-01-01", date(2020, 1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown station"):
        missing_instruments("Atlantis")


def test_rows_do_not_share_state_between_calls() -> None:
    source = SyntheticSource(seed=2, stations=["Cairns"])
    first = source.fetch(date(2021, 1, 1), date(2021, 1, 10))
    first.loc[:, "Rainfall"] = -1.0  # a caller mutating its copy must not leak back
    second = source.fetch(date(2021, 1, 1), date(2021, 1, 10))
    assert (second["Rainfall"].dropna() >= 0).all()
    assert np.isfinite(second["MaxTemp"].dropna()).all()
