"""Backtest: replay a date range day by day through the pipeline's own decision code, under
a retrain policy, and score every day's champion on the labels that followed.

Day D, for each policy: the champion predicts every row observed on D (probability and
its threshold label); the outcome, RainTomorrow(D) = RainToday(D+1), arrives with D+1.
At the end of D the policy may retrain: the rows observed up to D are labelled as the
store labels them (``store.next_day_labels``: a row's label needs the next day's rain, so
the newest labelled row is D-1), split, fitted, and the candidate goes through the
promotion rule against the champion. The first champion is fitted at the end of the day
before the start. A model therefore never sees a row dated on or after a day it predicts.

Reused, called as the daily cycle calls them:

- fetch + validate: ``sources.csvfile.ReplaySource`` reads the file as text and
  ``data.validation.validate_batch`` keeps what the store would accept;
- process: ``data.store.next_day_labels`` (the store's label back-fill) and
  ``steps.process.labelled_rows``;
- split and train: ``steps.split.split_by_time`` (``params.split``) and
  ``models.train.fit`` (``params.train``: early stopping, F1 threshold, refit);
- drift: ``steps.drift.drift_samples`` (the champion's training window, same days of the
  year) and ``monitoring.drift.detect_drift`` (``params.drift``);
- promote: the pure part of ``models.registry.predict_version`` / ``score_predictions``
  (the logged model's prediction path ``models.pyfunc.predict_frame`` on the new split's
  test slice, per-row predictions into ``Scores``), then ``gate_decision`` with those
  predictions (the whole gate: rule, bootstrap significance, station guard, drift verdict
  and gate mode; ``params.promote``, ``drift.mode``);
- predict + score: ``predict_frame`` for day D's rows, ``steps.score.observed_outcomes``
  for their outcomes, ``steps.score.live_metrics`` per day and ``score_windows`` for the
  rolling window.

Skipped: the raw store's tables, upserts and locks, DVC (stage cache, pushes), MLflow (runs,
registry, aliases, artifacts), the decision history, the replayed window and the
evaluation plots. They record and serialise decisions, they make none; a year of them per
policy would cost hours of bookkeeping. Models stay in memory, named by the day at whose
end they were trained. A fit depends only on that day (the data up to it and the params),
so policies that retrain on the same day share one fit; each policy is still charged the
fit's full time in its compute seconds, as if it had run alone.

Promotion rules can be compared on the same fits: given named ``rules`` (``promote``
sections), each policy runs once per rule, as the lane ``policy/rule``. A retrain's fit
and its candidate's test predictions do not depend on the rule, only the decision does (and
so the champion afterwards): lanes share each day's fit, and a champion's per-row
predictions on a day's test slice are computed once for every lane it serves.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raincast import schema
from raincast.data import store
from raincast.data.validation import validate_batch
from raincast.models.compare import PairedRows, RowPredictions
from raincast.models.registry import (
    CHECKS,
    Decision,
    Scores,
    gate_decision,
    score_predictions,
)
from raincast.models.train import fit
from raincast.params import Params, PromoteParams, params_hash
from raincast.sources.csvfile import ReplaySource
from raincast.steps.drift import drift_samples
from raincast.steps.process import labelled_rows
from raincast.steps.score import LIVE_METRICS, live_metrics, observed_outcomes, score_windows
from raincast.steps.split import SplitWindows, split_by_time

log = logging.getLogger(__name__)

POLICIES: tuple[str, ...] = ("daily", "weekly", "monthly", "on-drift", "never")
#: on-drift retrains at most once in this many days (the first check comes on day one).
DRIFT_RETRAIN_GAP_DAYS = 7
#: weekly retrains at the end of the first day and every this many days after it.
WEEKLY_DAYS = 7
#: The rolling window of live scores (target days), as in `raincast score --windows 30`.
ROLLING_DAYS = 30

#: Columns of `BacktestResult.predictions`.
PREDICTION_COLUMNS: tuple[str, ...] = (
    "policy", "observation_date", "target_date", schema.LOCATION, "model_name",
    "model_version", "probability", "label", "outcome",
)  # fmt: skip
#: Joins a policy and a rule name into a lane's name (``monthly/point``).
LANE_SEP = "/"


class BacktestError(ValueError):
    """The requested backtest cannot run (bad range, unknown policy, no rows, no history)."""


# --- models, retrains, days ------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A fitted booster, named by the day at whose end it was trained."""

    version: str
    booster: Any
    threshold: float
    windows: SplitWindows
    #: Newest labelled row the retrain was given (train, validation and test slices).
    data_through: date
    #: Newest row the booster learned from (train + validation: early stopping, threshold
    #: and the refit all use validation).
    trained_through: date
    rows: dict[str, int]
    rounds: int
    fit_seconds: float


