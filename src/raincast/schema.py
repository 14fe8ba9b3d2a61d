"""The weatherAUS schema: column names, units, physical ranges and the station table.

Every source produces exactly these columns; validation, features and the API input
models all read their rules from here so ingestion and serving cannot disagree.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

DATE = "Date"
LOCATION = "Location"
RAIN_TODAY = "RainToday"
RAIN_TOMORROW = "RainTomorrow"
RAINFALL = "Rainfall"

#: Rain "today" means more than this many mm in the 24 h to 09:00 (BoM convention).
RAIN_THRESHOLD_MM = 1.0

#: The 16-point compass used by every wind-direction column.
COMPASS_POINTS: tuple[str, ...] = (
    "N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE",
    "S", "SSW", "SW", "WSW", "W", "WNW", "NW", "NNW",
)  # fmt: skip

YES_NO: tuple[str, ...] = ("No", "Yes")

#: Physical range (inclusive) per numeric column, in weatherAUS units.
NUMERIC_RANGES: dict[str, tuple[float, float]] = {
    "MinTemp": (-25.0, 55.0),  # deg C
    "MaxTemp": (-25.0, 55.0),
    "Rainfall": (0.0, 800.0),  # mm in the 24 h to 09:00
    "Evaporation": (0.0, 200.0),  # mm, class-A pan
    "Sunshine": (0.0, 16.0),  # hours of bright sunshine
    "WindGustSpeed": (0.0, 250.0),  # km/h
    "WindSpeed9am": (0.0, 200.0),
    "WindSpeed3pm": (0.0, 200.0),
    "Humidity9am": (0.0, 100.0),  # percent
    "Humidity3pm": (0.0, 100.0),
    "Pressure9am": (900.0, 1080.0),  # hPa, mean sea level
    "Pressure3pm": (900.0, 1080.0),
    "Cloud9am": (0.0, 9.0),  # oktas; 9 = sky obscured
    "Cloud3pm": (0.0, 9.0),
    "Temp9am": (-25.0, 55.0),
    "Temp3pm": (-25.0, 55.0),
}

DIRECTION_COLUMNS: tuple[str, ...] = ("WindGustDir", "WindDir9am", "WindDir3pm")

#: The 23 weatherAUS columns, in file order.
COLUMNS: tuple[str, ...] = (
    DATE, LOCATION, "MinTemp", "MaxTemp", RAINFALL, "Evaporation", "Sunshine",
    "WindGustDir", "WindGustSpeed", "WindDir9am", "WindDir3pm", "WindSpeed9am",
    "WindSpeed3pm", "Humidity9am", "Humidity3pm", "Pressure9am", "Pressure3pm",
    "Cloud9am", "Cloud3pm", "Temp9am", "Temp3pm", RAIN_TODAY, RAIN_TOMORROW,
)  # fmt: skip

NUMERIC_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c in NUMERIC_RANGES)

#: Columns a caller sends to predict: everything observed on day D (no label).
INPUT_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c != RAIN_TOMORROW)

#: Provenance columns the raw store adds to every row.
PROVENANCE_COLUMNS: tuple[str, ...] = ("source", "fetched_at", "run_id")

#: Columns that carry a measurement. A row with none of them set holds no observation.
OBSERVED_COLUMNS: tuple[str, ...] = (*NUMERIC_COLUMNS, *DIRECTION_COLUMNS)

#: Optional columns a source adds to a row it could not parse into the schema (a short or
#: long CSV line): what went wrong, and the raw record as sent. Validation quarantines
#: such rows with both; they never reach the store.
PARSE_PROBLEM = "_parse_problem"
RAW_RECORD = "_raw_record"

#: The two kinds of provenance a store may hold; one store holds one kind unless the
#: operator allows mixing (see data/store.py).
REAL, SYNTHETIC = "real", "synthetic"


def source_kind(source: str) -> str:
    """``synthetic`` for the seeded generator, ``real`` for every observed source
    (csv, replay, openmeteo, ...)."""
    return SYNTHETIC if source.split(":", 1)[0] == "synthetic" else REAL


@dataclass(frozen=True)
class Station:
    """One of the 49 weatherAUS stations."""

    name: str
    bom_station_number: str
    latitude: float
    longitude: float
    state: str
    timezone: str


@cache
def stations() -> dict[str, Station]:
    """The station whitelist, keyed by the weatherAUS `Location` name."""
    text = resources.files("raincast.data").joinpath("stations.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    return {
        r["Location"]: Station(
            name=r["Location"],
            bom_station_number=r["bom_station_number"],
            latitude=float(r["latitude"]),
            longitude=float(r["longitude"]),
            state=r["state"],
            timezone=r["iana_timezone"],
        )
        for r in rows
    }


def station_names() -> tuple[str, ...]:
    """Sorted station names; the category order used by features and the API."""
    return tuple(sorted(stations()))


def rain_flag(rainfall_mm: pd.Series) -> pd.Series:
    """'Yes' when rainfall exceeds 1.0 mm, 'No' when not, missing when rainfall is."""
    values = np.where(rainfall_mm > RAIN_THRESHOLD_MM, "Yes", "No").astype(object)
    values[rainfall_mm.isna().to_numpy()] = None
    return pd.Series(values, index=rainfall_mm.index, dtype="object")


def empty_frame() -> pd.DataFrame:
    """A zero-row frame with the weatherAUS columns and canonical dtypes."""
    return conform(pd.DataFrame({c: [] for c in COLUMNS}))


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Return `df` with exactly the weatherAUS columns in order and canonical dtypes.

    Numeric columns become float64 (NaN for missing), text columns become object with
    None for missing, and Date becomes an ISO `YYYY-MM-DD` string. Values are not
    range-checked here; that is validation's job.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"missing weatherAUS columns: {missing}")
    out = df.loc[:, list(COLUMNS)].copy()
    for col in NUMERIC_COLUMNS:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    out[DATE] = pd.to_datetime(out[DATE], format="ISO8601", errors="coerce").dt.strftime("%Y-%m-%d")
    for col in (DATE, LOCATION, *DIRECTION_COLUMNS, RAIN_TODAY, RAIN_TOMORROW):
        out[col] = out[col].astype("object").where(out[col].notna(), None)
    return out.reset_index(drop=True)


def read_weather_csv(path: str | object) -> pd.DataFrame:
    """Read a weatherAUS-format CSV (optionally gzipped) into the canonical frame."""
    df = pd.read_csv(path, na_values=["NA"], keep_default_na=True, dtype={LOCATION: "object"})
    return conform(df)
