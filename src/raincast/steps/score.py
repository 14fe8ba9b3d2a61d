"""score: live metrics of the stored predictions once their outcomes have arrived.

A prediction made from day D is for target D+1; its outcome is the RainToday of the
(D+1, station) row, i.e. more than 1 mm recorded on D+1.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from raincast import schema
from raincast.data import store
from raincast.settings import Settings
from raincast.steps.predict import default_run_id

log = logging.getLogger(__name__)

DEFAULT_WINDOWS: tuple[int, ...] = (7, 30)
#: The metrics `live_metrics` returns (None where nothing is scored yet).
LIVE_METRICS: tuple[str, ...] = (
    "f1",
    "precision",
    "recall",
    "roc_auc",
    "base_rate",
    "predicted_positive_rate",
    "mean_probability",
    "calibration_error",
)


@dataclass(frozen=True)
class ScoreRow:
    """Live metrics of one model over the ``window_days`` targets ending at ``as_of_date``."""

    as_of_date: date
    window_days: int
    model_name: str
    window_start: date
    model_versions: str
    n_scored: int
    n_pending: int
    f1: float | None
    precision: float | None
    recall: float | None
    roc_auc: float | None
    base_rate: float | None
    predicted_positive_rate: float | None
    mean_probability: float | None
    scored_at: datetime
    run_id: str
    calibration_error: float | None = None


def parse_windows(text: str) -> tuple[int, ...]:
    """'7,30' -> (7, 30): positive whole days, sorted, duplicates dropped."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("--windows needs at least one number of days, e.g. 7,30")
    days = []
    for p in parts:
        try:
            n = int(p)
        except ValueError:
            raise ValueError(f"--windows: {p!r} is not a whole number of days") from None
        if n <= 0:
            raise ValueError(f"--windows: {n} is not a positive number of days")
        days.append(n)
    return tuple(sorted(set(days)))


def observed_outcomes(obs: pd.DataFrame) -> pd.DataFrame:
    """Outcome (Yes/No) per (target_date, Location): RainToday of the target day's row, else
    RainTomorrow of the day before (the same fact, kept by whichever row is present)."""
    cols = ["target_date", schema.LOCATION, "outcome"]
    if obs.empty:
        return pd.DataFrame(columns=cols)
    same_day = obs[[schema.DATE, schema.LOCATION, schema.RAIN_TODAY]].set_axis(cols, axis=1)
    day_before = obs[[schema.DATE, schema.LOCATION, schema.RAIN_TOMORROW]].set_axis(cols, axis=1)
    day_before["target_date"] = (
        pd.to_datetime(day_before["target_date"]) + pd.Timedelta(days=1)
    ).dt.strftime("%Y-%m-%d")
    both = same_day.merge(
        day_before, on=cols[:2], how="outer", suffixes=("", "_prev"), validate="one_to_one"
    )
    both["outcome"] = both["outcome"].where(both["outcome"].notna(), both["outcome_prev"])
    both = both[both["outcome"].isin(schema.YES_NO)]
    return both[cols].reset_index(drop=True)


def live_predictions(preds: pd.DataFrame) -> pd.DataFrame:
    """One prediction per (target_date, Location, model_name): the first one made.

    A re-prediction after a promotion adds rows for the new version; the live forecast is
    the one published first, by the champion of that moment.
    """
    if preds.empty:
        return preds
    ordered = preds.sort_values(["predicted_at", "model_version"], kind="stable")
    first = ordered.drop_duplicates(["target_date", schema.LOCATION, "model_name"], keep="first")
    return first.sort_values(["target_date", schema.LOCATION]).reset_index(drop=True)


