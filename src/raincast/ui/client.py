"""A small HTTP client for the prediction API, with one exception type per failure a user
can meet. Every exception's ``str()`` is a sentence fit to show on screen."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import requests

#: Rows per `/predict_batch` request: ~2.5 MB of JSON, far below the API's body limit.
BATCH_CHUNK_ROWS = 10_000

#: Scores from real daily operation, or from the champion re-predicting recent history it
#: did not train on; ``/monitor/scores`` also takes "all".
ScoreKind = Literal["live", "replayed"]


class ApiError(Exception):
    """Any failure talking to the API; the message is meant for the user."""


class LoginFailed(ApiError):
    """401 from ``POST /auth/token``: wrong username or password."""

    def __init__(self) -> None:
        super().__init__("Wrong username or password.")


class SessionExpired(ApiError):
    """401 on an authenticated call: the token expired or is no longer valid."""

    def __init__(self) -> None:
        super().__init__("Your session expired, please log in again.")


class Forbidden(ApiError):
    """403: the user's role may not call this endpoint."""

    def __init__(self) -> None:
        super().__init__("Your account is not allowed to do this (it needs another role).")


class PayloadTooLarge(ApiError):
    """413: the request body is over the API's limit."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"The request is too large for the API ({detail}); send fewer rows.")


@dataclass(frozen=True)
class FieldError:
    """One rejected input: ``path`` like ``rows.0.Humidity3pm`` or ``columns.Rainfall.12``."""

    path: str
    message: str


class InvalidInput(ApiError):
    """422: the API rejected some fields; ``errors`` name each field path."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        listed = "; ".join(f"{e.path}: {e.message}" for e in errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        super().__init__(f"The API rejected the input: {listed}{more}")


class RateLimited(ApiError):
    """429: too many requests; ``retry_after`` seconds when the API says."""

    def __init__(self, retry_after: str | None) -> None:
        self.retry_after = retry_after
        wait = f"wait {retry_after} s" if retry_after else "wait a moment"
        super().__init__(f"Too many requests: {wait} and try again.")


