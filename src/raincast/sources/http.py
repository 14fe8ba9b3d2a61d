"""JSON over HTTP with bounds: the transport under the Open-Meteo client.

* Time: each attempt gets a connect and a read timeout, and the whole request (attempts,
  back-off waits, ``Retry-After`` pauses and reading the body) ends by a deadline. The
  body is read one socket read at a time, so a server that trickles bytes cannot
  stretch the read timeout forever.
* Size: a reply larger than ``max_reply_bytes`` (after decompression) is refused.
* Retries (tenacity): only transient failures are retried with exponential back-off:
  connection refused or reset, timeouts, 429/5xx, a body that is not JSON. A name that
  does not resolve, a TLS failure or a bad URL fails at once: no back-off can fix them.
* Cache (requests-cache, on disk): read-only for the session; a reply is stored only
  when the caller has parsed it and calls ``keep``. A broken or refused reply is never
  cached, and a cached reply the caller cannot use is dropped with ``forget``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import requests_cache
import tenacity
from urllib3.exceptions import NameResolutionError, ProtocolError, ReadTimeoutError

from raincast.sources import SourceUnavailableError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class HttpPolicy:
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    deadline_s: float = 60.0
    retries: int = 5
    backoff_factor: float = 1.0
    max_reply_bytes: int = 64 * 1024 * 1024
    cache_ttl_s: int = 6 * 3600


class HttpStatusError(Exception):
    """A final, non-retryable HTTP status (4xx other than 429) with the start of its body."""

    def __init__(self, status: int, body: bytes, reason: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.body, self.reason = status, body, reason


@dataclass(frozen=True)
class Reply:
    """A parsed JSON reply and the response it came from (for ``keep`` / ``forget``)."""

    payload: Any
    response: requests.Response

    @property
    def from_cache(self) -> bool:
        return bool(getattr(self.response, "from_cache", False))


class _Transient(Exception):
    """A failure worth another attempt; ``retry_after`` is the server's requested pause."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.what, self.retry_after = what, retry_after


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and everything it wraps (causes, contexts, urllib3 reasons, args)."""
    seen: set[int] = set()
    todo = [err]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        nested = [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        todo.extend(x for x in nested if isinstance(x, BaseException))


def _is_name_resolution(err: BaseException) -> bool:
    return any(isinstance(e, NameResolutionError | socket.gaierror) for e in _causes(err))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class BoundedJsonClient:
    """GET JSON with timeouts, a deadline, a size cap, transient-only retries and an
    explicit cache (see the module docstring)."""

    def __init__(self, cache_path: Path, policy: HttpPolicy) -> None:
        self.cache_path = cache_path
        self.policy = policy
        self._session: requests_cache.CachedSession | None = None

    @property
    def session(self) -> requests_cache.CachedSession:
        """The cached session; created (with its cache folder) on first use."""
        if self._session is None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            self._session = requests_cache.CachedSession(
                cache_name=str(self.cache_path),
                backend="sqlite",
                expire_after=self.policy.cache_ttl_s,
                allowable_codes=(200,),
                allowable_methods=("GET",),
                read_only=True,  # written only by keep(), after the caller parsed the reply
            )
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- cache ----------------------------------------------------------------------------

    def keep(self, reply: Reply) -> None:
        """Cache a reply the caller has parsed and accepted."""
        if reply.from_cache:
            return
        from requests_cache.policy.expiration import get_expiration_datetime

        expires = get_expiration_datetime(self.policy.cache_ttl_s)
        self.session.cache.save_response(reply.response, expires=expires)

    def forget(self, reply: Reply) -> None:
        """Drop a cached reply the caller could not use."""
        self.session.cache.delete(requests=[reply.response.request])

    # -- requests -------------------------------------------------------------------------

    def get(self, url: str, params: dict[str, Any], *, refresh: bool = False) -> Reply:
        """GET ``url`` and parse its JSON, within the policy's bounds.

        Raises SourceUnavailableError (unresolvable host, deadline or retries exhausted,
        reply too large, TLS/URL errors) or HttpStatusError (a final 4xx).
        """
        host = urlsplit(url).netloc or url
        p = self.policy
        started = time.monotonic()
        deadline = started + p.deadline_s
        attempts = 0

        def attempt() -> Reply:
            nonlocal attempts
            attempts += 1
            return self._attempt(url, params, host, deadline, refresh)

        def wait(state: tenacity.RetryCallState) -> float:
            err = state.outcome.exception() if state.outcome else None
            pause = getattr(err, "retry_after", None)
            if pause is not None:
                return float(pause)
            return float(p.backoff_factor * 2 ** (state.attempt_number - 1))

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            stop=(
                tenacity.stop_after_attempt(p.retries + 1)
                | tenacity.stop_before_delay(p.deadline_s)
            ),
            wait=wait,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Transient as last:
            spent = time.monotonic() - started
            why = (
                f"the {p.deadline_s:g} s deadline (RAINCAST_HTTP_DEADLINE_S) allows no more"
                if attempts <= p.retries
                else f"{p.retries} retries (RAINCAST_HTTP_RETRIES)"
            )
            raise SourceUnavailableError(
                f"Open-Meteo at {host} failed: {last.what}; gave up after {attempts} "
                f"attempt(s) in {spent:.1f} s ({why})"
            ) from None

    def _attempt(
        self, url: str, params: dict[str, Any], host: str, deadline: float, refresh: bool
    ) -> Reply:
        p = self.policy
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Transient(f"no answer within {p.deadline_s:g} s")
        timeout = (min(p.connect_timeout_s, remaining), min(p.read_timeout_s, remaining))
        try:
            if refresh:
                with self.session.cache_disabled():
                    resp = self.session.get(url, params=params, timeout=timeout, stream=True)
            else:
                resp = self.session.get(url, params=params, timeout=timeout, stream=True)
        except requests.exceptions.ConnectionError as err:
            if _is_name_resolution(err):
                raise SourceUnavailableError(
                    f"Open-Meteo host {urlsplit(url).hostname} cannot be resolved (DNS): "
                    "check the network, or RAINCAST_OPENMETEO_URL / "
                    "RAINCAST_OPENMETEO_ARCHIVE_URL"
                ) from None
            if isinstance(err, requests.exceptions.SSLError):
                raise SourceUnavailableError(
                    f"TLS with Open-Meteo at {host} failed: {err}"
                ) from None
            raise _Transient(f"cannot connect ({type(err).__name__})") from None
        except requests.exceptions.Timeout:
            raise _Transient(f"no answer within {timeout[1]:.0f} s") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as err:
            raise SourceUnavailableError(
                f"bad Open-Meteo URL {url!r} ({err}): check RAINCAST_OPENMETEO_URL"
            ) from None
        cached = bool(getattr(resp, "from_cache", False))
        log.info(
            "GET %s %s -> %s%s", host, urlsplit(url).path, resp.status_code, " (cached)" * cached
        )
        try:
            if resp.status_code in RETRY_STATUSES:
                raise _Transient(
                    f"HTTP {resp.status_code}", _retry_after(resp.headers.get("Retry-After"))
                )
            body = self._body(resp, host, deadline)
            if resp.status_code != 200:
                raise HttpStatusError(resp.status_code, body[:2000], resp.reason or "")
        finally:
            resp.close()
        try:
            payload = json.loads(body)
        except ValueError:
            raise _Transient(f"a reply that is not JSON ({len(body)} bytes)") from None
        return Reply(payload, resp)

    def _body(self, resp: requests.Response, host: str, deadline: float) -> bytes:
        """The decoded body, read within the deadline and the size cap."""
        limit = self.policy.max_reply_bytes
        too_big = (
            f"Open-Meteo at {host} sent a reply over {limit} bytes "
            "(RAINCAST_HTTP_MAX_REPLY_BYTES); refused, nothing cached"
        )
        if getattr(resp, "from_cache", False):
            content = resp.content
            if len(content) > limit:
                raise SourceUnavailableError(too_big)
            return content
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit and resp.status_code == 200:
            raise SourceUnavailableError(too_big)
        buf = bytearray()
        try:
            while True:
                if time.monotonic() > deadline:
                    raise _Transient(
                        f"the reply was still arriving at the {self.policy.deadline_s:g} s deadline"
                    )
                chunk = resp.raw.read1(_CHUNK, decode_content=True)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > limit:
                    raise SourceUnavailableError(too_big)
        except (ReadTimeoutError, ProtocolError, OSError) as err:
            raise _Transient(f"the reply broke off ({type(err).__name__})") from None
        resp._content = bytes(buf)
        resp._content_consumed = True  # type: ignore[attr-defined]
        return resp._content
