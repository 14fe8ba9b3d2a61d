"""Monitor's data, read from the raw store for the API's ``GET /monitor/*`` routes: live and
replayed scores, a reliability diagram, drift per cycle and the champion timeline; and
the champion spans ``GET /model`` shows.

The contract (fields, defaults, errors) is docs of issue 21's Monitor API. The API never
writes the store: it opens a read-only engine per request (`store.connect` would create
tables, or a SQLite file), so a missing store is reported, never made. Query parameters
are checked here and refused with a reason (`BadQueryError`, 422); a store that is absent
or unreachable is `StoreUnavailableError` (503). "Nothing yet" is an empty ``rows``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa

from raincast import schema
from raincast.data import store
from raincast.data.champions import champion_spans

log = logging.getLogger(__name__)

T = TypeVar("T")

SCORE_KINDS = ("live", "replayed", "all")
RELIABILITY_KINDS = ("replayed", "live")
WINDOW_DAYS = (1, 366, 30)  # min, max, default
BINS = (2, 50, 10)


class BadQueryError(ValueError):
    """A query parameter is out of its contract (422 with this message)."""


class StoreUnavailableError(RuntimeError):
    """The raw store is absent or unreachable (503 with this message)."""


# --- query parameters ----------------------------------------------------------------------


def parse_choice(name: str, value: str | None, allowed: tuple[str, ...], default: str) -> str:
    """``value`` if it is one of ``allowed`` (``default`` when not given)."""
    if value is None or value == "":
        return default
    if value not in allowed:
        raise BadQueryError(f"{name} must be one of {', '.join(allowed)} (got {value[:40]!r})")
    return value


def parse_int(name: str, value: str | None, bounds: tuple[int, int, int]) -> int:
    """A whole number within ``bounds`` = (min, max, default)."""
    lo, hi, default = bounds
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise BadQueryError(f"{name} must be a whole number (got {value[:40]!r})") from None
    if not lo <= n <= hi:
        raise BadQueryError(f"{name} must be between {lo} and {hi} (got {n})")
    return n


# --- pure views ----------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """A JSON float: None for missing and NaN."""
    if value is None:
        return None
    f = float(value)
    return None if math.isnan(f) else f


def _iso_datetime(value: Any) -> str:
    """ISO 8601 with an offset; SQLite gives back naive UTC timestamps."""
    if not isinstance(value, datetime):
        value = pd.Timestamp(value).to_pydatetime()
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def score_rows(live: pd.DataFrame, replayed: pd.DataFrame) -> list[dict[str, Any]]:
    """Score rows of both kinds, oldest first (then kind, then window length)."""
    rows = []
    for kind, frame, versions in (
        ("live", live, "model_versions"),
        ("replayed", replayed, "model_version"),
    ):
        for r in frame.to_dict("records"):
            rows.append(
                {
                    "kind": kind,
                    "as_of_date": str(r["as_of_date"]),
                    "window_days": int(r["window_days"]),
                    "window_start": str(r["window_start"]),
                    "n_scored": int(r["n_scored"]),
                    "f1": _num(r["f1"]),
                    "roc_auc": _num(r["roc_auc"]),
                    "calibration_error": _num(r.get("calibration_error")),
                    "base_rate": _num(r["base_rate"]),
                    "mean_probability": _num(r["mean_probability"]),
                    "model_versions": str(r[versions] or ""),
                }
            )
    rows.sort(key=lambda r: (r["as_of_date"], r["kind"], r["window_days"]))
    return rows


def reliability_bins(y: np.ndarray, p: np.ndarray, bins: int) -> list[dict[str, Any]]:
    """Reliability diagram: equal-width probability bins (the last one closed), each with
    its count, mean probability and observed rain frequency; empty bins left out. The
    same binning as the live calibration error (`steps.score.expected_calibration_error`)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append(
                {
                    "lower": float(edges[b]),
                    "upper": float(edges[b + 1]),
                    "n": int(mask.sum()),
                    "mean_probability": float(np.mean(p[mask])),
                    "observed_frequency": float(np.mean(y[mask])),
                }
            )
    return out