@dataclass(frozen=True)
class _Candidate:
    """What the end of one day's retrain produced; shared by the policies retraining then."""

    day: date
    model: Model | None
    test: pd.DataFrame | None
    scores: Scores | None
    #: The candidate's per-row predictions on ``test`` (for the paired checks).
    rows: RowPredictions | None
    error: str = ""
    #: Seconds of split + fit + scoring the candidate (charged to every policy using it).
    seconds: float = 0.0


@dataclass(frozen=True)
class Retrain:
    """One retrain of a policy at the end of ``day`` and the promotion decision on it."""

    policy: str
    day: str
    version: str
    promoted: bool
    reasons: list[str]
    data_through: str | None = None
    trained_through: str | None = None
    rows: dict[str, int] = field(default_factory=dict)
    rounds: int | None = None
    candidate: dict[str, Any] | None = None
    champion: dict[str, Any] | None = None
    fit_seconds: float = 0.0
    #: The fit was made for another policy retraining on the same day.
    fit_shared: bool = False
    error: str = ""
    drift_share: float | None = None
    #: The gate's checks that failed (`registry.CHECKS` names); empty for a promotion.
    blocked_by: list[str] = field(default_factory=list)


@dataclass
class DayRow:
    """One policy's day: the champion's live metrics on the rows observed that day, the
    rolling window ending with them, and what happened at the end of the day."""

    date: str
    policy: str
    champion_version: str
    champion_data_through: str
    n_rows: int
    n_scored: int
    f1: float | None = None
    precision: float | None = None
    recall: float | None = None
    roc_auc: float | None = None
    base_rate: float | None = None
    predicted_positive_rate: float | None = None
    mean_probability: float | None = None
    calibration_error: float | None = None
    rolling_f1: float | None = None
    rolling_roc_auc: float | None = None
    rolling_n_scored: int = 0
    retrained: bool = False
    retrain_failed: bool = False
    promoted: bool | None = None
    drift_checked: bool = False
    drift_share: float | None = None
    drift_detected: bool | None = None
    fit_seconds: float = 0.0
    drift_seconds: float = 0.0
    compute_seconds: float = 0.0


@dataclass(frozen=True)
class PolicySummary:
    policy: str
    first_day: str
    last_day: str
    days: int
    n_predictions: int
    n_scored: int
    #: Over every scored row of the window at once.
    roc_auc: float | None
    f1: float | None
    precision: float | None
    recall: float | None
    #: Mean over the days of the rolling ``ROLLING_DAYS`` live scores.
    mean_rolling_roc_auc: float | None
    mean_rolling_f1: float | None
    retrains: int
    failed_retrains: int
    promotions: int
    #: Retrains whose candidate the gate kept out, and how often each check failed in them.
    rejections: int
    blocked_by: dict[str, int]
    #: The champions served, in order (by version: the day at whose end each was trained).
    champion_versions: list[str]
    drift_checks: int
    compute_seconds: float
    fit_seconds: float
    drift_seconds: float


