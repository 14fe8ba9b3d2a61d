"""Backtest results for the API's ``GET /backtest`` and ``GET /backtest/plots/{name}``: what
`raincast backtest` wrote into its folder (`Settings.backtest_results_dir`), read-only.

The answer is the run's metadata, the per-policy summary, every retrain with its decision
and, when the file holds per-day rows, each policy's rolling live scores thinned to at most
`MAX_POINTS` days (promotion days always kept), so it stays small however long the run.
Without ``backtest.json`` the committed benchmark's ``backtest_summary.json`` (the same
without per-day rows) is read. Plots are served only by their names in
`catalog.BACKTEST_PLOTS`: no request names a file. No results is `BacktestNotFoundError`
(404); a file that is not a backtest result is `BacktestUnreadableError` (500); both carry
a sentence for the caller, never a path of the server or a trace.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raincast.catalog import BACKTEST_PLOTS, BACKTEST_RESULT, BACKTEST_SUMMARY

log = logging.getLogger(__name__)

#: Days per policy in the rolling series of the answer.
MAX_POINTS = 200
#: Larger files are refused (a ten-year daily run of five policies is ~15 MB).
MAX_RESULT_BYTES = 256 * 1024 * 1024
MAX_PLOT_BYTES = 32 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOW_TO = (
    "run `raincast backtest --data FILE --start A --end B` where the API can read its "
    "folder (RAINCAST_BACKTEST_DIR, default <RAINCAST_HOME>/backtest)"
)


class BacktestNotFoundError(LookupError):
    """No results (or no such plot) to serve: 404 with this message."""


class BacktestUnreadableError(RuntimeError):
    """The results are there but are not a backtest's: 500 with this message."""


# --- the file's contract (what `BacktestResult.as_dict` writes, as far as the API uses it) --


class _Open(BaseModel):
    """A record whose other fields pass through unchecked."""

    model_config = ConfigDict(extra="allow")


class PolicySummary(_Open):
    policy: str
    days: int
    roc_auc: float | None
    f1: float | None
    mean_rolling_roc_auc: float | None = None
    mean_rolling_f1: float | None = None
    retrains: int
    failed_retrains: int = 0
    promotions: int
    compute_seconds: float


class Retrain(_Open):
    policy: str
    day: date
    promoted: bool
    reasons: list[str] = []
    error: str = ""


class DayRow(BaseModel):
    """The per-day fields the rolling series needs (the rest is left out)."""

    date: date
    policy: str
    champion_version: str
    rolling_roc_auc: float | None = None
    rolling_f1: float | None = None
    rolling_n_scored: int = 0
    promoted: bool | None = None
    compute_seconds: float = 0.0


class ResultFile(BaseModel):
    start: date
    end: date
    policies: list[str] = Field(min_length=1)
    summary: dict[str, PolicySummary]
    retrains: list[Retrain] = []
    initial: dict[str, Any] | None = None
    #: The rows, or (in the committed summary) a sentence saying where they went.
    days: list[DayRow] | str | None = None
    last_days: dict[str, date] = {}
    history: dict[str, Any] = {}
    params: dict[str, str] = {}
    distinct_fits: int | None = None
    wall_seconds: float | None = None
    meta: dict[str, Any] = {}


# --- pure views --------------------------------------------------------------------------------


def kept_indices(n: int, most: int, always: set[int]) -> list[int]:
    """Indices of ``n`` days thinned to about ``most`` evenly spaced ones (the first and
    the last included) plus ``always``."""
    if n == 0:
        return []
    step = max(1, math.ceil(n / most))
    return sorted({*range(0, n, step), n - 1, *always})


def rolling_rows(days: Sequence[DayRow], most: int = MAX_POINTS) -> list[dict[str, Any]]:
    """Each policy's rolling live scores and cumulative compute per day, thinned to about
    ``most`` days per policy (promotion days kept), policy by policy, oldest first."""
    by_policy: dict[str, list[DayRow]] = {}
    for day in days:
        by_policy.setdefault(day.policy, []).append(day)
    rows: list[dict[str, Any]] = []
    for policy, part in by_policy.items():
        part = sorted(part, key=lambda d: d.date)
        cumulative, total = [], 0.0
        for d in part:
            total += d.compute_seconds
            cumulative.append(total)
        promotions = {i for i, d in enumerate(part) if d.promoted}
        for i in kept_indices(len(part), most, promotions):
            d = part[i]
            rows.append(
                {
                    "date": d.date.isoformat(),
                    "policy": policy,
                    "champion_version": d.champion_version,
                    "rolling_roc_auc": d.rolling_roc_auc,
                    "rolling_f1": d.rolling_f1,
                    "rolling_n_scored": d.rolling_n_scored,
                    "promoted": d.promoted,
                    "cumulative_compute_seconds": round(cumulative[i], 3),
                }
            )
    return rows


