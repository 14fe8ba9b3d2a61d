"""Tests for the Open-Meteo source against the fake server in tests/fakes."""

from __future__ import annotations

import math
import socket
import time as time_module
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from raincast import schema
from raincast.settings import Settings
from raincast.sources import SourceUnavailableError
from raincast.sources.openmeteo import (
    HOURLY_VARIABLES,
    OpenMeteoRequestError,
    OpenMeteoSource,
    daily_from_hourly,
    degrees_to_compass,
    parse_location,
    percent_to_oktas,
    wind_direction,
    wind_speed_kmh,
    window_reduce,
)
from tests.fakes.openmeteo_server import FakeOpenMeteo, default_values

TODAY = date(2024, 12, 31)  # far from the test days, so they come from the archive
SYDNEY = schema.stations()["Sydney"]
SYDNEY_TZ = ZoneInfo("Australia/Sydney")
BASE = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())


def utc(y: int, m: int, d: int, h: int) -> int:
    """Unix seconds of a UTC wall time (the tests spell window edges out in UTC)."""
    return int(datetime(y, m, d, h, tzinfo=UTC).timestamp())


def hours(first: int, last: int) -> list[int]:
    """Unix stamps from ``first`` to ``last`` inclusive, hourly."""
    return list(range(first, last + 1, 3600))


def linear_temp(ts: int) -> float:
    """Temperature rising 0.1 °C an hour: a window's min is its first hour, max its last."""
    return (ts - BASE) // 3600 * 0.1