@dataclass
class BacktestResult:
    start: str
    end: str
    #: The lanes: the policies, or with named rules each ``policy/rule``.
    policies: tuple[str, ...]
    #: Per policy, its last day (a policy may be given a shorter window).
    last_days: dict[str, str]
    history: dict[str, Any]
    initial: Retrain
    days: list[DayRow]
    retrains: list[Retrain]
    summaries: dict[str, PolicySummary]
    #: Every prediction (policy, observation and target date, station, version,
    #: probability, label, outcome); kept in memory, not written to the JSON.
    predictions: pd.DataFrame
    params: dict[str, str]
    distinct_fits: int
    wall_seconds: float
    meta: dict[str, Any] = field(default_factory=dict)
    #: The named rules compared (their ``promote`` sections); empty: ``params.promote``.
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Each lane's retrain policy and rule name (None: ``params.promote``).
    lanes: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON body: everything but the predictions."""
        return {
            "meta": self.meta,
            "start": self.start,
            "end": self.end,
            "policies": list(self.policies),
            "last_days": self.last_days,
            "history": self.history,
            "params": self.params,
            "distinct_fits": self.distinct_fits,
            "wall_seconds": self.wall_seconds,
            "rules": self.rules,
            "lanes": self.lanes,
            "summary": {p: asdict(s) for p, s in self.summaries.items()},
            "initial": asdict(self.initial),
            "retrains": [asdict(r) for r in self.retrains],
            "days": [asdict(d) for d in self.days],
        }


@dataclass(frozen=True)
class BacktestProgress:
    """Where a running backtest is; ``line()`` is what a terminal shows."""

    done: int
    total: int
    day: date
    elapsed_s: float
    #: Distinct fits so far, and their seconds (the first champion's included).
    fits: int
    fit_seconds: float = 0.0
    #: Seconds before the first day (the first champion's fit), left out of the ETA.
    setup_s: float = 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left if the remaining days cost what the done ones did on average."""
        if not self.done:
            return None
        return (self.elapsed_s - self.setup_s) / self.done * (self.total - self.done)

    def line(self, width: int = 24) -> str:
        filled = round(width * self.done / self.total) if self.total else width
        eta = "?" if self.eta_s is None else _duration(self.eta_s)
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} days "
            f"{self.day}  fits {self.fits}  elapsed {_duration(self.elapsed_s)}  eta {eta}"
        )


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# --- input --------------------------------------------------------------------------------------


def load_observations(path: Path) -> tuple[pd.DataFrame, int]:
    """The rows of a weatherAUS CSV (optionally gzipped) the raw store would accept: read
    as text by the replay source, parsed and checked by validation. Returns them (with
    ``source``) and the number of quarantined rows. Raises the source's errors
    (FileNotFoundError, SourceFileError) for a file that is not such a CSV."""
    src = ReplaySource(path)
    first, last = src.first_date(), src.last_date()
    result = validate_batch(src.fetch(first, last), first, last)
    if len(result.quarantined):
        log.info("%s: %d rows quarantined by validation", path.name, len(result.quarantined))
    return result.accepted.assign(source=src.name), len(result.quarantined)


def parse_policies(names: Iterable[str]) -> tuple[str, ...]:
    """The policies asked for, in the order given, duplicates dropped; all when none."""
    wanted = tuple(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    unknown = [n for n in wanted if n not in POLICIES]
    if unknown:
        raise BacktestError(f"unknown policy {', '.join(unknown)}: use {', '.join(POLICIES)}")
    return wanted or POLICIES


def check_rule_names(rules: Mapping[str, PromoteParams]) -> None:
    """Rule names become part of lane names: non-empty, without the separator."""
    bad = [name for name in rules if not name or LANE_SEP in name]
    if bad:
        raise BacktestError(f"bad rule name {bad[0]!r}: non-empty, without {LANE_SEP!r}")


def check_range(start: date, end: date) -> None:
    if start > end:
        raise BacktestError(f"start {start} is after end {end}")


def retrain_due(policy: str, day: date, index: int) -> bool:
    """Whether a time-based policy retrains at the end of ``day`` (the ``index``-th day of
    the backtest, from 0). on-drift decides from a drift check instead; never does not."""
    if policy == "daily":
        return True
    if policy == "weekly":
        return index % WEEKLY_DAYS == 0
    if policy == "monthly":
        return day.day == 1
    return False


# --- the engine ----------------------------------------------------------------------------------


def _iso(d: date) -> str:
    return d.isoformat()


def _max_date(*frames: pd.DataFrame) -> date:
    return date.fromisoformat(max(str(f[schema.DATE].max()) for f in frames if len(f)))


def _input_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[schema.RAIN_TOMORROW, "source"], errors="ignore")