def parse_result(raw: bytes, name: str) -> ResultFile:
    """The result file's bytes, checked; NaN and infinities read as missing (JSON has none)."""
    try:
        body = json.loads(raw, parse_constant=lambda _: None)
        result = ResultFile.model_validate(body)
    except (ValueError, RecursionError) as err:  # ValidationError and JSONDecodeError too
        raise BacktestUnreadableError(
            f"{name} is not a backtest result ({_reason(err)}); {HOW_TO} again"
        ) from None
    missing = [p for p in result.policies if p not in result.summary]
    if missing:
        raise BacktestUnreadableError(
            f"{name} is not a backtest result (no summary for {', '.join(missing)}); {HOW_TO} again"
        )
    return result


def _reason(err: Exception) -> str:
    if isinstance(err, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()[:3]
        ]
        more = f" and {err.error_count() - 3} more" if err.error_count() > 3 else ""
        return "; ".join(parts)[:300] + more
    if isinstance(err, RecursionError):
        return "not JSON: nested too deeply"
    if isinstance(err, json.JSONDecodeError):
        return f"not JSON: {err.msg} at line {err.lineno}"
    return f"not JSON: {str(err)[:120]}"


def summary_answer(result: ResultFile, source: str, plots: list[str]) -> dict[str, Any]:
    """``GET /backtest``'s body: everything but the per-day rows, plus the thinned series."""
    days = result.days if isinstance(result.days, list) else None
    return {
        "source": source,
        "start": result.start.isoformat(),
        "end": result.end.isoformat(),
        "policies": result.policies,
        "last_days": {p: d.isoformat() for p, d in result.last_days.items()},
        "history": result.history,
        "params": result.params,
        "distinct_fits": result.distinct_fits,
        "wall_seconds": result.wall_seconds,
        "meta": result.meta,
        "summary": [result.summary[p].model_dump(mode="json") for p in result.policies],
        "initial": result.initial,
        "retrains": [r.model_dump(mode="json") for r in result.retrains],
        "n_days": None if days is None else len(days),
        "rolling": rolling_rows(days or []),
        "plots": plots,
    }


# --- the folder, read-only ---------------------------------------------------------------------


class BacktestResults:
    """The backtest results in ``directory``; the parsed answer is kept until the file
    changes (a long run's JSON takes a moment to read)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._cached: tuple[tuple[str, int, int], dict[str, Any]] | None = None

    def summary(self) -> dict[str, Any]:
        """The answer for the newest result file (``backtest.json``, else the summary)."""
        path = self._result_path()
        raw, key = self._read(path, MAX_RESULT_BYTES)
        with self._lock:
            cached = self._cached
        if cached is None or cached[0] != key:
            result = parse_result(raw, path.name)
            cached = (key, summary_answer(result, path.name, []))
            with self._lock:
                self._cached = cached
        return {**cached[1], "plots": self.plots()}

    def plots(self) -> list[str]:
        """The plots there are, by name."""
        return [name for name in BACKTEST_PLOTS if (self.directory / name).is_file()]

    def plot(self, name: str) -> bytes:
        """The PNG named ``name``, one of `BACKTEST_PLOTS` (others: not found, and the
        name is not echoed)."""
        if name not in BACKTEST_PLOTS:
            raise BacktestNotFoundError(f"no such plot; the plots are {', '.join(BACKTEST_PLOTS)}")
        path = self.directory / name
        if not path.is_file():
            raise BacktestNotFoundError(f"no backtest plot {name} yet: {HOW_TO}")
        data, _ = self._read(path, MAX_PLOT_BYTES)
        if not data.startswith(PNG_SIGNATURE):
            log.warning("backtest: %s is not a PNG image", path)
            raise BacktestUnreadableError(f"{name} is not a PNG image; {HOW_TO} again")
        return data

    def _result_path(self) -> Path:
        for name in (BACKTEST_RESULT, BACKTEST_SUMMARY):
            path = self.directory / name
            if path.is_file():
                return path
        raise BacktestNotFoundError(f"no backtest results yet: {HOW_TO}")

    def _read(self, path: Path, limit: int) -> tuple[bytes, tuple[str, int, int]]:
        """The file's bytes (refused over ``limit``) and what identifies this version."""
        try:
            with path.open("rb") as f:
                stat = os.fstat(f.fileno())
                if stat.st_size > limit:
                    raise BacktestUnreadableError(
                        f"{path.name} is larger than the API reads ({limit // 2**20} MB)"
                    )
                data = f.read(limit + 1)
        except FileNotFoundError:  # removed since it was found
            raise BacktestNotFoundError(f"no backtest results yet: {HOW_TO}") from None
        except OSError as err:
            log.warning("backtest: cannot read %s: %s", path, err)
            raise BacktestUnreadableError(
                f"{path.name} cannot be read by the API ({type(err).__name__})"
            ) from None
        if len(data) > limit:
            raise BacktestUnreadableError(
                f"{path.name} is larger than the API reads ({limit // 2**20} MB)"
            )
        return data, (path.name, stat.st_mtime_ns, stat.st_size)