def reliability(scored: pd.DataFrame, kind: str, window_days: int, bins: int) -> dict[str, Any]:
    """The reliability answer for predictions with an ``outcome`` (Yes/No) over the last
    ``window_days`` target days that hold one."""
    scored = scored[scored["outcome"].isin(schema.YES_NO)]
    if scored.empty:
        return {"kind": kind, "start": None, "end": None, "n": 0, "bins": []}
    end = date.fromisoformat(str(scored["target_date"].max()))
    start = end - timedelta(days=window_days - 1)
    scored = scored[scored["target_date"] >= start.isoformat()]
    y = (scored["outcome"] == "Yes").to_numpy(dtype=float)
    p = scored["probability"].to_numpy(dtype=float)
    return {
        "kind": kind,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "n": len(scored),
        "bins": reliability_bins(y, p, bins),
    }


def drift_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "cycle_date": str(r["cycle_date"]),
            "computed_at": _iso_datetime(r["computed_at"]),
            "drift_share": float(r["drift_share"]),
            "n_drifted": int(r["n_drifted"]),
            "n_columns": int(r["n_columns"]),
            "drifted_columns": [str(c) for c in json.loads(r["drifted_columns"] or "[]")],
            "dataset_drift": bool(r["dataset_drift"]),
            "run_id": str(r["run_id"]),
        }
        for r in frame.to_dict("records")
    ]


def champion_rows(history: pd.DataFrame) -> list[dict[str, Any]]:
    def version(v: Any) -> str | None:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)

    return [
        {
            "decided_at": _iso_datetime(r["decided_at"]),
            "action": str(r["action"]),
            "decision": str(r["decision"]),
            "candidate_version": str(r["candidate_version"]),
            "champion_before": version(r["champion_before"]),
            "champion_after": version(r["champion_after"]),
            "candidate_f1": _num(r["candidate_f1"]),
            "champion_f1": _num(r["champion_f1"]),
        }
        for r in history.to_dict("records")
    ]


# --- the store, read-only ------------------------------------------------------------------