def predict_model(model: Model, test: pd.DataFrame) -> RowPredictions:
    """``registry.predict_version`` without the registry: the model's own prediction path
    on ``test``, with its tuned threshold, the labels and the stations."""
    from raincast.features import label_vector
    from raincast.models.pyfunc import predict_frame

    out = predict_frame(model.booster, _input_rows(test), model.threshold)
    return RowPredictions(
        labels=label_vector(test),
        probability=out["probability"].to_numpy(dtype=float),
        threshold=model.threshold,
        location=test[schema.LOCATION].astype(str).to_numpy(),
    )


def score_model(model: Model, test: pd.DataFrame) -> tuple[Scores, RowPredictions]:
    """``registry.score_version`` without the registry: scores at the model's tuned
    threshold, and the per-row predictions they come from."""
    rows = predict_model(model, test)
    return score_predictions(model.version, rows), rows


class _Engine:
    """The shared state of one backtest: the observations, and the day's fit and drift
    results that several policies may ask for."""

    def __init__(self, observations: pd.DataFrame, params: Params) -> None:
        self.obs = observations
        self.params = params
        self._labelled: tuple[date, pd.DataFrame] | None = None
        self._fits: dict[date, _Candidate] = {}
        self._drift: dict[tuple[date, tuple[str, str]], tuple[dict[str, Any], float]] = {}
        self._champion_scores: dict[tuple[date, str], tuple[Scores, RowPredictions, float]] = {}
        self.distinct_fits = 0
        self.fit_seconds = 0.0

    def labelled_at_end_of(self, day: date) -> pd.DataFrame:
        """The processed data at the end of ``day``: rows observed up to ``day``, labelled
        from the rows observed up to ``day`` only (so the newest label is ``day`` - 1)."""
        if self._labelled is None or self._labelled[0] != day:
            visible = self.obs[self.obs[schema.DATE] <= _iso(day)].copy()
            visible[schema.RAIN_TOMORROW] = store.next_day_labels(visible)
            self._labelled = (day, labelled_rows(visible))
        return self._labelled[1]

    def candidate(self, day: date) -> tuple[_Candidate, bool]:
        """The model retrained at the end of ``day`` (fitted once per day), and whether it
        was already fitted for another policy."""
        if day in self._fits:
            return self._fits[day], True
        self._fits = {}  # the loop moves forward a day at a time: older fits are done with
        t0 = time.perf_counter()
        labelled = self.labelled_at_end_of(day)
        try:
            train, validation, test, windows = split_by_time(labelled, self.params.split)
        except ValueError as err:
            cand = _Candidate(
                day, None, None, None, None, f"split: {err}", time.perf_counter() - t0
            )
            self._fits[day] = cand
            return cand, False
        fitted = fit(train, validation, self.params.train)
        fit_s = time.perf_counter() - t0
        model = Model(
            version=_iso(day),
            booster=fitted.booster,
            threshold=fitted.threshold,
            windows=windows,
            data_through=_max_date(train, validation, test),
            trained_through=_max_date(train, validation),
            rows={"train": len(train), "validation": len(validation), "test": len(test)},
            rounds=fitted.rounds,
            fit_seconds=fit_s,
        )
        self.distinct_fits += 1
        self.fit_seconds += fit_s
        scores, rows = score_model(model, test)
        cand = _Candidate(day, model, test, scores, rows, "", time.perf_counter() - t0)
        self._fits[day] = cand
        log.info("fit at the end of %s: %d rounds in %.1f s", day, model.rounds, fit_s)
        return cand, False

    def champion_scores(
        self, cand: _Candidate, champion: Model
    ) -> tuple[Scores, RowPredictions, float]:
        """The champion's scores and per-row predictions on the test slice of ``cand``'s
        split, and their seconds."""
        key = (cand.day, champion.version)
        if key not in self._champion_scores:
            assert cand.test is not None
            t0 = time.perf_counter()
            scores, rows = score_model(champion, cand.test)
            kept = {k: v for k, v in self._champion_scores.items() if k[0] == cand.day}
            self._champion_scores = kept | {key: (scores, rows, time.perf_counter() - t0)}
        return self._champion_scores[key]

    def drift(self, day: date, champion: Model) -> tuple[dict[str, Any], float]:
        """The drift stage at the end of ``day`` against ``champion``'s training window:
        its summary (``drift_share``, ``drift_detected``, ...) and its seconds. A check
        that cannot run (no rows on a side) reports ``error`` and no drift."""
        from raincast.monitoring.drift import detect_drift

        key = (day, champion.windows.train)
        if key in self._drift:
            return self._drift[key]
        cfg = self.params.drift
        t0 = time.perf_counter()
        processed = self.labelled_at_end_of(day)
        try:
            samples = drift_samples(processed, list(champion.windows.train), cfg)
            result = detect_drift(
                samples.reference, samples.current, cfg.share_threshold, cfg.num_threshold
            )
            body: dict[str, Any] = result.summary()
        except ValueError as err:
            body = {"drift_share": 0.0, "drift_detected": False, "error": str(err)}
        out = (body, time.perf_counter() - t0)
        self._drift = {k: v for k, v in self._drift.items() if k[0] == day} | {key: out}
        return out