def live_metrics(y: np.ndarray, pred: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """F1, precision and recall of the stored labels, ROC AUC of the probabilities (None
    with a single observed class), and the rates around them."""
    from sklearn import metrics as skm

    return {
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y, p)) if len(set(y)) > 1 else None,
        "base_rate": float(np.mean(y)),
        "predicted_positive_rate": float(np.mean(pred)),
        "mean_probability": float(np.mean(p)),
        "calibration_error": expected_calibration_error(y, p),
    }


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |observed rate - mean probability| per probability
    decile, weighted by the decile's share of rows."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(float(np.mean(y[mask])) - float(np.mean(p[mask])))
    return float(error)


def _versions(values: pd.Series) -> str:
    return ",".join(sorted(set(values), key=lambda v: (len(v), v)))


def score_windows(
    joined: pd.DataFrame, day: date, windows: tuple[int, ...], scored_at: datetime, run_id: str
) -> list[ScoreRow]:
    """Score rows per (window, model) from live predictions joined with their outcomes
    (``outcome`` is missing while pending). Empty when no window holds an outcome."""
    rows: list[ScoreRow] = []
    if joined.empty:
        return rows
    for name, preds in joined.groupby("model_name", sort=True):
        for w in windows:
            start = day - timedelta(days=w - 1)
            in_window = preds[
                (preds["target_date"] >= start.isoformat())
                & (preds["target_date"] <= day.isoformat())
            ]
            done = in_window[in_window["outcome"].notna()]
            metrics: dict[str, float | None] = dict.fromkeys(LIVE_METRICS)
            if len(done):
                metrics = live_metrics(
                    (done["outcome"] == "Yes").to_numpy(dtype=int),
                    (done["label"] == "Yes").to_numpy(dtype=int),
                    done["probability"].to_numpy(dtype=float),
                )
            rows.append(
                ScoreRow(
                    as_of_date=day,
                    window_days=w,
                    model_name=str(name),
                    window_start=start,
                    model_versions=_versions(done["model_version"]),
                    n_scored=len(done),
                    n_pending=len(in_window) - len(done),
                    scored_at=scored_at,
                    run_id=run_id,
                    **metrics,
                )
            )
    if not any(r.n_scored for r in rows):
        return []
    return rows


def _joined(settings: Settings, day: date, horizon_days: int) -> pd.DataFrame:
    """Live predictions made from observations up to ``day`` with targets in the last
    ``horizon_days`` up to ``day`` + 1, and their outcome (missing while pending or after
    ``day``)."""
    engine = store.connect(settings.raw_store_url)
    start = day - timedelta(days=horizon_days - 1)
    preds = store.read_predictions(engine, settings.model_name, start, day + timedelta(days=1))
    preds = live_predictions(preds[preds["observation_date"] <= day.isoformat()])
    if preds.empty:
        return preds.assign(outcome=pd.Series(dtype=object))
    outcomes = observed_outcomes(store.read_observations(engine, start - timedelta(days=1), day))
    return preds.merge(outcomes, on=["target_date", schema.LOCATION], how="left")


def run(
    settings: Settings,
    day: date,
    windows: tuple[int, ...] = DEFAULT_WINDOWS,
    run_id: str | None = None,
) -> list[ScoreRow]:
    """Score the model's live predictions for targets up to ``day`` against observed
    outcomes, per window, and upsert the rows into `live_scores`. Empty when nothing has
    an outcome yet (nothing is stored then)."""
    joined = _joined(settings, day, max(windows))
    rows = score_windows(joined, day, windows, datetime.now(UTC), run_id or default_run_id())
    if rows:
        engine = store.connect(settings.raw_store_url)
        store.upsert_live_scores(engine, [asdict(r) for r in rows])
        log.info("live scores as of %s: %s", day, rows)
    return rows


def count_pending(settings: Settings, day: date, horizon_days: int) -> int:
    """Live predictions made by ``day`` (targets in the last ``horizon_days`` up to
    ``day`` + 1) whose outcome is not in the store yet or falls after ``day``."""
    joined = _joined(settings, day, horizon_days)
    if joined.empty:
        return 0
    scorable = joined["outcome"].notna() & (joined["target_date"] <= day.isoformat())
    return int((~scorable).sum())