class NotFound(ApiError):
    """404: nothing there (yet); ``detail`` is the API's reason."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"The API has nothing there (HTTP 404): {detail}")


class ApiUnavailable(ApiError):
    """The API cannot be reached, timed out, or answered with a 5xx."""


@dataclass(frozen=True)
class Prediction:
    probability: float
    label: str
    threshold: float
    model_version: str


@dataclass(frozen=True)
class BatchResult:
    """Per-row results; ``model_version`` is per row because a champion can be swapped
    between two chunks of one upload."""

    probability: list[float]
    label: list[str]
    model_version: list[str]
    threshold: float


class ApiClient:
    """Talks to the raincast API at ``base_url``; holds the bearer ``token`` after `login`."""

    def __init__(self, base_url: str, timeout: float = 60.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token
        self._http = requests.Session()

    def login(self, username: str, password: str) -> str:
        """Exchange credentials for a bearer token (kept on the client and returned)."""
        try:
            body = self._request(
                "POST", "/auth/token", {"username": username, "password": password}, auth=False
            )
        except SessionExpired:
            raise LoginFailed() from None
        self.token = str(body["access_token"])
        return self.token

    def predict(self, rows: list[dict[str, Any]]) -> list[Prediction]:
        """Predictions for a few raw weatherAUS rows (``None`` = missing)."""
        body = self._request("POST", "/predict", {"rows": rows})
        return [
            Prediction(
                probability=float(p["probability"]),
                label=str(p["label"]),
                threshold=float(p["threshold"]),
                model_version=str(p["model_version"]),
            )
            for p in body["predictions"]
        ]

    def predict_batch(
        self, columns: dict[str, list[Any]], chunk_rows: int = BATCH_CHUNK_ROWS
    ) -> BatchResult:
        """Predictions for a columnar batch of any length, sent ``chunk_rows`` at a time.

        A 422 names rows by their index in the whole batch, not in the chunk."""
        n = len(next(iter(columns.values()), []))
        proba: list[float] = []
        labels: list[str] = []
        versions: list[str] = []
        threshold = math.nan
        for start in range(0, n, chunk_rows):
            chunk = {k: v[start : start + chunk_rows] for k, v in columns.items()}
            try:
                body = self._request("POST", "/predict_batch", {"columns": chunk})
            except InvalidInput as err:
                raise InvalidInput([_shift_row(e, start) for e in err.errors]) from None
            proba.extend(body["probability"])
            labels.extend(body["label"])
            versions.extend([str(body["model_version"])] * len(body["probability"]))
            threshold = float(body["threshold"])
        return BatchResult(proba, labels, versions, threshold)

    def model(self) -> dict[str, Any]:
        """``GET /model``: version, threshold, trained-at, test metrics, last refresh error."""
        body: dict[str, Any] = self._request("GET", "/model")
        return body

    def monitor_scores(self, kind: ScoreKind | Literal["all"] = "all") -> dict[str, Any]:
        """``GET /monitor/scores``: F1 / ROC AUC / calibration error per as-of date and
        window, each row ``kind`` live or replayed, oldest first."""
        return self._rows("/monitor/scores", {"kind": kind})

    def monitor_reliability(
        self, kind: ScoreKind | None = None, window_days: int = 30, bins: int = 10
    ) -> dict[str, Any]:
        """``GET /monitor/reliability``: predicted probability vs observed rain frequency
        per probability bin over the last ``window_days`` scored days (``kind`` None: the
        API's default, replayed when there is any)."""
        params: dict[str, Any] = {"window_days": window_days, "bins": bins}
        if kind is not None:
            params["kind"] = kind
        return self._rows("/monitor/reliability", params, rows="bins")

    def monitor_drift(self) -> dict[str, Any]:
        """``GET /monitor/drift``: drift share and drifted columns per cycle, oldest first."""
        return self._rows("/monitor/drift")

    def monitor_champions(self) -> dict[str, Any]:
        """``GET /monitor/champions``: every promotion decision (oldest first) and the
        current champion version."""
        return self._rows("/monitor/champions")

    def backtest(self) -> dict[str, Any]:
        """``GET /backtest``: the last backtest's per-policy ``summary``, ``retrains``, each
        policy's ``rolling`` scores and run metadata; `NotFound` when there is none."""
        return self._rows("/backtest", rows="summary")

    def backtest_plot(self, name: str) -> bytes:
        """``GET /backtest/plots/<name>``: one of the backtest's PNG plots."""
        resp = self._send("GET", f"/backtest/plots/{name}")
        if not resp.headers.get("Content-Type", "").startswith("image/png"):
            raise ApiUnavailable(f"The API sent an unexpected answer for the plot {name}.")
        return resp.content

    def _rows(
        self, path: str, params: dict[str, Any] | None = None, rows: str = "rows"
    ) -> dict[str, Any]:
        body = self._request("GET", path, params=params)
        if not isinstance(body.get(rows), list):
            raise ApiUnavailable(f"The API sent an unexpected answer for {path} (no {rows!r}).")
        return body

    def _request(
        self,
        method: str,
        path: str,
        payload: Any = None,
        auth: bool = True,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        resp = self._send(method, path, payload, auth, params)
        try:
            body: dict[str, Any] = resp.json()
        except ValueError:
            raise ApiUnavailable("The API sent an answer that is not JSON.") from None
        return body

    def _send(
        self,
        method: str,
        path: str,
        payload: Any = None,
        auth: bool = True,
        params: dict[str, Any] | None = None,
    ) -> requests.Response:
        """The API's answer to a request, or the `ApiError` for a failed one."""
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        try:
            resp = self._http.request(
                method,
                self.base_url + path,
                json=payload,
                params=params,
                headers=headers,
                timeout=self.timeout,
            )
        except requests.Timeout:
            raise ApiUnavailable(
                f"The API at {self.base_url} did not answer within {self.timeout:g} s."
            ) from None
        except requests.RequestException:
            raise ApiUnavailable(
                f"Cannot reach the prediction API at {self.base_url}. Is it running?"
            ) from None
        if resp.status_code < 400:
            return resp
        raise _error_for(resp)


def _detail(resp: requests.Response) -> Any:
    try:
        return resp.json().get("detail")
    except (ValueError, AttributeError):
        return None


def _error_for(resp: requests.Response) -> ApiError:
    status = resp.status_code
    if status == 401:
        return SessionExpired()
    if status == 403:
        return Forbidden()
    if status == 404:
        return NotFound(str(_detail(resp) or resp.reason))
    if status == 413:
        return PayloadTooLarge(str(_detail(resp) or "body over the limit"))
    if status == 422:
        return InvalidInput(_field_errors(_detail(resp)))
    if status == 429:
        return RateLimited(resp.headers.get("Retry-After"))
    if status == 503:
        detail = _detail(resp)
        return ApiUnavailable(
            f"The API is not ready: {detail}." if detail else "The API is not ready yet."
        )
    if status >= 500:
        detail = _detail(resp)
        if isinstance(detail, str) and detail:  # the API said why: say it on
            return ApiUnavailable(f"The API failed (HTTP {status}): {detail}")
        return ApiUnavailable(f"The API failed (HTTP {status}); try again later.")
    return ApiError(f"The API refused the request (HTTP {status}): {_detail(resp) or resp.reason}")


def _field_errors(detail: Any) -> list[FieldError]:
    """FastAPI / raincast 422 details (``[{"loc": [...], "msg": ...}]``) as field paths.

    FastAPI's leading ``body`` is dropped: users know their input, not the request."""
    if not isinstance(detail, list):
        return [FieldError("(request)", str(detail or "invalid input"))]
    errors = []
    for item in detail:
        loc = [str(p) for p in item.get("loc", [])] if isinstance(item, dict) else []
        if loc[:1] == ["body"]:
            loc = loc[1:]
        msg = item.get("msg", "invalid") if isinstance(item, dict) else str(item)
        errors.append(FieldError(".".join(loc) or "(request)", str(msg)))
    return errors


def _shift_row(error: FieldError, offset: int) -> FieldError:
    """``columns.<name>.<i>`` in a chunk starting at ``offset`` -> the batch-wide row index."""
    parts = error.path.split(".")
    if offset and len(parts) == 3 and parts[0] == "columns" and parts[2].isdigit():
        return FieldError(f"columns.{parts[1]}.{int(parts[2]) + offset}", error.message)
    return error