@dataclass
class _PolicyState:
    """One lane: a retrain policy under one promotion rule, with its champion."""

    name: str
    policy: str
    rule: PromoteParams
    last_day: date
    champion: Model
    last_retrain: date | None = None
    recent: deque[pd.DataFrame] = field(default_factory=lambda: deque(maxlen=ROLLING_DAYS))
    predictions: list[pd.DataFrame] = field(default_factory=list)


def _predict_day(
    state: _PolicyState, rows: pd.DataFrame, outcomes: pd.DataFrame, day: date
) -> pd.DataFrame:
    """The champion's predictions for the rows observed on ``day``, with their outcome."""
    from raincast.models.pyfunc import predict_frame

    if rows.empty:
        return pd.DataFrame(columns=list(PREDICTION_COLUMNS))
    champion = state.champion
    out = predict_frame(champion.booster, rows[list(schema.INPUT_COLUMNS)], champion.threshold)
    preds = pd.DataFrame(
        {
            "policy": state.name,
            "observation_date": _iso(day),
            "target_date": _iso(day + timedelta(days=1)),
            schema.LOCATION: rows[schema.LOCATION].to_numpy(),
            "model_name": state.name,
            "model_version": state.champion.version,
            "probability": out["probability"].to_numpy(dtype=float),
            "label": out["label"].to_numpy(),
        }
    )
    return preds.merge(outcomes, on=["target_date", schema.LOCATION], how="left")


def _day_metrics(preds: pd.DataFrame) -> dict[str, float | None]:
    done = preds[preds["outcome"].notna()]
    if done.empty:
        return dict.fromkeys(LIVE_METRICS)
    return live_metrics(
        (done["outcome"] == "Yes").to_numpy(dtype=int),
        (done["label"] == "Yes").to_numpy(dtype=int),
        done["probability"].to_numpy(dtype=float),
    )


def _rolling(state: _PolicyState, day: date) -> tuple[float | None, float | None, int]:
    """F1, ROC AUC and scored rows of the live window of ``ROLLING_DAYS`` targets ending
    with ``day``'s (the live scoring's own `score_windows`)."""
    parts = [p for p in state.recent if len(p)]
    if not parts:
        return None, None, 0
    joined = pd.concat(parts, ignore_index=True)
    target = day + timedelta(days=1)
    rows = score_windows(joined, target, (ROLLING_DAYS,), datetime.now(UTC), "backtest")
    if not rows:
        return None, None, 0
    return rows[0].f1, rows[0].roc_auc, rows[0].n_scored


