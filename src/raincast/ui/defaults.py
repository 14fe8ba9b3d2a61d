"""Typical inputs for the predict form: a fixed, deliberately rough climate rule from a
station's latitude and the month, so the form starts from plausible values.

The rule (no data, no model; only a starting point the user edits):

* temperature: annual mean ``33.5 - 0.5 * |lat|`` deg C (Darwin ~27, Hobart ~12) with a
  seasonal swing of ``0.15 * |lat|`` deg C, warmest in January (southern hemisphere).
  MinTemp / Temp9am / Temp3pm / MaxTemp are the day's mean -6 / -2 / +5 / +6.
* humidity: 70 % at 9 am and 50 % at 3 pm; in the tropics (|lat| < 20) 80 / 65 in the wet
  season (November to April) and 55 / 35 in the dry season.
* evaporation: a quarter of the day's mean temperature in mm (at least 1 mm).
* the rest is constant: no rain (RainToday "No"), 8 h of sunshine, 4 oktas of cloud,
  gusts of 40 km/h, winds of 15 / 20 km/h, 1015 / 1013 hPa; wind directions missing.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

from raincast import schema

WET_SEASON_MONTHS = frozenset({11, 12, 1, 2, 3, 4})

_CONSTANT: dict[str, float] = {
    "Rainfall": 0.0,
    "Sunshine": 8.0,
    "WindGustSpeed": 40.0,
    "WindSpeed9am": 15.0,
    "WindSpeed3pm": 20.0,
    "Pressure9am": 1015.0,
    "Pressure3pm": 1013.0,
    "Cloud9am": 4.0,
    "Cloud3pm": 4.0,
}


def mean_temperature(latitude: float, month: int) -> float:
    """The rule's daily mean temperature (deg C) at ``latitude`` in ``month``."""
    lat = abs(latitude)
    return 33.5 - 0.5 * lat + 0.15 * lat * math.cos(2 * math.pi * (month - 1) / 12)


def typical_inputs(station: str, day: date) -> dict[str, Any]:
    """A full weatherAUS input row of typical values for ``station`` on ``day``.

    Raises KeyError for a station outside `raincast.schema.stations()`."""
    latitude = schema.stations()[station].latitude
    temp = mean_temperature(latitude, day.month)
    if abs(latitude) < 20:
        humidity = (80.0, 65.0) if day.month in WET_SEASON_MONTHS else (55.0, 35.0)
    else:
        humidity = (70.0, 50.0)
    numeric = {
        **_CONSTANT,
        "MinTemp": temp - 6,
        "MaxTemp": temp + 6,
        "Temp9am": temp - 2,
        "Temp3pm": temp + 5,
        "Humidity9am": humidity[0],
        "Humidity3pm": humidity[1],
        "Evaporation": max(1.0, temp / 4),
    }
    row: dict[str, Any] = {schema.DATE: day.isoformat(), schema.LOCATION: station}
    for col, (lo, hi) in schema.NUMERIC_RANGES.items():
        row[col] = round(min(max(numeric[col], lo), hi), 1)
    row.update(dict.fromkeys(schema.DIRECTION_COLUMNS))
    row[schema.RAIN_TODAY] = "No"
    return row
