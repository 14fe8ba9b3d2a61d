"""Open-Meteo client: hourly model data turned into weatherAUS-style daily rows.

Open-Meteo serves gridded model/reanalysis data, not station observations, so these rows
approximate what the Bureau of Meteorology would have reported. The daily values follow the
BoM conventions of the weatherAUS file, per station and day D in the station's local time:

* Rainfall(D) and MinTemp(D): the 24 h ending 09:00 D (hourly precipitation is the sum over
  the preceding hour, so the hours stamped after 09:00 D-1 up to and including 09:00 D).
* MaxTemp(D): the 24 h from 09:00 D to 09:00 D+1.
* 9am / 3pm columns: spot values at local 09:00 / 15:00.
* WindGustSpeed / WindGustDir and Sunshine: the local calendar day D.

Windows are cut in UTC from the local clock times via zoneinfo, so daylight-saving days
(23 or 25 local hours) get the right number of hours. A window with a missing or null hour
gives a missing value, never a partial sum.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from raincast import schema
from raincast.settings import Settings
from raincast.sources import SourceUnavailableError
from raincast.sources.http import BoundedJsonClient, HttpPolicy, HttpStatusError, Reply

logger = logging.getLogger(__name__)

#: Hourly variables requested from both endpoints (Open-Meteo names).
HOURLY_VARIABLES: tuple[str, ...] = (
    "temperature_2m",
    "relative_humidity_2m",
    "precipitation",
    "pressure_msl",
    "cloud_cover",
    "wind_speed_10m",
    "wind_direction_10m",
    "wind_gusts_10m",
    "sunshine_duration",
)

#: Units we rely on; a response in other units is rejected rather than silently mis-scaled.
EXPECTED_UNITS: dict[str, str] = {
    "temperature_2m": "°C",
    "precipitation": "mm",
    "pressure_msl": "hPa",
    "wind_speed_10m": "km/h",
    "wind_gusts_10m": "km/h",
}

#: Days younger than this (relative to `today`) come from the forecast endpoint's
#: ``past_days`` (max 92, and we add a two-day margin); older days from the archive, which
#: lags real time by about five days.
RECENT_DAYS = 90
MAX_PAST_DAYS = 92
MAX_FORECAST_DAYS = 16

#: Locations per request. Open-Meteo accepts many more, but smaller batches keep URLs short
#: and a failed request cheap to repeat.
DEFAULT_BATCH_SIZE = 10

HOUR_S = 3600

Reduction = Literal["sum", "min", "max", "argmax"]


class OpenMeteoRequestError(ValueError):
    """Open-Meteo rejected the request (HTTP 4xx); ``reason`` is the API's own text."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(f"Open-Meteo rejected the request (HTTP {status}): {reason}")
        self.reason = reason
        self.status = status


# --------------------------------------------------------------------------- conversions


def round_half_up(x: float) -> float:
    """Round to the nearest integer with halves going up (Python's round() goes to even)."""
    return float(math.floor(x + 0.5)) if math.isfinite(x) else math.nan


def degrees_to_compass(degrees: float | None) -> str | None:
    """Map a bearing in degrees to the 16-point compass; 11.25 is NNE, 348.75 is N."""
    if degrees is None or not math.isfinite(degrees):
        return None
    sector = math.floor((degrees % 360.0) / 22.5 + 0.5) % 16
    return schema.COMPASS_POINTS[sector]


def percent_to_oktas(percent: float | None) -> float:
    """Cloud cover in percent to oktas 0-8 (round(pct / 12.5)); missing stays NaN."""
    if percent is None or not math.isfinite(percent):
        return math.nan
    return min(8.0, max(0.0, round_half_up(percent / 12.5)))


def wind_speed_kmh(speed: float | None) -> float:
    """Wind speed in km/h rounded to whole km/h, as the weatherAUS columns are."""
    if speed is None or not math.isfinite(speed):
        return math.nan
    return max(0.0, round_half_up(speed))


def wind_direction(speed_kmh: float, degrees: float | None) -> str | None:
    """Compass direction, or None when the (rounded) speed is calm or unknown (BoM: calm ⇒ NA)."""
    if not math.isfinite(speed_kmh) or speed_kmh == 0:
        return None
    return degrees_to_compass(degrees)


def local_epoch(day: date, hour: int, tz: ZoneInfo) -> int:
    """Unix seconds of the local wall-clock time ``hour``:00 on ``day`` in ``tz``."""
    return int(datetime.combine(day, time(hour), tzinfo=tz).timestamp())