def _policy_day(
    engine: _Engine,
    state: _PolicyState,
    day: date,
    index: int,
    rows: pd.DataFrame,
    outcomes: pd.DataFrame,
) -> tuple[DayRow, Retrain | None]:
    """One policy's day: its champion predicts the rows observed on ``day``, they are
    scored, then the policy decides whether to retrain at the end of the day."""
    t0 = time.perf_counter()
    preds = _predict_day(state, rows, outcomes, day)
    state.predictions.append(preds)
    state.recent.append(preds)
    row = DayRow(
        date=_iso(day),
        policy=state.name,
        champion_version=state.champion.version,
        champion_data_through=_iso(state.champion.data_through),
        n_rows=len(preds),
        n_scored=int(preds["outcome"].notna().sum()),
    )
    for name, value in _day_metrics(preds).items():
        setattr(row, name, value)
    row.rolling_f1, row.rolling_roc_auc, row.rolling_n_scored = _rolling(state, day)
    row.compute_seconds = time.perf_counter() - t0

    drift: dict[str, Any] | None = None
    due = retrain_due(state.policy, day, index)
    if state.policy == "on-drift":
        gap = None if state.last_retrain is None else (day - state.last_retrain).days
        if gap is None or gap >= DRIFT_RETRAIN_GAP_DAYS:
            drift, row.drift_seconds = engine.drift(day, state.champion)
            due = bool(drift["drift_detected"])
    elif due and engine.params.drift.mode == "block":  # the verdict may block the promotion
        drift, row.drift_seconds = engine.drift(day, state.champion)
    if drift is not None:
        row.drift_checked = True
        if "error" not in drift:  # a check that could not run has no verdict
            row.drift_share = float(drift["drift_share"])
            row.drift_detected = bool(drift["drift_detected"])
    record = None
    if due:
        record, seconds = _retrain(engine, state, day, drift)
        row.retrained, row.retrain_failed = True, bool(record.error)
        row.promoted = None if record.error else record.promoted
        row.fit_seconds = record.fit_seconds
        row.compute_seconds += seconds
    row.compute_seconds += row.drift_seconds
    return row, record