def read_only_engine(url: str) -> sa.Engine | None:
    """An engine that cannot write to the store at ``url``; None for a missing SQLite file.

    (The same as the UI's `raincast.ui.monitoring.read_only_engine`: the UI is to read
    through this API, so the API keeps its own copy.)
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if not db or db == ":memory:" or not Path(db).is_file():
            return None
        return sa.create_engine(f"sqlite:///file:{Path(db).resolve()}?mode=ro&uri=true")
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args = {"connect_timeout": 5, "options": "-c default_transaction_read_only=on"}
    return sa.create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)


class MonitorStore:
    """Monitor's reads of the raw store at ``url`` for the model ``model_name``."""

    def __init__(self, url: str, model_name: str) -> None:
        self.url, self.model_name = url, model_name
        self._shown = sa.engine.make_url(url).render_as_string(hide_password=True)

    def _read(self, reader: Callable[[sa.Connection, set[str]], T]) -> T:
        try:
            engine = read_only_engine(self.url)
        except (sa.exc.ArgumentError, ImportError) as err:
            raise StoreUnavailableError(f"the raw store URL is not usable: {err}") from None
        if engine is None:
            raise StoreUnavailableError(
                f"the raw store is absent ({self._shown} does not exist yet): "
                "run a cycle first, or set RAINCAST_STORE_URL"
            )
        try:
            with engine.connect() as conn:
                return reader(conn, set(sa.inspect(conn).get_table_names()))
        except (sa.exc.SQLAlchemyError, OSError) as err:
            cause = " ".join(str(getattr(err, "orig", None) or err).split())[:200]
            log.warning("monitor: the raw store %s is unreachable: %s", self._shown, cause)
            raise StoreUnavailableError(
                f"the raw store is unreachable ({self._shown}: {type(err).__name__})"
            ) from None
        finally:
            engine.dispose()

    def scores(self, kind: str) -> dict[str, Any]:
        def read(conn: sa.Connection, tables: set[str]) -> dict[str, Any]:
            live = replayed = pd.DataFrame()
            if kind in ("live", "all") and store.live_scores.name in tables:
                live = store.read_live_scores(conn, self.model_name)
            if kind in ("replayed", "all") and store.replayed_scores.name in tables:
                replayed = store.read_replayed_scores(conn, self.model_name)
            return {"model_name": self.model_name, "rows": score_rows(live, replayed)}

        return self._read(read)

    def reliability(self, kind: str | None, window_days: int, bins: int) -> dict[str, Any]:
        def read(conn: sa.Connection, tables: set[str]) -> dict[str, Any]:
            replayed = pd.DataFrame(columns=["target_date", "probability", "outcome"])
            if store.replayed_predictions.name in tables:
                replayed = store.read_replayed_predictions(conn, self.model_name)
            chosen = kind or ("replayed" if len(replayed) else "live")
            if chosen == "replayed":
                return reliability(replayed, chosen, window_days, bins)
            return reliability(self._live_scored(conn, tables), chosen, window_days, bins)

        return self._read(read)

    def _live_scored(self, conn: sa.Connection, tables: set[str]) -> pd.DataFrame:
        """Live predictions (the first made per target and station) with their outcomes."""
        from raincast.steps.score import live_predictions, observed_outcomes

        empty = pd.DataFrame(columns=["target_date", "probability", "outcome"])
        if not {store.predictions.name, store.observations.name} <= tables:
            return empty
        span = store.date_range(conn)
        if span is None:
            return empty
        preds = store.read_predictions(conn, self.model_name, None, span[1])
        preds = live_predictions(preds)
        if preds.empty:
            return empty
        first = date.fromisoformat(str(preds["target_date"].min()))
        outcomes = observed_outcomes(
            store.read_observations(conn, first - timedelta(days=1), span[1])
        )
        return preds.merge(outcomes, on=["target_date", schema.LOCATION], how="left")

    def drift(self) -> dict[str, Any]:
        def read(conn: sa.Connection, tables: set[str]) -> dict[str, Any]:
            if store.drift_results.name not in tables:
                return {"rows": []}
            return {"rows": drift_rows(store.read_drift_results(conn))}

        return self._read(read)

    def champions(self, served_version: str | None) -> dict[str, Any]:
        """Registry decisions, oldest first. ``current`` is the champion after the newest
        decision, or (with no decision recorded) the version the API serves."""

        def read(conn: sa.Connection, tables: set[str]) -> dict[str, Any]:
            rows: list[dict[str, Any]] = []
            if store.promotion_history.name in tables:
                rows = champion_rows(store.read_history(conn, self.model_name))
            after = [r["champion_after"] for r in rows if r["champion_after"]]
            return {
                "model_name": self.model_name,
                "current": after[-1] if after else served_version,
                "rows": rows,
            }

        return self._read(read)

    def spans(self) -> list[dict[str, Any]]:
        """Which version was champion from when to when (`champion_spans`), oldest first."""

        def read(conn: sa.Connection, tables: set[str]) -> list[dict[str, Any]]:
            if store.promotion_history.name not in tables:
                return []
            return [s.as_dict() for s in champion_spans(store.read_history(conn, self.model_name))]

        return self._read(read)

    def champion_history(self) -> dict[str, Any]:
        """``champion_history`` (the spans) for ``GET /model``: None, with the reason in
        ``champion_history_error``, when the store is absent or unreachable, so a store
        outage never costs the model's description."""
        try:
            return {"champion_history": self.spans(), "champion_history_error": None}
        except StoreUnavailableError as err:
            return {"champion_history": None, "champion_history_error": str(err)}