def window_reduce(
    ts: np.ndarray, values: np.ndarray, lo: np.ndarray, hi: np.ndarray, how: Reduction
) -> np.ndarray:
    """Reduce hourly ``values`` over the stamps in each window ``(lo, hi]`` (unix seconds).

    ``ts`` must be sorted and hourly. A window gives NaN unless it holds every hour
    ((hi - lo) / 3600 stamps) and none of them is null. ``argmax`` returns the index into
    ``values`` of the (first) maximum, or -1.
    """
    out = np.full(len(lo), -1 if how == "argmax" else np.nan, dtype=float)
    starts = np.searchsorted(ts, lo, side="right")
    ends = np.searchsorted(ts, hi, side="right")
    expected = (np.asarray(hi) - np.asarray(lo)) // HOUR_S
    for k, (i, j) in enumerate(zip(starts, ends, strict=True)):
        seg = values[i:j]
        if j - i != expected[k] or j == i or np.isnan(seg).any():
            continue
        if how == "sum":
            out[k] = seg.sum()
        elif how == "min":
            out[k] = seg.min()
        elif how == "max":
            out[k] = seg.max()
        else:
            out[k] = i + int(np.argmax(seg))
    return out


def _take(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``values[idx]`` with NaN where ``idx`` is -1."""
    if not len(values):
        return np.full(len(idx), np.nan)
    return np.where(idx >= 0, values[np.clip(idx, 0, None)], np.nan)


def spot_index(ts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the stamp at each target time (or up to 59 min before it), else -1.

    The slack matters for half-hour zones (Adelaide, Darwin), whose hourly stamps may fall
    on local half hours: 09:00 then reads the 08:30 value.
    """
    if not len(ts):
        return np.full(len(targets), -1)
    idx = np.searchsorted(ts, targets, side="right") - 1
    ok = (idx >= 0) & (targets - ts[np.clip(idx, 0, None)] < HOUR_S)
    return np.where(ok, idx, -1)


def daily_from_hourly(hourly: pd.DataFrame, timezone: str, days: Sequence[date]) -> pd.DataFrame:
    """weatherAUS daily values for ``days`` from one station's hourly Open-Meteo data.

    ``hourly`` has a ``time`` column of unix seconds (UTC) and one float column per entry of
    HOURLY_VARIABLES (NaN where Open-Meteo sent null or the variable is absent). Returns
    one row per day with Date and every weatherAUS column except Location and the Rain flags.
    """
    tz = ZoneInfo(timezone)
    frame = hourly.drop_duplicates("time").sort_values("time")
    ts = frame["time"].to_numpy(dtype=np.int64)

    def col(name: str) -> np.ndarray:
        if name not in frame:
            return np.full(len(frame), np.nan)
        return frame[name].to_numpy(dtype=float)

    at9 = np.array([local_epoch(d, 9, tz) for d in days], dtype=np.int64)
    prev9 = np.array([local_epoch(d - timedelta(days=1), 9, tz) for d in days], dtype=np.int64)
    next9 = np.array([local_epoch(d + timedelta(days=1), 9, tz) for d in days], dtype=np.int64)
    at15 = np.array([local_epoch(d, 15, tz) for d in days], dtype=np.int64)
    midnight = np.array([local_epoch(d, 0, tz) for d in days], dtype=np.int64)
    next_midnight = np.array(
        [local_epoch(d + timedelta(days=1), 0, tz) for d in days], dtype=np.int64
    )

    temp = col("temperature_2m")
    out: dict[str, Any] = {schema.DATE: [d.isoformat() for d in days]}
    out[schema.RAINFALL] = np.round(window_reduce(ts, col("precipitation"), prev9, at9, "sum"), 1)
    out["MinTemp"] = np.round(window_reduce(ts, temp, prev9, at9, "min"), 1)
    out["MaxTemp"] = np.round(window_reduce(ts, temp, at9, next9, "max"), 1)
    # Open-Meteo has no class-A pan evaporation, so the column stays empty.
    out["Evaporation"] = np.full(len(days), np.nan)
    # sunshine_duration is seconds of sunshine in the preceding hour; calendar day D is
    # the stamps in (00:00 D, 00:00 D+1].
    sunshine = window_reduce(ts, col("sunshine_duration"), midnight, next_midnight, "sum")
    out["Sunshine"] = np.round(sunshine / HOUR_S, 1)

    gust = col("wind_gusts_10m")
    direction = col("wind_direction_10m")
    gust_at = window_reduce(ts, gust, midnight, next_midnight, "argmax").astype(int)
    gust_speed = [wind_speed_kmh(gust[i]) if i >= 0 else math.nan for i in gust_at]
    out["WindGustSpeed"] = gust_speed
    out["WindGustDir"] = [
        wind_direction(s, direction[i]) if i >= 0 else None
        for s, i in zip(gust_speed, gust_at, strict=True)
    ]

    speed = col("wind_speed_10m")
    spot_columns = {
        "Temp": (temp, 1),
        "Humidity": (col("relative_humidity_2m"), 0),
        "Pressure": (col("pressure_msl"), 1),
    }
    cloud = col("cloud_cover")
    for label, targets in (("9am", at9), ("3pm", at15)):
        idx = spot_index(ts, targets)
        for name, (values, digits) in spot_columns.items():
            out[f"{name}{label}"] = np.round(_take(values, idx), digits)
        out[f"Cloud{label}"] = [percent_to_oktas(v) for v in _take(cloud, idx)]
        speeds = [wind_speed_kmh(v) for v in _take(speed, idx)]
        out[f"WindSpeed{label}"] = speeds
        out[f"WindDir{label}"] = [
            wind_direction(s, d) for s, d in zip(speeds, _take(direction, idx), strict=True)
        ]
    return pd.DataFrame(out)


def parse_location(payload: dict[str, Any]) -> pd.DataFrame:
    """One location's Open-Meteo JSON → frame with ``time`` (unix s) and a column per variable."""
    if not isinstance(payload, dict) or "hourly" not in payload:
        raise ValueError("Open-Meteo response has no 'hourly' block")
    hourly = payload["hourly"]
    times = hourly.get("time", [])
    if any(not isinstance(t, int) for t in times):
        raise ValueError("Open-Meteo times are not unix seconds (timeformat=unixtime ignored?)")
    units = payload.get("hourly_units", {})
    for var, unit in EXPECTED_UNITS.items():
        if var in units and units[var] != unit:
            raise ValueError(f"Open-Meteo sent {var} in {units[var]!r}, expected {unit!r}")
    frame = pd.DataFrame({"time": np.asarray(times, dtype=np.int64)})
    for var in HOURLY_VARIABLES:
        values = hourly.get(var)
        if values is None:
            frame[var] = np.nan
            continue
        if len(values) != len(times):
            raise ValueError(f"Open-Meteo {var} has {len(values)} values for {len(times)} times")
        # dtype=float turns JSON nulls (None) into NaN.
        frame[var] = np.asarray(values, dtype=float)
    return frame


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class _Segment:
    """A run of days served by one endpoint."""

    endpoint: Literal["forecast", "archive"]
    start: date
    end: date


class OpenMeteoSource:
    """Daily weatherAUS rows for the weatherAUS stations from the Open-Meteo APIs."""

    name = "openmeteo"

    def __init__(
        self,
        settings: Settings,
        stations: Sequence[str] | None = None,
        today: date | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        backoff_factor: float = 1.0,
    ) -> None:
        known = schema.stations()
        names = list(stations) if stations is not None else sorted(known)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown stations: {unknown}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.settings = settings
        self.stations = tuple(names)
        self.batch_size = batch_size
        self.backoff_factor = backoff_factor
        self._today = today
        self._client: BoundedJsonClient | None = None

    # -- transport -----------------------------------------------------------------------

    @property
    def client(self) -> BoundedJsonClient:
        """The bounded, cached JSON client (see sources/http.py); its cache folder is created
        on first use."""
        if self._client is None:
            st = self.settings
            policy = HttpPolicy(
                connect_timeout_s=st.http_connect_timeout_s,
                read_timeout_s=st.http_timeout_s,
                deadline_s=st.http_deadline_s,
                retries=st.http_retries,
                backoff_factor=self.backoff_factor,
                max_reply_bytes=st.http_max_reply_bytes,
                cache_ttl_s=st.http_cache_ttl_s,
            )
            self._client = BoundedJsonClient(st.cache_dir / "openmeteo.sqlite", policy)
        return self._client

    def close(self) -> None:
        """Close the HTTP session (and its SQLite cache connection)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> OpenMeteoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- fetching ------------------------------------------------------------------------

    def fetch(self, start: date, end: date) -> pd.DataFrame:
        """Rows for every station and every day ``start <= D <= end`` (weatherAUS schema)."""
        if start > end:
            raise ValueError(f"start {start} is after end {end}")
        today = self._today or date.today()
        frames: list[pd.DataFrame] = []
        for segment in self._segments(start, end, today):
            for timezone, batch in self._batches():
                frames.extend(self._fetch_batch(segment, timezone, batch, today))
        if not frames:
            return schema.empty_frame()
        df = pd.concat(frames, ignore_index=True)
        df[schema.RAIN_TODAY] = schema.rain_flag(df[schema.RAINFALL])
        df[schema.RAIN_TOMORROW] = None  # not known on the day; the store derives it
        df = df.sort_values([schema.DATE, schema.LOCATION], kind="stable")
        return schema.conform(df)

    def _segments(self, start: date, end: date, today: date) -> list[_Segment]:
        """Split [start, end] into an archive part (old days) and a forecast part (recent)."""
        first_recent = today - timedelta(days=RECENT_DAYS - 1)
        segments: list[_Segment] = []
        if start < first_recent:
            segments.append(_Segment("archive", start, min(end, first_recent - timedelta(1))))
        if end >= first_recent:
            segments.append(_Segment("forecast", max(start, first_recent), end))
        return segments

    def _batches(self) -> Iterator[tuple[str, list[str]]]:
        """Stations grouped by timezone (one ``timezone`` per request), then chunked."""
        by_tz: dict[str, list[str]] = {}
        for name in self.stations:
            by_tz.setdefault(schema.stations()[name].timezone, []).append(name)
        for timezone, names in by_tz.items():
            for i in range(0, len(names), self.batch_size):
                yield timezone, names[i : i + self.batch_size]

    def _params(self, segment: _Segment, timezone: str, names: list[str], today: date) -> dict:
        """Query parameters; one extra local day either side feeds the 09:00 windows."""
        info = [schema.stations()[n] for n in names]
        params: dict[str, Any] = {
            "latitude": ",".join(f"{s.latitude:.4f}" for s in info),
            "longitude": ",".join(f"{s.longitude:.4f}" for s in info),
            "hourly": ",".join(HOURLY_VARIABLES),
            "timezone": timezone,
            "timeformat": "unixtime",
            "wind_speed_unit": "kmh",
            "temperature_unit": "celsius",
            "precipitation_unit": "mm",
        }
        if segment.endpoint == "archive":
            params["start_date"] = (segment.start - timedelta(days=1)).isoformat()
            params["end_date"] = (segment.end + timedelta(days=1)).isoformat()
            return params
        # Open-Meteo counts days from *its* today in the station's zone, which can be a day
        # off ours near midnight; one more day of margin either side covers that.
        past = (today - segment.start).days + 2
        ahead = (segment.end - today).days + 3
        if ahead > MAX_FORECAST_DAYS:
            logger.warning(
                "Open-Meteo forecasts only %d days ahead; later days will be empty",
                MAX_FORECAST_DAYS,
            )
        params["past_days"] = min(max(past, 0), MAX_PAST_DAYS)
        params["forecast_days"] = min(max(ahead, 1), MAX_FORECAST_DAYS)
        return params

    def _fetch_batch(
        self, segment: _Segment, timezone: str, names: list[str], today: date
    ) -> list[pd.DataFrame]:
        url = (
            self.settings.openmeteo_archive_url
            if segment.endpoint == "archive"
            else self.settings.openmeteo_url
        )
        params = self._params(segment, timezone, names, today)
        reply = self._get_json(url, params)
        try:
            frames = self._parse_reply(reply.payload, timezone, names, segment)
        except ValueError as err:
            if not reply.from_cache:
                raise SourceUnavailableError(
                    f"Open-Meteo at {_host(url)} sent a reply raincast cannot use: {err} "
                    "(not cached; the next fetch asks again)"
                ) from None
            # A cached reply that no longer parses (e.g. cached by an older version): drop
            # it and ask the server once more.
            self.client.forget(reply)
            reply = self._get_json(url, params, refresh=True)
            frames = self._parse_reply(reply.payload, timezone, names, segment)
        self.client.keep(reply)  # only now: a reply is cached once it parsed
        return frames

    @staticmethod
    def _parse_reply(
        payload: Any, timezone: str, names: list[str], segment: _Segment
    ) -> list[pd.DataFrame]:
        locations = payload if isinstance(payload, list) else [payload]
        if len(locations) != len(names):
            raise ValueError(
                f"Open-Meteo returned {len(locations)} locations for {len(names)} requested"
            )
        days = list(pd.date_range(segment.start, segment.end, freq="D").date)
        frames = []
        for name, location in zip(names, locations, strict=True):
            daily = daily_from_hourly(parse_location(location), timezone, days)
            daily.insert(1, schema.LOCATION, name)
            frames.append(daily)
        return frames

    def _get_json(self, url: str, params: dict[str, Any], refresh: bool = False) -> Reply:
        """GET within the client's bounds; a final 4xx or an error body becomes
        OpenMeteoRequestError, everything else that fails SourceUnavailableError."""
        try:
            reply = self.client.get(url, params, refresh=refresh)
        except HttpStatusError as err:
            raise OpenMeteoRequestError(_reason(err.body, err.reason), err.status) from None
        payload = reply.payload
        if isinstance(payload, dict) and payload.get("error"):
            raise OpenMeteoRequestError(str(payload.get("reason", "unknown error")), 200)
        return reply


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _reason(body: bytes, http_reason: str) -> str:
    """The ``reason`` of an Open-Meteo error body, or the start of the raw text."""
    try:
        parsed = json.loads(body)
    except ValueError:
        text = body[:200].decode("utf-8", errors="replace")
        return text or http_reason or "no reason given"
    if isinstance(parsed, dict) and "reason" in parsed:
        return str(parsed["reason"])
    return str(parsed)[:200]