def run_backtest(
    observations: pd.DataFrame,
    start: date,
    end: date,
    params: Params,
    policies: Sequence[str] = POLICIES,
    last_days: Mapping[str, date] | None = None,
    on_progress: Callable[[BacktestProgress], None] | None = None,
    rules: Mapping[str, PromoteParams] | None = None,
) -> BacktestResult:
    """Replay ``start``..``end`` day by day under each policy (see the module docstring).

    ``observations`` are weatherAUS rows as validation accepts them (any ``RainTomorrow``
    is ignored: labels come from the next day's rows, as in the store). ``last_days``
    ends a policy's replay early (e.g. daily retraining on a shorter window). ``rules``
    runs each policy once per named promotion rule (lanes ``policy/rule``, sharing the
    fits) instead of once under ``params.promote``. Raises BacktestError for a bad range,
    an unknown policy, a bad rule name, no rows in the range or no history before it, or
    an initial model a promotion rule blocks.
    """
    began = time.perf_counter()
    check_range(start, end)
    policy_names = parse_policies(policies)
    check_rule_names(rules or {})
    lanes = {
        (f"{p}{LANE_SEP}{r}" if rules else p): (p, r, rule)
        for p in policy_names
        for r, rule in (rules.items() if rules else [(None, params.promote)])
    }
    names = tuple(lanes)
    obs = observations.drop(columns=[schema.RAIN_TOMORROW], errors="ignore")
    if "source" not in obs.columns:
        obs = obs.assign(source="unknown")
    obs = obs.assign(**{schema.RAIN_TOMORROW: None})[[*schema.COLUMNS, "source"]]
    dates = obs[schema.DATE]
    window = obs[(dates >= _iso(start)) & (dates <= _iso(end))]
    if window.empty:
        raise BacktestError(f"no rows between {start} and {end} in the data")
    history = obs[dates < _iso(start)]
    if history.empty:
        raise BacktestError(f"no rows before {start}: the first champion needs a history")
    ends = {n: min(end, (last_days or {}).get(p, end)) for n, (p, _, _) in lanes.items()}
    short = [p for p, d in ends.items() if d < start]
    if short:
        raise BacktestError(f"policy {', '.join(short)} would end before the start {start}")

    engine = _Engine(obs, params)
    first, shared = engine.candidate(start - timedelta(days=1))
    if first.model is None or first.scores is None:
        raise BacktestError(f"the first champion cannot be trained: {first.error}")
    for _, _, rule in lanes.values():  # the leakage alarm may block a first model
        decision = gate_decision(first.scores, None, rule)
        if not decision.promote:
            raise BacktestError(f"the first champion is blocked: {'; '.join(decision.reasons)}")
    initial = _retrain_record("*", first, shared, None, decision, None)

    # Outcomes as live scoring reads them (RainToday of the target day, else the label of the
    # day before). Only scoring reads them, and only for days that have passed.
    scored = obs[(dates >= _iso(start)) & (dates <= _iso(end + timedelta(days=1)))]
    outcomes = observed_outcomes(
        scored.assign(**{schema.RAIN_TOMORROW: store.next_day_labels(obs).loc[scored.index]})
    )
    by_day = {str(d): part for d, part in window.groupby(schema.DATE, sort=True)}
    setup_s = time.perf_counter() - began
    states = {
        n: _PolicyState(n, p, rule, ends[n], first.model) for n, (p, _, rule) in lanes.items()
    }
    days: list[DayRow] = []
    retrains: list[Retrain] = []
    total = (max(ends.values()) - start).days + 1
    for index in range(total):
        day = start + timedelta(days=index)
        rows = by_day.get(_iso(day), window.iloc[:0])
        for state in states.values():
            if day <= state.last_day:
                row, record = _policy_day(engine, state, day, index, rows, outcomes)
                days.append(row)
                retrains += [record] if record else []
        if on_progress is not None:
            on_progress(
                BacktestProgress(
                    index + 1,
                    total,
                    day,
                    time.perf_counter() - began,
                    engine.distinct_fits,
                    engine.fit_seconds,
                    setup_s,
                )
            )

    predictions = pd.concat([p for s in states.values() for p in s.predictions], ignore_index=True)
    result = BacktestResult(
        start=_iso(start),
        end=_iso(end),
        policies=names,
        last_days={p: _iso(d) for p, d in ends.items()},
        history={
            "first_day": str(history[schema.DATE].min()),
            "last_day": str(history[schema.DATE].max()),
            "rows": len(history),
            "labelled_rows": sum(first.model.rows.values()),
            "days_with_rows": int(history[schema.DATE].nunique()),
        },
        initial=initial,
        days=days,
        retrains=retrains,
        summaries={},
        predictions=predictions,
        params={
            "split": params_hash(params.split),
            "train": params_hash(params.train),
            "promote": params_hash(params.promote),
            "drift": params_hash(params.drift),
        },
        distinct_fits=engine.distinct_fits,
        wall_seconds=0.0,
        rules={r: rule.model_dump(mode="json") for r, rule in (rules or {}).items()},
        lanes={n: {"policy": p, "rule": r} for n, (p, r, _) in lanes.items()},
    )
    result.summaries = {p: summarise(result, p) for p in names}
    result.wall_seconds = time.perf_counter() - began
    return result


def _retrain_record(
    policy: str,
    cand: _Candidate,
    shared: bool,
    champion: Scores | None,
    decision: Decision,
    drift: dict[str, Any] | None,
) -> Retrain:
    m = cand.model
    return Retrain(
        policy=policy,
        day=_iso(cand.day),
        version=_iso(cand.day),
        promoted=decision.promote,
        reasons=decision.reasons,
        blocked_by=list(decision.blocked_by),
        data_through=_iso(m.data_through) if m else None,
        trained_through=_iso(m.trained_through) if m else None,
        rows=dict(m.rows) if m else {},
        rounds=m.rounds if m else None,
        candidate=asdict(cand.scores) if cand.scores else None,
        champion=asdict(champion) if champion else None,
        fit_seconds=cand.seconds,
        fit_shared=shared,
        error=cand.error,
        drift_share=float(drift["drift_share"]) if drift else None,
    )