def skewed_rain(ts: int) -> float:
    """Rain with a 97 h period, so a window shifted by one hour has a different sum."""
    return ((ts // 3600) % 97) * 0.1


@pytest.fixture
def fake() -> Iterator[FakeOpenMeteo]:
    with FakeOpenMeteo(today=TODAY) as server:
        yield server


def make_source(
    fake: FakeOpenMeteo,
    home: Path,
    stations: list[str] | None = None,
    today: date = TODAY,
    **kwargs: object,
) -> OpenMeteoSource:
    settings = Settings(
        openmeteo_url=fake.forecast_url,
        openmeteo_archive_url=fake.archive_url,
        home=home,
        http_retries=2,
        http_timeout_s=5,
    )
    return OpenMeteoSource(
        settings, stations=stations or ["Sydney"], today=today, backoff_factor=0, **kwargs
    )


def fetch(fake: FakeOpenMeteo, home: Path, start: date, end: date, **kwargs: object):
    with make_source(fake, home, **kwargs) as source:
        return source.fetch(start, end).set_index("Date", drop=False)


# --------------------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    ("degrees", "point"),
    [
        (0.0, "N"), (11.24, "N"), (11.25, "NNE"), (33.74, "NNE"), (33.75, "NE"),
        (90.0, "E"), (180.0, "S"), (270.0, "W"), (348.74, "NNW"), (348.75, "N"),
        (359.9, "N"), (360.0, "N"), (-11.25, "N"), (-11.26, "NNW"),
    ],
)  # fmt: skip
def test_degrees_to_compass_boundaries(degrees: float, point: str) -> None:
    assert degrees_to_compass(degrees) == point


def test_degrees_to_compass_missing() -> None:
    assert degrees_to_compass(None) is None
    assert degrees_to_compass(math.nan) is None


@pytest.mark.parametrize(
    ("percent", "oktas"),
    [(0, 0), (6.24, 0), (6.25, 1), (50, 4), (56.25, 5), (93.74, 7), (93.75, 8), (100, 8)],
)
def test_percent_to_oktas(percent: float, oktas: float) -> None:
    assert percent_to_oktas(percent) == oktas


def test_percent_to_oktas_missing() -> None:
    assert math.isnan(percent_to_oktas(math.nan))
    assert math.isnan(percent_to_oktas(None))


def test_wind_speed_rounds_to_whole_kmh_and_calm_has_no_direction() -> None:
    assert [wind_speed_kmh(v) for v in (0.0, 0.49, 0.5, 12.5, 12.6)] == [0, 0, 1, 13, 13]
    assert math.isnan(wind_speed_kmh(None))
    assert wind_direction(0.0, 90.0) is None  # calm
    assert wind_direction(math.nan, 90.0) is None
    assert wind_direction(1.0, 90.0) == "E"
    assert wind_direction(1.0, None) is None


def test_window_reduce_uses_hours_after_lo_up_to_and_including_hi() -> None:
    ts = np.array(hours(0, 10 * 3600), dtype=np.int64)  # stamps 0h..10h
    values = np.arange(11, dtype=float)  # value == hour
    lo = np.array([0, 3600 * 5])
    hi = np.array([3600 * 3, 3600 * 8])
    assert window_reduce(ts, values, lo, hi, "sum").tolist() == [1 + 2 + 3, 6 + 7 + 8]
    assert window_reduce(ts, values, lo, hi, "min").tolist() == [1, 6]
    assert window_reduce(ts, values, lo, hi, "max").tolist() == [3, 8]
    assert window_reduce(ts, values, lo, hi, "argmax").tolist() == [3, 8]


def test_window_reduce_null_or_gap_gives_nan_not_partial_sum() -> None:
    ts = np.array(hours(0, 6 * 3600), dtype=np.int64)
    values = np.ones(7)
    values[2] = np.nan
    lo, hi = np.array([0, 3 * 3600]), np.array([3 * 3600, 6 * 3600])
    assert np.isnan(window_reduce(ts, values, lo, hi, "sum")[0])
    assert window_reduce(ts, values, lo, hi, "sum")[1] == 3
    gappy = np.delete(ts, 5)  # hour 5 never sent
    out = window_reduce(gappy, np.ones(6), lo, hi, "sum")
    assert out[0] == 3 and np.isnan(out[1])
    # A window beyond the data is missing, not zero.
    assert np.isnan(
        window_reduce(ts, values, np.array([9 * 3600]), np.array([12 * 3600]), "max")[0]
    )


def test_parse_location_rejects_wrong_units_and_iso_times() -> None:
    payload = {
        "hourly_units": {"time": "unixtime", "wind_speed_10m": "m/s"},
        "hourly": {"time": [0, 3600], "wind_speed_10m": [1.0, None]},
    }
    with pytest.raises(ValueError, match="m/s"):
        parse_location(payload)
    payload["hourly_units"]["wind_speed_10m"] = "km/h"
    frame = parse_location(payload)
    assert frame["wind_speed_10m"].iloc[0] == 1.0 and np.isnan(frame["wind_speed_10m"].iloc[1])
    assert frame["temperature_2m"].isna().all()  # absent variable → all missing
    payload["hourly"]["time"] = ["2024-01-01T00:00", "2024-01-01T01:00"]
    with pytest.raises(ValueError, match="unix"):
        parse_location(payload)


def test_daily_from_hourly_missing_hour_is_missing_not_the_previous_hour() -> None:
    stamps = [
        t for t in hours(utc(2024, 6, 13, 0), utc(2024, 6, 16, 23)) if t != utc(2024, 6, 14, 23)
    ]
    hourly = pd.DataFrame({"time": stamps})
    for var in HOURLY_VARIABLES:
        hourly[var] = [default_values(var, SYDNEY.latitude, SYDNEY.longitude, t) for t in stamps]
    days = [date(2024, 6, 14), date(2024, 6, 15), date(2024, 6, 16)]
    df = daily_from_hourly(hourly, "Australia/Sydney", days)
    # 23:00Z on the 14th is 09:00 local on the 15th and was never sent.
    assert df["Temp9am"].isna().tolist() == [False, True, False]
    assert df["WindDir9am"].isna().tolist() == [False, True, False]
    assert df["MinTemp"].isna().tolist() == [False, True, False]
    assert df["Rainfall"].isna().tolist() == [False, True, False]
    assert df["MaxTemp"].isna().tolist() == [True, False, False]
    assert df["Temp3pm"].notna().all()


# --------------------------------------------------------------------------- daily rows


def test_output_has_exactly_the_weatheraus_columns(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    stations = ["Sydney", "Perth", "Darwin"]
    df = fetch(fake, tmp_path, date(2024, 6, 14), date(2024, 6, 16), stations=stations)
    assert list(df.columns) == list(schema.COLUMNS)
    assert len(df) == 9
    assert sorted(set(df["Location"])) == sorted(stations)
    assert sorted(set(df["Date"])) == ["2024-06-14", "2024-06-15", "2024-06-16"]
    assert df["RainTomorrow"].isna().all()
    assert df["Evaporation"].isna().all()  # Open-Meteo has no pan evaporation
    assert df[list(schema.NUMERIC_COLUMNS)].dtypes.eq("float64").all()
    # Everything else is filled from the default fake data.
    filled = [c for c in schema.COLUMNS if c not in ("Evaporation", "RainTomorrow")]
    assert df[filled].notna().all().all(), df[filled].isna().sum()
    assert (df["RainToday"] == np.where(df["Rainfall"] > 1.0, "Yes", "No")).all()
    assert set(df["WindDir9am"]) <= set(schema.COMPASS_POINTS)


def test_rain_and_temperature_windows_on_a_normal_day(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    fake.values = lambda var, lat, lon, ts: (
        skewed_rain(ts) if var == "precipitation"
        else linear_temp(ts) if var == "temperature_2m"
        else default_values(var, lat, lon, ts)
    )  # fmt: skip
    row = fetch(fake, tmp_path, date(2024, 6, 15), date(2024, 6, 15)).loc["2024-06-15"]
    # Sydney is UTC+10 in June: 09:00 on the 14th is 23:00Z on the 13th.
    window = hours(utc(2024, 6, 14, 0), utc(2024, 6, 14, 23))
    assert row["Rainfall"] == pytest.approx(round(sum(skewed_rain(t) for t in window), 1))
    assert row["MinTemp"] == pytest.approx(round(linear_temp(utc(2024, 6, 14, 0)), 1))
    assert row["MaxTemp"] == pytest.approx(round(linear_temp(utc(2024, 6, 15, 23)), 1))
    assert row["Temp9am"] == pytest.approx(round(linear_temp(utc(2024, 6, 14, 23)), 1))
    assert row["Temp3pm"] == pytest.approx(round(linear_temp(utc(2024, 6, 15, 5)), 1))


def test_sydney_dst_days_have_25_and_23_local_hours() -> None:
    def day_hours(d: date) -> float:
        start = datetime.combine(d, time(0), tzinfo=SYDNEY_TZ)
        end = datetime.combine(d + timedelta(days=1), time(0), tzinfo=SYDNEY_TZ)
        return (end.timestamp() - start.timestamp()) / 3600

    assert day_hours(date(2024, 4, 7)) == 25
    assert day_hours(date(2024, 10, 6)) == 23
    assert day_hours(date(2024, 6, 15)) == 24


@pytest.mark.parametrize(
    ("start", "expected_rain", "expected_sun"),
    [
        (date(2024, 4, 6), [24.0, 25.0, 24.0], [4.0, 4.2, 4.0]),  # clocks back on the 7th
        (date(2024, 10, 5), [24.0, 23.0, 24.0], [4.0, 3.8, 4.0]),  # clocks forward on the 6th
    ],
)
def test_dst_days_sum_every_hour_of_the_window(
    fake: FakeOpenMeteo,
    tmp_path: Path,
    start: date,
    expected_rain: list[float],
    expected_sun: list[float],
) -> None:
    fake.values = lambda var, lat, lon, ts: (
        1.0 if var == "precipitation"
        else 600.0 if var == "sunshine_duration"
        else default_values(var, lat, lon, ts)
    )  # fmt: skip
    df = fetch(fake, tmp_path, start, start + timedelta(days=2))
    assert df["Rainfall"].tolist() == expected_rain
    assert df["Sunshine"].tolist() == expected_sun


def test_min_max_temp_windows_across_the_april_dst_change(
    fake: FakeOpenMeteo, tmp_path: Path
) -> None:
    fake.values = lambda var, lat, lon, ts: (
        linear_temp(ts) if var == "temperature_2m" else default_values(var, lat, lon, ts)
    )
    row = fetch(fake, tmp_path, date(2024, 4, 7), date(2024, 4, 7)).loc["2024-04-07"]
    # 09:00 AEDT (UTC+11) on the 6th is 22:00Z; 09:00 AEST (UTC+10) on the 7th/8th is 23:00Z.
    assert row["MinTemp"] == pytest.approx(round(linear_temp(utc(2024, 4, 5, 23)), 1))
    assert row["MaxTemp"] == pytest.approx(round(linear_temp(utc(2024, 4, 7, 23)), 1))
    assert row["Temp9am"] == pytest.approx(round(linear_temp(utc(2024, 4, 6, 23)), 1))


def test_spot_values_wind_cloud_and_gusts(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    nine, three = utc(2024, 6, 14, 23), utc(2024, 6, 15, 5)  # 09:00 / 15:00 AEST on the 15th
    gust_hour = utc(2024, 6, 15, 2)  # 12:00 local

    def values(var: str, lat: float, lon: float, ts: int) -> float | None:
        spot = {
            "wind_speed_10m": {nine: 0.4, three: 20.6},
            "wind_direction_10m": {nine: 90.0, three: 348.75, gust_hour: 11.25},
            "cloud_cover": {nine: 56.25, three: 100.0},
            "relative_humidity_2m": {nine: 81.4, three: 40.6},
            "pressure_msl": {nine: 1020.04, three: 1015.96},
            "wind_gusts_10m": {gust_hour: 71.6},
        }
        if var in spot:
            return spot[var].get(ts, 5.0 if var != "wind_direction_10m" else 200.0)
        return default_values(var, lat, lon, ts)

    fake.values = values
    row = fetch(fake, tmp_path, date(2024, 6, 15), date(2024, 6, 15)).loc["2024-06-15"]
    assert row["WindSpeed9am"] == 0 and row["WindDir9am"] is None  # calm: no direction
    assert row["WindSpeed3pm"] == 21 and row["WindDir3pm"] == "N"
    assert row["Cloud9am"] == 5 and row["Cloud3pm"] == 8
    assert row["Humidity9am"] == 81 and row["Humidity3pm"] == 41
    assert row["Pressure9am"] == 1020.0 and row["Pressure3pm"] == 1016.0
    assert row["WindGustSpeed"] == 72 and row["WindGustDir"] == "NNE"


def test_gust_uses_the_local_calendar_day(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    # 23:30 local on the 14th (13:00Z) belongs to the 14th, 00:00 local on the 15th
    # (14:00Z, the hour ending at midnight) still to the 14th, 01:00 local to the 15th.
    peaks = {utc(2024, 6, 14, 14): 90.0, utc(2024, 6, 14, 15): 60.0}
    fake.values = lambda var, lat, lon, ts: (
        peaks.get(ts, 10.0) if var == "wind_gusts_10m" else default_values(var, lat, lon, ts)
    )
    df = fetch(fake, tmp_path, date(2024, 6, 14), date(2024, 6, 15))
    assert df["WindGustSpeed"].tolist() == [90.0, 60.0]


def test_nulls_make_the_aggregate_missing_not_partial(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    fake.nulls = {
        ("precipitation", utc(2024, 6, 14, 5)),  # 15:00 local on the 14th: Rainfall(15th)
        ("temperature_2m", utc(2024, 6, 14, 23)),  # 09:00 local on the 15th
    }
    df = fetch(fake, tmp_path, date(2024, 6, 14), date(2024, 6, 16))
    assert df["Rainfall"].isna().tolist() == [False, True, False]
    assert df["RainToday"].isna().tolist() == [False, True, False]
    assert df["Temp9am"].isna().tolist() == [False, True, False]
    assert df["MinTemp"].isna().tolist() == [False, True, False]  # (09:00 14th, 09:00 15th]
    assert df["MaxTemp"].isna().tolist() == [True, False, False]  # (09:00 14th, 09:00 15th]


# --------------------------------------------------------------------------- requests


def test_many_stations_are_batched_and_matched_to_their_answers(
    fake: FakeOpenMeteo, tmp_path: Path
) -> None:
    nsw = [n for n, s in schema.stations().items() if s.timezone == "Australia/Sydney"][:11]
    fake.values = lambda var, lat, lon, ts: (
        round(-lat, 4) if var == "temperature_2m" else default_values(var, lat, lon, ts)
    )
    df = fetch(fake, tmp_path, date(2024, 6, 15), date(2024, 6, 15), stations=nsw, batch_size=5)
    # 11 stations in batches of 5: two answers are JSON lists, the last a single object.
    assert [len(r.params["latitude"].split(",")) for r in fake.requests] == [5, 5, 1]
    assert {r.params["timezone"] for r in fake.requests} == {"Australia/Sydney"}
    got = dict(zip(df["Location"], df["Temp9am"], strict=True))
    assert got == {n: round(-schema.stations()[n].latitude, 1) for n in nsw}


def test_stations_are_grouped_by_timezone(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    stations = ["Sydney", "Perth", "Darwin", "Adelaide", "Brisbane"]
    df = fetch(fake, tmp_path, date(2024, 6, 15), date(2024, 6, 15), stations=stations)
    zones = sorted(r.params["timezone"] for r in fake.requests)
    assert zones == sorted(schema.stations()[n].timezone for n in stations)
    # Half-hour zones (Adelaide, Darwin) still get complete windows.
    assert df[["Rainfall", "MinTemp", "MaxTemp", "Temp9am"]].notna().all().all()


def test_request_parameters(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    fetch(fake, tmp_path, date(2024, 6, 15), date(2024, 6, 15))
    (request,) = fake.requests
    assert request.params["timeformat"] == "unixtime"
    assert request.params["wind_speed_unit"] == "kmh"
    assert request.params["hourly"].split(",") == list(HOURLY_VARIABLES)
    assert float(request.params["latitude"]) == pytest.approx(SYDNEY.latitude)
    assert float(request.params["longitude"]) == pytest.approx(SYDNEY.longitude)


def test_old_days_use_the_archive_with_a_day_either_side(
    fake: FakeOpenMeteo, tmp_path: Path
) -> None:
    df = fetch(fake, tmp_path, date(2024, 1, 10), date(2024, 1, 12), today=date(2024, 6, 30))
    assert fake.paths() == ["/v1/archive"]
    assert fake.requests[0].params["start_date"] == "2024-01-09"
    assert fake.requests[0].params["end_date"] == "2024-01-13"
    assert df[["Rainfall", "MaxTemp"]].notna().all().all()


def test_recent_days_use_the_forecast_endpoint(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    today = date(2024, 6, 30)
    fake.today = today
    df = fetch(fake, tmp_path, date(2024, 6, 20), today, today=today)
    assert fake.paths() == ["/v1/forecast"]
    params = fake.requests[0].params
    assert "start_date" not in params and 0 < int(params["past_days"]) <= 92
    # Rainfall on the 20th needs the 19th; MaxTemp today needs 09:00 tomorrow.
    assert df[["Rainfall", "MinTemp", "MaxTemp"]].notna().all().all()
    assert len(df) == 11


def test_a_range_across_the_cutover_uses_both_endpoints(
    fake: FakeOpenMeteo, tmp_path: Path
) -> None:
    today = date(2024, 6, 30)
    fake.today = today
    df = fetch(fake, tmp_path, date(2024, 3, 28), date(2024, 4, 6), today=today)
    assert sorted(fake.paths()) == ["/v1/archive", "/v1/forecast"]
    days = pd.date_range("2024-03-28", "2024-04-06").strftime("%Y-%m-%d").tolist()
    assert df["Date"].tolist() == days
    assert df[["Rainfall", "MinTemp", "MaxTemp", "Sunshine"]].notna().all().all()


def test_400_raises_value_error_with_the_reason(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    fake.error_reason = "Cannot initialize WeatherVariable from invalid String value tempeture"
    with pytest.raises(ValueError, match="invalid String value tempeture") as info:
        fetch(fake, tmp_path, date(2024, 6, 15), date(2024, 6, 15))
    assert isinstance(info.value, OpenMeteoRequestError)
    assert len(fake.requests) == 1  # a bad request is not retried


def test_429_is_retried_then_succeeds(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    expected = fetch(fake, tmp_path / "clean", date(2024, 6, 15), date(2024, 6, 16))
    fake.requests.clear()
    fake.fail_429 = 2
    df = fetch(fake, tmp_path / "retry", date(2024, 6, 15), date(2024, 6, 16))
    assert len(fake.requests) == 3
    pd.testing.assert_frame_equal(df, expected)


def test_retry_after_header_is_respected(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    # urllib3 treats "Retry-After: 0" as absent, so wait one real second; with
    # backoff_factor=0 nothing else would make the client pause.
    fake.fail_429, fake.retry_after = 1, "1"
    started = time_module.monotonic()
    df = fetch(fake, tmp_path, date(2024, 6, 15), date(2024, 6, 15))
    assert time_module.monotonic() - started >= 0.9
    assert len(fake.requests) == 2 and df["Rainfall"].notna().all()


def test_persistent_500_raises_source_unavailable(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    fake.fail_500 = 1000
    with pytest.raises(SourceUnavailableError, match=r"127\.0\.0\.1.*HTTP 500"):
        fetch(fake, tmp_path, date(2024, 6, 15), date(2024, 6, 15))
    assert len(fake.requests) == 3  # the first try and http_retries=2 more


def test_connection_refused_raises_source_unavailable(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(
        openmeteo_url=f"http://127.0.0.1:{port}/v1/forecast",
        openmeteo_archive_url=f"http://127.0.0.1:{port}/v1/archive",
        home=tmp_path,
        http_retries=1,
    )
    with (
        OpenMeteoSource(settings, ["Sydney"], today=TODAY, backoff_factor=0) as source,
        pytest.raises(SourceUnavailableError, match=rf"127\.0\.0\.1:{port}"),
    ):
        source.fetch(date(2024, 6, 15), date(2024, 6, 15))


def test_second_identical_fetch_is_served_from_the_disk_cache(
    fake: FakeOpenMeteo, tmp_path: Path
) -> None:
    source = make_source(fake, tmp_path)
    assert not source.settings.cache_dir.exists()  # created lazily, not at construction
    with source:
        first = source.fetch(date(2024, 6, 15), date(2024, 6, 16))
    assert len(fake.requests) == 1
    assert any(source.settings.cache_dir.iterdir())
    second = fetch(fake, tmp_path, date(2024, 6, 15), date(2024, 6, 16))  # a new session
    assert len(fake.requests) == 1
    pd.testing.assert_frame_equal(second.reset_index(drop=True), first)


def test_failed_responses_are_not_cached(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    fake.fail_500 = 1000
    with pytest.raises(SourceUnavailableError):
        fetch(fake, tmp_path, date(2024, 6, 15), date(2024, 6, 15))
    fake.fail_500 = 0
    before = len(fake.requests)
    df = fetch(fake, tmp_path, date(2024, 6, 15), date(2024, 6, 15))
    assert len(fake.requests) == before + 1
    assert df["Rainfall"].notna().all()


def test_unknown_station_and_reversed_range_are_rejected(
    fake: FakeOpenMeteo, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="Atlantis"):
        make_source(fake, tmp_path, stations=["Atlantis"])
    with make_source(fake, tmp_path) as source, pytest.raises(ValueError, match="after"):
        source.fetch(date(2024, 6, 16), date(2024, 6, 15))
    assert fake.requests == []


# --------------------------------------------------------------------------- upstream hygiene


def _bounded(fake: FakeOpenMeteo, home: Path, **settings: object) -> OpenMeteoSource:
    """A source with small, explicit bounds (each test says which one it exercises)."""
    values: dict[str, object] = {
        "openmeteo_url": fake.forecast_url,
        "openmeteo_archive_url": fake.archive_url,
        "home": home,
        "http_retries": 2,
        "http_timeout_s": 5,
        **settings,
    }
    return OpenMeteoSource(Settings(**values), ["Sydney"], today=TODAY, backoff_factor=0)


DAY = date(2024, 6, 15)


def test_a_broken_200_reply_is_retried_and_never_cached(
    fake: FakeOpenMeteo, tmp_path: Path
) -> None:
    fake.broken_body = 1  # the first reply is cut off mid-JSON, the second is fine
    with _bounded(fake, tmp_path) as source:
        df = source.fetch(DAY, DAY)
    assert len(fake.requests) == 2 and df["Rainfall"].notna().all()
    with _bounded(fake, tmp_path) as source:  # the good reply was cached, not the broken one
        pd.testing.assert_frame_equal(source.fetch(DAY, DAY), df)
    assert len(fake.requests) == 2


def test_a_persistently_broken_reply_fails_and_the_next_fetch_asks_again(
    fake: FakeOpenMeteo, tmp_path: Path
) -> None:
    fake.broken_body = 1000
    with (
        _bounded(fake, tmp_path) as source,
        pytest.raises(SourceUnavailableError, match=r"127\.0\.0\.1.*not JSON"),
    ):
        source.fetch(DAY, DAY)
    assert len(fake.requests) == 3  # first try + http_retries=2
    fake.broken_body = 0
    with _bounded(fake, tmp_path) as source:
        assert source.fetch(DAY, DAY)["Rainfall"].notna().all()
    assert len(fake.requests) == 4  # nothing broken was served from the cache


def test_a_reply_that_does_not_parse_is_not_cached(fake: FakeOpenMeteo, tmp_path: Path) -> None:
    fake.wrong_units = 1  # valid JSON, but wind in m/s: parsing refuses it
    with (
        _bounded(fake, tmp_path) as source,
        pytest.raises(SourceUnavailableError, match=r"m/s.*not cached"),
    ):
        source.fetch(DAY, DAY)
    with _bounded(fake, tmp_path) as source:
        assert source.fetch(DAY, DAY)["WindSpeed9am"].notna().all()
    assert len(fake.requests) == 2


@pytest.mark.parametrize("no_length", [False, True], ids=["content-length", "close-delimited"])
def test_an_oversized_reply_is_refused_and_not_cached(
    fake: FakeOpenMeteo, tmp_path: Path, no_length: bool
) -> None:
    fake.pad_bytes, fake.no_length = 300_000, no_length
    with (
        _bounded(fake, tmp_path, http_max_reply_bytes=200_000) as source,
        pytest.raises(SourceUnavailableError, match=r"over 200000 bytes"),
    ):
        source.fetch(DAY, DAY)
    assert len(fake.requests) == 1  # a reply too large is not retried
    fake.pad_bytes = 0
    with _bounded(fake, tmp_path, http_max_reply_bytes=200_000) as source:
        assert source.fetch(DAY, DAY)["Rainfall"].notna().all()
    assert len(fake.requests) == 2


@pytest.mark.parametrize("mode", ["hang", "trickle"])
@pytest.mark.timeout(60)
def test_a_hanging_server_fails_by_the_deadline(
    fake: FakeOpenMeteo, tmp_path: Path, mode: str
) -> None:
    setattr(fake, mode, True)  # hang: never answers; trickle: a byte a second, forever
    started = time_module.monotonic()
    with (
        _bounded(fake, tmp_path, http_deadline_s=3, http_timeout_s=2) as source,
        pytest.raises(SourceUnavailableError, match=r"127\.0\.0\.1.*3 s deadline"),
    ):
        source.fetch(DAY, DAY)
    assert time_module.monotonic() - started < 3 + 1.5


def test_default_bounds_stay_within_a_minute() -> None:
    s = Settings()
    assert s.http_deadline_s <= 60
    assert s.http_connect_timeout_s < s.http_deadline_s and s.http_timeout_s < s.http_deadline_s


def test_an_unresolvable_host_fails_at_once_without_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo
    calls: list[str] = []

    def resolve(host: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if str(host).endswith(".invalid"):
            calls.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    settings = Settings(
        openmeteo_url="http://api.raincast-test.invalid/v1/forecast",
        openmeteo_archive_url="http://archive.raincast-test.invalid/v1/archive",
        home=tmp_path,
    )  # default retries (5) and back-off (1 s, doubling): a retried failure takes ~31 s
    started = time_module.monotonic()
    with (
        OpenMeteoSource(settings, ["Sydney"], today=TODAY) as source,
        pytest.raises(SourceUnavailableError, match=r"cannot be resolved \(DNS\)"),
    ):
        source.fetch(DAY, DAY)
    assert time_module.monotonic() - started < 2
    assert calls == ["archive.raincast-test.invalid"]  # one lookup, no retry


def test_a_retry_after_beyond_the_deadline_gives_up_at_once(
    fake: FakeOpenMeteo, tmp_path: Path
) -> None:
    fake.fail_429, fake.retry_after = 5, "3600"
    started = time_module.monotonic()
    with (
        _bounded(fake, tmp_path, http_deadline_s=10) as source,
        pytest.raises(SourceUnavailableError, match=r"HTTP 429.*deadline"),
    ):
        source.fetch(DAY, DAY)
    assert time_module.monotonic() - started < 2 and len(fake.requests) == 1
