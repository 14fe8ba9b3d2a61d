"""A deterministic, offline weather generator that looks like weatherAUS.

Used by tests, demos and the end-to-end pipeline when no network is available. Each
(station, year) block is simulated from its own seed, derived from
``(seed, station, year)``, so a day's row never depends on which range was requested:
``fetch(d, d)`` equals the ``d`` row of any longer fetch. Weather persistence restarts at
each 1 January, which is the price of that property.

The model, in one paragraph: every station has a climate derived from its latitude,
longitude, distance to the coast and (for a few) elevation - a seasonal rain-day
probability (summer monsoon in the north, winter rain in the south-west and south),
temperature, humidity, pressure, cloud and wind climatologies. A latent "wetness" state
``w`` follows an AR(1) process per day (half shared across the state, half local) and
describes the weather from 09:00 on day D to 09:00 on D+1. It drives D's 3 pm humidity,
cloud, pressure fall and sunshine, and ``w + noise`` crossing a seasonal threshold decides
whether more than 1 mm is recorded on D+1 - so, as in the real data, day-D afternoon
observations predict tomorrow's rain.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from statistics import NormalDist

import numpy as np
import pandas as pd

from raincast import schema

log = logging.getLogger(__name__)

_KMH_PER_KNOT = 1.852
_DAYS = 367  # one spin-up day (31 Dec of the previous year) + up to 366 days

# Latent weather state: AR(1) coefficient, share of variance common to a state, and the
# noise between the state and tomorrow's rain (smaller = more predictable rain).
_PHI = 0.62
_REGIONAL_SHARE = 0.5
_RAIN_NOISE = 0.7

# Coarse coastline as (lat, lon) polylines; ~50 km accuracy is plenty to tell coastal
# stations from inland ones. Spencer Gulf is cut off on purpose: Woomera is desert.
_MAINLAND = (
    (-12.4, 130.8), (-11.1, 132.5), (-12.2, 136.8), (-13.9, 136.4), (-15.8, 136.9),
    (-17.0, 139.5), (-17.5, 140.8), (-15.0, 141.5), (-12.6, 141.8), (-10.7, 142.5),
    (-14.0, 143.6), (-16.9, 145.8), (-19.3, 146.8), (-20.3, 148.7), (-23.4, 150.8),
    (-24.9, 152.4), (-26.7, 153.1), (-28.2, 153.6), (-30.3, 153.2), (-32.9, 151.8),
    (-33.9, 151.3), (-34.4, 150.9), (-35.7, 150.2), (-37.5, 149.9), (-37.9, 148.0),
    (-39.1, 146.4), (-38.4, 145.2), (-37.9, 144.9), (-38.2, 144.4), (-38.8, 143.5),
    (-38.4, 142.2), (-38.4, 141.6), (-38.1, 140.8), (-37.2, 139.8), (-35.6, 138.1),
    (-34.9, 138.5), (-35.0, 137.0), (-34.8, 135.7), (-33.0, 134.2), (-32.0, 132.5),
    (-31.6, 131.0), (-31.7, 129.0), (-32.3, 126.0), (-33.9, 121.9), (-34.9, 118.0),
    (-35.0, 116.7), (-34.4, 115.1), (-33.6, 115.0), (-32.5, 115.7), (-31.9, 115.75),
    (-30.0, 115.0), (-28.8, 114.6), (-26.0, 113.5), (-24.9, 113.6), (-21.9, 114.1),
    (-20.7, 116.8), (-20.3, 118.6), (-19.0, 121.5), (-17.9, 122.2), (-14.9, 125.0),
    (-14.1, 126.7), (-15.5, 128.1), (-14.5, 129.5), (-13.0, 130.2), (-12.4, 130.8),
)  # fmt: skip
_TASMANIA = (
    (-40.8, 145.1), (-41.0, 146.8), (-40.9, 148.3), (-42.2, 148.3), (-43.1, 147.9),
    (-43.6, 146.9), (-42.9, 147.35), (-43.2, 146.0), (-42.2, 145.2), (-40.8, 144.7),
    (-40.8, 145.1),
)  # fmt: skip
_ISLANDS = ((-29.04, 167.94),)  # Norfolk Island is all coast

# Stations high enough for the lapse rate to matter (metres); lat/lon cannot tell.
_ELEVATION_M: dict[str, float] = {
    "MountGinini": 1760.0, "Canberra": 578.0, "Tuggeranong": 587.0, "Ballarat": 435.0,
    "AliceSprings": 546.0, "Uluru": 492.0, "Cobar": 260.0, "Nuriootpa": 275.0,
}  # fmt: skip

# Random per-column missing rates, on top of instruments a station never had.
_MISSING_RATE: dict[str, float] = {
    "MinTemp": 0.008, "MaxTemp": 0.007, "Rainfall": 0.015, "Evaporation": 0.03,
    "Sunshine": 0.03, "WindGustSpeed": 0.02, "WindSpeed9am": 0.008, "WindSpeed3pm": 0.012,
    "Humidity9am": 0.01, "Humidity3pm": 0.02, "Pressure9am": 0.02, "Cloud9am": 0.04,
    "Cloud3pm": 0.05, "Temp9am": 0.008, "Temp3pm": 0.02, "WindDir9am": 0.01,
    "WindDir3pm": 0.005,
}  # fmt: skip
_ROW_DROPOUT = 0.004  # whole day lost (station down); Date and Location stay

# Named random streams, drawn in one call per block so the draw order is fixed.
_NORMALS = (
    "local", "eps", "temp", "tmax", "tmin", "t9", "t3", "h9", "h3", "press", "p9", "dp",
    "c9", "c3", "sun", "evap", "w9", "w3", "gust", "d9", "d3", "dg",
)  # fmt: skip
_UNIFORMS = ("trace", "calm9", "calm3", "row", *_MISSING_RATE)


def _unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) from strings (Python's hash() is salted per process)."""
    return zlib.crc32(":".join(parts).encode()) / 2**32