def _retrain(
    engine: _Engine, state: _PolicyState, day: date, drift: dict[str, Any] | None
) -> tuple[Retrain, float]:
    """Retrain at the end of ``day`` and apply the promotion rule against the policy's
    champion on the new split's test slice. A split that fails (e.g. an empty validation
    slice) fails the retrain and keeps the champion, as a failed cycle would."""
    cand, shared = engine.candidate(day)
    state.last_retrain = day
    if cand.model is None or cand.scores is None:
        log.warning("%s: retrain at the end of %s failed: %s", state.name, day, cand.error)
        failed = Decision(False, [cand.error])
        return _retrain_record(state.name, cand, shared, None, failed, drift), cand.seconds
    rule = state.rule
    champ: Scores | None = None
    paired: PairedRows | None = None
    champ_s = 0.0
    if rule.gate != "off":  # the gate off compares nothing: the champion is not scored
        champ, champ_rows, champ_s = engine.champion_scores(cand, state.champion)
        assert cand.rows is not None
        paired = PairedRows(cand.rows, champ_rows)
    usable_drift = drift if drift and "error" not in drift else None
    t0 = time.perf_counter()
    decision = gate_decision(
        cand.scores, champ, rule, paired, usable_drift, engine.params.drift.mode
    )
    decide_s = time.perf_counter() - t0  # the bootstrap is part of the promote step's cost
    if decision.promote:
        state.champion = cand.model
    record = _retrain_record(state.name, cand, shared, champ, decision, drift)
    return record, cand.seconds + champ_s + decide_s


# --- summaries -----------------------------------------------------------------------------


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else None


def summarise(
    result: BacktestResult, policy: str, first: date | None = None, last: date | None = None
) -> PolicySummary:
    """One policy's summary over its days between ``first`` and ``last`` (default: all of
    them): live metrics over every scored row at once, the mean rolling scores, retrains,
    promotions and compute."""
    lo, hi = _iso(first) if first else "", _iso(last) if last else "9999"
    days = [d for d in result.days if d.policy == policy and lo <= d.date <= hi]
    if not days:
        raise BacktestError(f"policy {policy} has no day between {first} and {last}")
    preds = result.predictions
    if len(preds):
        preds = preds[
            (preds["policy"] == policy)
            & (preds["observation_date"] >= lo)
            & (preds["observation_date"] <= hi)
        ]
    m = _day_metrics(preds) if len(preds) else dict.fromkeys(LIVE_METRICS)
    decided = [
        r for r in result.retrains if r.policy == policy and lo <= r.day <= hi and not r.error
    ]
    blocked = Counter(check for r in decided if not r.promoted for check in r.blocked_by)
    return PolicySummary(
        policy=policy,
        first_day=days[0].date,
        last_day=days[-1].date,
        days=len(days),
        n_predictions=len(preds),
        n_scored=int(preds["outcome"].notna().sum()) if len(preds) else 0,
        roc_auc=m["roc_auc"],
        f1=m["f1"],
        precision=m["precision"],
        recall=m["recall"],
        mean_rolling_roc_auc=_mean(d.rolling_roc_auc for d in days),
        mean_rolling_f1=_mean(d.rolling_f1 for d in days),
        retrains=sum(d.retrained for d in days),
        failed_retrains=sum(d.retrain_failed for d in days),
        promotions=sum(bool(d.promoted) for d in days),
        rejections=sum(d.promoted is False for d in days),
        blocked_by={check: blocked[check] for check in CHECKS if blocked[check]},
        champion_versions=list(dict.fromkeys(d.champion_version for d in days)),
        drift_checks=sum(d.drift_checked for d in days),
        compute_seconds=sum(d.compute_seconds for d in days),
        fit_seconds=sum(d.fit_seconds for d in days),
        drift_seconds=sum(d.drift_seconds for d in days),
    )
