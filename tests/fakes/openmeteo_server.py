"""A fake Open-Meteo server on 127.0.0.1 for tests of the Open-Meteo client.

It answers ``/v1/forecast`` (``past_days`` / ``forecast_days`` around a fixed ``today``) and
``/v1/archive`` (``start_date`` / ``end_date``) in the documented JSON shape with
``timeformat=unixtime``: one object for one location, a list for comma-separated
coordinates. Like the real API, a response uses one fixed ``utc_offset_seconds`` (the zone's
offset at the first local midnight) and 24 hourly values per requested day.

Values come from ``values(variable, latitude, longitude, unix_ts)``, deterministic by
default. Switches inject failures: ``nulls`` (``(variable, unix_ts)`` pairs sent as null),
``error_reason`` (HTTP 400 error body), ``fail_429`` / ``fail_500`` (that many failures
before answering normally; 429s carry ``Retry-After: <retry_after>``, default 0),
``broken_body`` (that many 200 replies cut off mid-JSON), ``wrong_units`` (that many 200
replies in m/s), ``pad_bytes`` (spaces appended to every JSON body), ``no_length`` (bodies
without Content-Length, ended by closing the connection), ``hang`` (accept the request,
never answer) and ``trickle`` (send a 200 header, then one byte a second, forever). Every
request is recorded.

    with FakeOpenMeteo(today=date(2024, 6, 30)) as fake:
        settings = Settings(openmeteo_url=fake.forecast_url, openmeteo_archive_url=fake.archive_url)
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

ValueFn = Callable[[str, float, float, int], float | None]

UNITS: dict[str, str] = {
    "temperature_2m": "°C",
    "relative_humidity_2m": "%",
    "precipitation": "mm",
    "pressure_msl": "hPa",
    "cloud_cover": "%",
    "wind_speed_10m": "km/h",
    "wind_direction_10m": "°",
    "wind_gusts_10m": "km/h",
    "sunshine_duration": "s",
}


def default_values(variable: str, lat: float, lon: float, ts: int) -> float | None:
    """Plausible, deterministic weather as a function of the location and the UTC hour."""
    hour = ts // 3600
    phase = 2 * math.pi * ((hour + 10) % 24) / 24  # roughly the Australian local hour
    site = (abs(lat) + abs(lon)) % 5
    table: dict[str, float] = {
        "temperature_2m": round(18 + site - 6 * math.cos(phase - 0.5), 1),
        "relative_humidity_2m": round(60 + 25 * math.cos(phase), 0),
        "precipitation": 0.4 if hour % 11 == 0 else 0.0,
        "pressure_msl": round(1013 + 4 * math.sin(hour / 17), 1),
        "cloud_cover": float((hour * 7) % 101),
        "wind_speed_10m": float((hour * 3) % 40) + 0.3,
        "wind_direction_10m": float((hour * 37) % 360),
        "wind_gusts_10m": float((hour * 3) % 40) * 1.6 + 5,
        "sunshine_duration": 3600.0 if 7 <= (hour + 10) % 24 <= 17 else 0.0,
    }
    return table.get(variable)


@dataclass
class RecordedRequest:
    """One request the fake received."""

    path: str
    params: dict[str, str]


@dataclass
class FakeOpenMeteo:
    """The fake server; start it with ``with`` (or ``start()`` / ``stop()``)."""

    today: date = field(default_factory=date.today)
    values: ValueFn = default_values
    nulls: set[tuple[str, int]] = field(default_factory=set)
    error_reason: str | None = None
    fail_429: int = 0
    fail_500: int = 0
    retry_after: str = "0"
    broken_body: int = 0
    wrong_units: int = 0
    pad_bytes: int = 0
    no_length: bool = False
    hang: bool = False
    trickle: bool = False
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._released = threading.Event()  # set by stop(): hanging handlers give up
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeOpenMeteo:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval keeps stop() (shutdown waits for one poll) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenMeteo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def forecast_url(self) -> str:
        return f"{self.base_url}/v1/forecast"

    @property
    def archive_url(self) -> str:
        return f"{self.base_url}/v1/archive"

    def paths(self) -> list[str]:
        """Paths of the requests received so far."""
        with self._lock:
            return [r.path for r in self.requests]

    # -- request handling --------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with self._lock:
            self.requests.append(RecordedRequest(url.path, params))
            hang, trickle = self.hang, self.trickle
        if hang:
            self._released.wait(120)
            return
        if trickle:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            handler.wfile.write(b"[")
            while not self._released.wait(1.0):
                try:
                    handler.wfile.write(b" ")
                    handler.wfile.flush()
                except OSError:
                    return
            return
        with self._lock:
            if self.fail_429 > 0:
                self.fail_429 -= 1
                self._send(
                    handler,
                    429,
                    {"error": True, "reason": "Too many requests"},
                    {"Retry-After": self.retry_after},
                )
                return
            if self.fail_500 > 0:
                self.fail_500 -= 1
                self._send(handler, 500, {"error": True, "reason": "Internal error"})
                return
            reason = self.error_reason
        if reason is not None:
            self._send(handler, 400, {"error": True, "reason": reason})
            return
        try:
            body = self._answer(url.path, params)
        except _BadRequest as e:
            self._send(handler, 400, {"error": True, "reason": str(e)})
            return
        with self._lock:
            broken, self.broken_body = self.broken_body > 0, max(0, self.broken_body - 1)
            units, self.wrong_units = self.wrong_units > 0, max(0, self.wrong_units - 1)
        if units:
            for loc in body if isinstance(body, list) else [body]:
                loc["hourly_units"]["wind_speed_10m"] = "m/s"
        if broken:
            data = json.dumps(body).encode()
            self._send_bytes(handler, 200, data[: len(data) // 2])
            return
        self._send(handler, 200, body)

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._send_bytes(
            handler, status, json.dumps(body).encode() + b" " * self.pad_bytes, headers
        )

    def _send_bytes(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        data: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        if self.no_length:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        else:
            handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        with contextlib.suppress(OSError):  # the client gave up (a size cap): fine
            handler.wfile.write(data)

    def _days(self, path: str, params: dict[str, str]) -> tuple[date, date]:
        """First and last local day the request asks for, with Open-Meteo's range checks."""
        if path == "/v1/forecast":
            past = int(params.get("past_days", "0"))
            ahead = int(params.get("forecast_days", "7"))
            if not 0 <= past <= 92:
                raise _BadRequest(f"Parameter 'past_days' must be between 0 and 92, got {past}")
            if not 0 <= ahead <= 16:
                raise _BadRequest("Parameter 'forecast_days' must be between 0 and 16")
            return self.today - timedelta(days=past), self.today + timedelta(days=ahead - 1)
        if path == "/v1/archive":
            try:
                first = date.fromisoformat(params["start_date"])
                last = date.fromisoformat(params["end_date"])
            except (KeyError, ValueError) as e:
                raise _BadRequest("Parameter 'start_date' and 'end_date' are required") from e
            if last < first:
                raise _BadRequest("End-date must be larger or equals than start-date")
            return first, last
        raise _BadRequest(f"Unknown endpoint {path}")

    def _answer(self, path: str, params: dict[str, str]) -> Any:
        if params.get("timeformat") != "unixtime":
            raise _BadRequest("this fake only speaks timeformat=unixtime")
        try:
            lats = [float(x) for x in params["latitude"].split(",")]
            lons = [float(x) for x in params["longitude"].split(",")]
        except (KeyError, ValueError) as e:
            raise _BadRequest("Parameter 'latitude' and 'longitude' are required") from e
        if len(lats) != len(lons):
            raise _BadRequest(
                "Parameter 'latitude' and 'longitude' must have the same number of elements"
            )
        variables = [v for v in params.get("hourly", "").split(",") if v]
        unknown = [v for v in variables if v not in UNITS]
        if unknown:
            raise _BadRequest(
                f"Cannot initialize WeatherVariable from invalid String value {unknown[0]}"
            )
        first, last = self._days(path, params)
        zone_names = params.get("timezone", "GMT").split(",")
        results = []
        for i, (lat, lon) in enumerate(zip(lats, lons, strict=True)):
            zone_name = zone_names[i if len(zone_names) > 1 else 0]
            zone = ZoneInfo("UTC" if zone_name == "GMT" else zone_name)
            midnight = datetime.combine(first, datetime.min.time(), tzinfo=zone)
            offset = int(midnight.utcoffset().total_seconds())  # type: ignore[union-attr]
            start_ts = int(midnight.timestamp())
            times = [start_ts + 3600 * k for k in range(24 * ((last - first).days + 1))]
            hourly: dict[str, list[Any]] = {"time": times}
            for var in variables:
                hourly[var] = [
                    None if (var, ts) in self.nulls else self.values(var, lat, lon, ts)
                    for ts in times
                ]
            results.append(
                {
                    "latitude": lat,
                    "longitude": lon,
                    "generationtime_ms": 0.1,
                    "utc_offset_seconds": offset,
                    "timezone": zone_name,
                    "timezone_abbreviation": midnight.tzname(),
                    "elevation": 10.0,
                    "hourly_units": {"time": "unixtime", **{v: UNITS[v] for v in variables}},
                    "hourly": hourly,
                }
            )
        return results[0] if len(results) == 1 else results


class _BadRequest(Exception):
    """A request the real API would answer with HTTP 400."""