def _key(*parts: str) -> int:
    return zlib.crc32(":".join(parts).encode())


def _station(name: str) -> schema.Station:
    try:
        return schema.stations()[name]
    except KeyError:
        raise ValueError(f"unknown station {name!r}; see schema.station_names()") from None


def missing_instruments(station: str) -> frozenset[str]:
    """Columns that are always missing at ``station`` (instruments it never had).

    Fixed per station name, independent of the seed, with shares close to weatherAUS:
    about a quarter are automatic stations without cloud, sunshine or evaporation, a few
    lack only one of those, and a handful have no barometer or no gust anemometer.
    """
    _station(station)
    cols: set[str] = set()
    u = _unit_hash("instruments", station)
    if u < 0.25:
        cols |= {"Cloud9am", "Cloud3pm", "Sunshine", "Evaporation"}
    elif u < 0.40:
        cols.add("Sunshine")
    elif u < 0.50:
        cols.add("Evaporation")
    if _unit_hash("barometer", station) < 0.08:
        cols |= {"Pressure9am", "Pressure3pm"}
    if _unit_hash("anemometer", station) < 0.05:
        cols |= {"WindGustSpeed", "WindGustDir"}
    return frozenset(cols)


def _coast_distance_km(lat: float, lon: float) -> float:
    """Distance from (lat, lon) to the coarse coastline, on a local flat projection."""
    kx = 111.32 * math.cos(math.radians(lat))
    ky = 110.57
    best = math.inf
    for line in (_MAINLAND, _TASMANIA):
        pts = np.array(line)
        ax, ay = (pts[:-1, 1] - lon) * kx, (pts[:-1, 0] - lat) * ky
        bx, by = (pts[1:, 1] - lon) * kx, (pts[1:, 0] - lat) * ky
        dx, dy = bx - ax, by - ay
        t = np.clip(-(ax * dx + ay * dy) / np.maximum(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
        best = min(best, float(np.min(np.hypot(ax + t * dx, ay + t * dy))))
    for ilat, ilon in _ISLANDS:
        best = min(best, math.hypot((ilon - lon) * kx, (ilat - lat) * ky))
    return best


@dataclass(frozen=True)
class _Climate:
    """Per-station climatology; arrays are indexed by day of year - 1 (length 366)."""

    state: str
    rain_p: np.ndarray  # P(Rainfall > 1 mm)
    rain_c: np.ndarray  # latent threshold for > 1 mm
    trace_c: np.ndarray  # latent threshold for any rain
    rain_scale: float  # mm; heavier falls in the tropics and on the east coast
    t_mean: np.ndarray
    t_range: np.ndarray
    t_sd: float
    h3: np.ndarray
    h9: np.ndarray
    pressure: np.ndarray
    p_fall: float  # typical 9 am -> 3 pm pressure fall (hPa)
    cloud: np.ndarray  # cloud logit
    day_length: np.ndarray  # hours
    wind: float  # typical 3 pm wind (knots)
    calm9: float
    wind_dir: np.ndarray  # prevailing direction (radians, from north, clockwise)
    wet_dir: float  # direction of rain-bearing winds (radians)


def _circular_mix(a: np.ndarray | float, b: np.ndarray | float, w: np.ndarray) -> np.ndarray:
    """Angle between ``a`` (weight 1 - w) and ``b`` (weight w), via unit vectors."""
    x = (1 - w) * np.sin(a) + w * np.sin(b)
    y = (1 - w) * np.cos(a) + w * np.cos(b)
    return np.arctan2(x, y)


@cache
def _climate(name: str) -> _Climate:
    """Derive a station's climate from where it is; heuristics, not a fit to BoM normals."""
    st = _station(name)
    lat, lon = st.latitude, st.longitude
    k = 1.0 - math.exp(-_coast_distance_km(lat, lon) / 300.0)
    elev = _ELEVATION_M.get(name, 0.0)
    doy = np.arange(366)
    theta = 2 * math.pi * doy / 365.25

    def seasonal(peak_doy: float) -> np.ndarray:
        return np.cos(theta - 2 * math.pi * peak_doy / 365.25)

    tropical = min(max((26.0 + lat) / 9.0, 0.0), 1.0)  # summer monsoon weight
    east = min(max((lon - 149.5) / 2.0, 0.0), 1.0) if lon < 160 else 0.0  # east coast
    mediterranean = (
        min(max((-lat - 28.0) / 4.0, 0.0), 1.0)
        * min(max((148.0 - lon) / 5.0, 0.0), 1.0)
        * (1.0 - 0.6 * k)
    )
    ridge = math.exp(-(((lat + 28.0) / 5.0) ** 2))  # the dry subtropical belt
    south = min(max((-lat - 36.0) / 3.0, 0.0), 1.0)  # the wet Southern Ocean margin
    mean_p = (0.065 + 0.22 * (1 - k)) * (1 - 0.45 * ridge * (1 - east)) + 0.03 * south
    shape = (
        1.0
        + 0.95 * tropical * seasonal(35)
        + 0.35 * east * (1 - tropical) * seasonal(75)
        + 0.85 * mediterranean * seasonal(195)
    )
    rain_p = np.clip(mean_p * shape, 0.005, 0.85)
    # y = w + noise with w ~ N(0, 1); thresholds put P(y > c) at the climatological rate.
    scale = math.sqrt(1 + _RAIN_NOISE**2)
    inv = NormalDist().inv_cdf
    rain_c = np.array([scale * inv(1 - p) for p in rain_p])
    trace_c = np.array([scale * inv(1 - min(0.95, 1.7 * p)) for p in rain_p])

    t_mean_annual = 27.5 - 0.45 * (-lat - 12.4) + 2.5 * k - 6.5 * elev / 1000.0
    t_amp = (4.0 + 4.5 * k) * (0.35 + 0.65 * min(max((-lat - 14.0) / 10.0, 0.0), 1.0))
    t_mean = t_mean_annual + t_amp * seasonal(20)
    t_range = (9.0 + 7.0 * k) * (1.0 + 0.12 * tropical * seasonal(200))

    h3 = np.clip(30.0 + 80.0 * rain_p - 10.0 * k + 5.0 * (1 - k) + 0.01 * elev, 8, 90)
    h9 = np.clip(h3 + 17.0 + 4.0 * k, 15, 97)

    pressure = (
        1017.0
        + 4.5 * (1 - tropical) * seasonal(195)
        - 3.5 * tropical * seasonal(20)
        - 2.0 * min(max((-lat - 38.0) / 5.0, 0.0), 1.0)
    )
    cloud = 4.5 * (rain_p - 0.2) - 0.4 * k

    decl = np.radians(23.44) * np.sin(2 * math.pi * (284 + doy + 1) / 365.0)
    cos_h = np.clip(-math.tan(math.radians(lat)) * np.tan(decl), -1.0, 1.0)
    day_length = 24.0 / math.pi * np.arccos(cos_h)

    # Prevailing winds: monsoon NW / trade ESE in the north, sea-breeze NE / westerly on
    # the east coast, SE in the centre, southerly summer / westerly winter in the south.
    if lat > -20:
        summer, winter, wet = 315.0, 110.0, 315.0
    elif east > 0.5:
        summer, winter, wet = 60.0, 260.0, 150.0
    elif lat > -28:
        summer, winter, wet = 120.0, 110.0, 20.0
    else:
        summer, winter, wet = 160.0, 290.0, 300.0
    summer_weight = 0.5 * (1 + seasonal(20))
    wind_dir = _circular_mix(math.radians(winter), math.radians(summer), summer_weight)

    return _Climate(
        state=st.state,
        rain_p=rain_p,
        rain_c=rain_c,
        trace_c=trace_c,
        rain_scale=5.0 + 9.0 * tropical + 3.0 * east,
        t_mean=t_mean,
        t_range=t_range,
        t_sd=2.0 + 1.5 * k + 0.8 * (1 - tropical),
        h3=h3,
        h9=h9,
        pressure=pressure,
        p_fall=1.8 + 1.4 * k,
        cloud=cloud,
        day_length=day_length,
        wind=8.0 + 3.0 * (1 - k) + 2.0 * min(max((-lat - 35.0) / 5.0, 0.0), 1.0),
        calm9=0.02 + 0.08 * k,
        wind_dir=wind_dir,
        wet_dir=math.radians(wet),
    )


def _ar1(innovations: np.ndarray, phi: float) -> np.ndarray:
    """Stationary unit-variance AR(1) driven by standard-normal ``innovations``."""
    out = np.empty_like(innovations)
    gain = math.sqrt(1 - phi * phi)
    x = float(innovations[0])
    out[0] = x
    for i, e in enumerate(innovations[1:].tolist(), start=1):
        x = phi * x + gain * e
        out[i] = x
    return out


def _regional(seed: int, state: str, year: int) -> np.ndarray:
    """The wetness component shared by every station in a state (fronts, lows, monsoon)."""
    rng = np.random.default_rng([seed, 1, _key("region", state), year])
    return _ar1(rng.standard_normal(_DAYS), _PHI)


def _logit(percent: np.ndarray) -> np.ndarray:
    return np.log(percent / (100.0 - percent))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Inverse of _logit: a percentage."""
    return 100.0 / (1.0 + np.exp(-x))


def _knots_to_kmh(knots: np.ndarray) -> np.ndarray:
    """Observers report whole knots; weatherAUS stores them converted to whole km/h."""
    return np.round(np.round(knots) * _KMH_PER_KNOT)


def _to_compass(angle: np.ndarray) -> np.ndarray:
    """Radians (from north, clockwise) to 16-point compass indices."""
    return np.round(np.mod(angle, 2 * math.pi) / (2 * math.pi / 16)).astype(np.int64) % 16


def _round_to(x: np.ndarray, step: float) -> np.ndarray:
    return np.round(np.round(x / step) * step, 1)


def _block(seed: int, station: str, year: int) -> dict[str, np.ndarray]:
    """Simulate one station for one calendar year; values for every day of the year.

    Numeric columns are float arrays with NaN for missing; direction columns are compass
    indices with -1 for missing (calm or not observed).
    """
    clim = _climate(station)
    rng = np.random.default_rng([seed, 0, _key("station", station), year])
    z = dict(zip(_NORMALS, rng.standard_normal((len(_NORMALS), _DAYS)), strict=True))
    u = dict(zip(_UNIFORMS, rng.random((len(_UNIFORMS), _DAYS)), strict=True))
    gamma = rng.gamma(0.75, 1.0, _DAYS)

    n = (date(year, 12, 31) - date(year, 1, 1)).days + 1
    doy = np.arange(n)
    wet = (
        math.sqrt(_REGIONAL_SHARE) * _regional(seed, clim.state, year)
        + math.sqrt(1 - _REGIONAL_SHARE) * _ar1(z["local"], _PHI)
    )[: n + 1]
    before, after = wet[:-1], wet[1:]  # 09:00 D-1 -> 09:00 D, and 09:00 D -> 09:00 D+1
    cut = slice(1, n + 1)  # per-day noise aligned with day D

    def noise(name: str) -> np.ndarray:
        return z[name][cut]

    # Rainfall(D) is the 24 h to 09:00 on D, so it comes from the *previous* window.
    intensity = before + _RAIN_NOISE * z["eps"][:n]
    rain_c, trace_c = clim.rain_c[doy], clim.trace_c[doy]
    heavy = 1.2 + clim.rain_scale * gamma[cut] * np.exp(0.5 * (intensity - rain_c))
    trace = 0.2 * np.ceil(5 * u["trace"][cut] ** 1.8)  # mostly 0.2 mm, up to 1.0 mm
    rainfall = np.where(
        intensity > rain_c,
        np.maximum(_round_to(np.minimum(heavy, 400.0), 0.2), 1.2),
        np.where(intensity > trace_c, np.round(trace, 1), 0.0),
    )
    rained = np.clip(intensity - trace_c, 0.0, 3.0)  # how wet the night was

    # Temperature: seasonal mean, an AR(1) anomaly, and cloud narrowing the daily range.
    anomaly = clim.t_sd * _ar1(z["temp"], 0.75)[cut]
    day_range = clim.t_range[doy] * np.clip(1.0 - 0.2 * after - 0.1 * before, 0.3, 1.5)
    t_mid = clim.t_mean[doy] + anomaly
    max_temp = t_mid + day_range / 2 - 0.6 * np.maximum(after, 0) + 0.8 * noise("tmax")
    min_temp = t_mid - day_range / 2 + 0.4 * before + 0.8 * noise("tmin")
    max_temp = np.maximum(max_temp, min_temp + 0.5)
    spread = max_temp - min_temp
    temp9 = min_temp + (0.4 - 0.1 * np.tanh(rained)) * spread + 0.5 * noise("t9")
    temp3 = max_temp - (0.12 + 0.1 * np.tanh(np.maximum(after, 0))) * spread
    temp3 = temp3 - 0.4 * np.abs(noise("t3"))

    # Relative humidity moves in logit space so it saturates near 0 and 100 % smoothly.
    humidity9 = _sigmoid(
        _logit(clim.h9[doy]) + 0.3 * before + 0.25 * after + 0.2 * rained + 0.3 * noise("h9")
    )
    humidity3 = _sigmoid(
        _logit(clim.h3[doy]) + 0.65 * after + 0.1 * before - 0.035 * anomaly + 0.3 * noise("h3")
    )

    # Pressure: a synoptic anomaly of its own plus lows with wet weather; a falling
    # barometer between 9 am and 3 pm heralds rain overnight.
    synoptic = _ar1(z["press"], 0.8)[cut]
    pressure9 = clim.pressure[doy] + 5.0 * synoptic - 2.0 * (before + after) + 0.6 * noise("p9")
    fall = clim.p_fall + 1.8 * (after - before) + 0.7 * noise("dp")
    pressure3 = pressure9 - fall

    # Cloud logit -> oktas through a steep sigmoid: skies tend to be clear or overcast.
    cloud9_logit = clim.cloud[doy] + 0.7 * (before + after) + 0.9 * noise("c9")
    cloud3_logit = clim.cloud[doy] + 1.4 * after + 0.9 * noise("c3")
    cloud9_frac = 1 / (1 + np.exp(-1.5 * cloud9_logit))
    cloud3_frac = 1 / (1 + np.exp(-1.5 * cloud3_logit))
    day_cloud = (cloud9_frac + 2 * cloud3_frac) / 3
    day_len = clim.day_length[doy]
    sunshine = day_len * np.clip(0.97 - 0.8 * day_cloud**1.5 + 0.06 * noise("sun"), 0, 0.95)

    # Wind in knots; observers report whole knots and nothing for calm.
    windy = 1 + 0.15 * np.maximum(after, 0)
    wind9 = 0.75 * clim.wind * np.exp(0.45 * noise("w9") - 0.1) * windy
    wind9 = np.where(u["calm9"][cut] < clim.calm9, 0.0, wind9)
    wind3 = clim.wind * np.exp(0.35 * noise("w3") - 0.06) * windy
    wind3 = np.where(u["calm3"][cut] < 0.01, 0.0, wind3)
    gust = (
        1.3 * np.maximum(wind9, wind3)
        + 1.0
        + 1.2 * np.abs(fall - clim.p_fall)
        + 2.5 * np.maximum(after, 0)
        + 2.0 * np.exp(0.5 * noise("gust"))
    )
    wind9, wind3, gust = (np.minimum(x, 70.0) for x in (wind9, wind3, gust))

    evaporation = (
        0.18 * (max_temp - 5) + 0.25 * sunshine + 0.05 * wind3 - 0.035 * (humidity3 - 50)
    ) * np.exp(0.25 * noise("evap"))
    evaporation = _round_to(np.clip(evaporation, 0.0, 60.0), 0.2)

    # Winds swing towards the rain-bearing direction as the weather turns wet.
    prevailing = clim.wind_dir[doy]
    dir9 = _circular_mix(prevailing, clim.wet_dir, 1 / (1 + np.exp(-2 * (before - 0.5))))
    dir3 = _circular_mix(prevailing, clim.wet_dir, 1 / (1 + np.exp(-2 * (after - 0.5))))
    dir9 = dir9 + 1.2 * noise("d9")
    dir3 = dir3 + 1.0 * noise("d3")
    dir_gust = dir3 + 0.3 * noise("dg")

    out: dict[str, np.ndarray] = {
        "MinTemp": np.round(np.clip(min_temp, -15, 48), 1),
        "MaxTemp": np.round(np.clip(max_temp, -10, 50), 1),
        "Rainfall": rainfall,
        "Evaporation": evaporation,
        "Sunshine": np.round(sunshine, 1),
        "WindGustSpeed": _knots_to_kmh(np.maximum(gust, 3.0)),
        "WindSpeed9am": _knots_to_kmh(wind9),
        "WindSpeed3pm": _knots_to_kmh(wind3),
        "Humidity9am": np.round(humidity9),
        "Humidity3pm": np.round(humidity3),
        "Pressure9am": np.round(np.clip(pressure9, 975, 1042), 1),
        "Pressure3pm": np.round(np.clip(pressure3, 973, 1040), 1),
        "Cloud9am": np.clip(np.round(8 * cloud9_frac), 0, 8),
        "Cloud3pm": np.clip(np.round(8 * cloud3_frac), 0, 8),
        "Temp9am": np.round(np.clip(temp9, -12, 48), 1),
        "Temp3pm": np.round(np.clip(temp3, -10, 50), 1),
    }
    dirs = {
        "WindGustDir": _to_compass(dir_gust),
        "WindDir9am": _to_compass(dir9),
        "WindDir3pm": _to_compass(dir3),
    }

    _apply_missing(out, dirs, u, station, cut)
    return {**out, **dirs}


def _apply_missing(
    values: dict[str, np.ndarray],
    dirs: dict[str, np.ndarray],
    u: dict[str, np.ndarray],
    station: str,
    cut: slice,
) -> None:
    """Blank out calm directions, random gaps, lost days and absent instruments in place."""
    for col, rate in _MISSING_RATE.items():
        gap = u[col][cut] < rate
        if col in dirs:
            dirs[col][gap] = -1
        else:
            values[col][gap] = np.nan
    # Instruments are paired: one gap loses both readings of the pair.
    values["Pressure3pm"][np.isnan(values["Pressure9am"])] = np.nan
    dirs["WindGustDir"][np.isnan(values["WindGustSpeed"])] = -1
    for speed, direction in (("WindSpeed9am", "WindDir9am"), ("WindSpeed3pm", "WindDir3pm")):
        # Calm (0 km/h) has no direction; an unread anemometer has neither.
        dirs[direction][~(values[speed] > 0)] = -1
    dropped = u["row"][cut] < _ROW_DROPOUT
    never = missing_instruments(station)
    for col in (*values, *dirs):
        absent = np.ones_like(dropped) if col in never else dropped
        if col in dirs:
            dirs[col][absent] = -1
        else:
            values[col][absent] = np.nan


def _as_date(value: date, what: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    raise TypeError(f"{what} must be a datetime.date, got {type(value).__name__}")


class SyntheticSource:
    """Realistic, reproducible weatherAUS-style observations without a network.

    ``seed`` selects the weather; ``stations`` limits the output to some weatherAUS
    locations (default: all 49). Rows come ordered by Date, then Location.
    """

    name = "synthetic"

    def __init__(self, seed: int = 0, stations: Sequence[str] | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if isinstance(stations, str):
            raise TypeError("stations must be a sequence of names, not a single string")
        names = schema.station_names() if stations is None else tuple(stations)
        if not names:
            raise ValueError("stations must not be empty")
        for s in names:
            _station(s)
        self.seed = int(seed)
        self.stations: tuple[str, ...] = tuple(sorted(set(names)))

    def __repr__(self) -> str:
        return f"SyntheticSource(seed={self.seed}, stations={len(self.stations)})"

    def fetch(self, start: date, end: date) -> pd.DataFrame:
        """Rows for every station and every day with ``start <= Date <= end``."""
        start, end = _as_date(start, "start"), _as_date(end, "end")
        if start > end:
            raise ValueError(f"start {start} is after end {end}")
        began = time.perf_counter()
        parts: list[dict[str, np.ndarray]] = []
        for year in range(start.year, end.year + 1):
            first = date(year, 1, 1)
            lo = (max(start, first) - first).days
            hi = (min(end, date(year, 12, 31)) - first).days + 1
            dates = np.datetime64(first, "D") + np.arange(lo, hi)
            for station in self.stations:
                block = _block(self.seed, station, year)
                part = {col: arr[lo:hi] for col, arr in block.items()}
                part[schema.DATE] = dates
                part[schema.LOCATION] = np.full(hi - lo, station, dtype=object)
                parts.append(part)

        columns = {col: np.concatenate([p[col] for p in parts]) for col in parts[0]}
        # Parts are in (year, sorted station) order, so a stable sort on Date suffices.
        order = np.argsort(columns[schema.DATE], kind="stable")
        labels = np.array([*schema.COMPASS_POINTS, None], dtype=object)
        frame = pd.DataFrame(
            {
                col: labels[arr[order]] if col in schema.DIRECTION_COLUMNS else arr[order]
                for col, arr in columns.items()
            }
        )
        frame[schema.RAIN_TODAY] = schema.rain_flag(frame[schema.RAINFALL])
        frame[schema.RAIN_TOMORROW] = None  # the store derives it from the next day
        out = schema.conform(frame)
        log.debug(
            "synthetic: %d rows, %d stations, %s..%s in %.3fs",
            len(out), len(self.stations), start, end, time.perf_counter() - began,
        )  # fmt: skip
        return out
