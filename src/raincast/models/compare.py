"""Challenger against champion on the same rows: paired bootstrap intervals of the F1 gain
and the ROC AUC change, and ROC AUC per station. Pure numpy, so the promotion rule can use
it without importing scikit-learn (its AUC equals ``sklearn.metrics.roc_auc_score``, ties
counted half, as the tests check)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Resampled rows held in memory at once (resamples x rows), ~16 MB of float64 per array.
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True, eq=False)
class RowPredictions:
    """One model's per-row output on a test slice: what the paired checks need beside its
    ``Scores``. ``labels`` are 0/1, ``location`` the station of each row."""

    labels: np.ndarray
    probability: np.ndarray
    threshold: float
    location: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.labels)
        if len(self.probability) != n or len(self.location) != n:
            raise ValueError(
                f"labels, probability and location differ in length "
                f"({n}, {len(self.probability)}, {len(self.location)})"
            )


@dataclass(frozen=True, eq=False)
class PairedRows:
    """Challenger and champion predictions on the same rows, in the same order."""

    candidate: RowPredictions
    champion: RowPredictions

    def __post_init__(self) -> None:
        a, b = self.candidate, self.champion
        if not (np.array_equal(a.labels, b.labels) and np.array_equal(a.location, b.location)):
            raise ValueError("candidate and champion were not scored on the same rows")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    confidence: float

    def __str__(self) -> str:
        return (
            f"{self.estimate:+.4f} [{self.confidence * 100:g}% CI {self.low:+.4f}, "
            f"{self.high:+.4f}]"
        )


@dataclass(frozen=True)
class StationAuc:
    """Both models' ROC AUC at one station."""

    location: str
    rows: int
    candidate: float
    champion: float

    @property
    def drop(self) -> float:
        """How far the challenger falls below the champion here (negative: it gains)."""
        return self.champion - self.candidate

    def __str__(self) -> str:
        return (
            f"{self.location} {self.candidate:.4f} vs {self.champion:.4f} "
            f"({-self.drop:+.4f}, {self.rows} rows)"
        )


@dataclass(frozen=True)
class _AucPlan:
    """One model's rows sorted once, so a weighted AUC is a cumulative sum and a gather."""

    negatives: np.ndarray  # indices of label-0 rows, by ascending probability
    positives: np.ndarray  # indices of label-1 rows
    below: np.ndarray  # per positive: negatives with a lower probability
    not_above: np.ndarray  # per positive: negatives with a lower or equal probability


def _auc_plan(labels: np.ndarray, probability: np.ndarray) -> _AucPlan:
    neg = np.flatnonzero(labels == 0)
    pos = np.flatnonzero(labels == 1)
    neg = neg[np.argsort(probability[neg], kind="stable")]
    sorted_neg = probability[neg]
    return _AucPlan(
        neg,
        pos,
        np.searchsorted(sorted_neg, probability[pos], "left"),
        np.searchsorted(sorted_neg, probability[pos], "right"),
    )


def _weighted_auc(weights: np.ndarray, plan: _AucPlan) -> np.ndarray:
    """ROC AUC for each row of ``weights`` (resamples x rows; a row's weight is how often
    the resample drew it): weighted Mann-Whitney, ties counted half; NaN without both
    classes."""
    cum = np.zeros((weights.shape[0], len(plan.negatives) + 1))
    np.cumsum(weights[:, plan.negatives], axis=1, out=cum[:, 1:])
    wpos = weights[:, plan.positives]
    wins = (wpos * (cum[:, plan.below] + cum[:, plan.not_above])).sum(axis=1) * 0.5
    pairs = wpos.sum(axis=1) * cum[:, -1]
    return np.divide(wins, pairs, out=np.full(len(pairs), np.nan), where=pairs > 0)


def _weighted_f1(weights: np.ndarray, labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """F1 for each row of ``weights``; 0 when there is no positive at all (as scikit-learn's
    ``zero_division=0``)."""
    y, p = labels.astype(bool), predicted
    tp = weights @ (y & p).astype(float)
    wrong = weights @ (y ^ p).astype(float)  # false positives + false negatives
    denom = 2 * tp + wrong
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def roc_auc(labels: np.ndarray, probability: np.ndarray) -> float:
    """ROC AUC of one model on its rows (NaN with a single class)."""
    ones = np.ones((1, len(labels)))
    return float(_weighted_auc(ones, _auc_plan(labels, probability))[0])


def _interval(estimate: float, draws: np.ndarray, confidence: float) -> Interval:
    kept = draws[~np.isnan(draws)]
    if not len(kept) or math.isnan(estimate):
        return Interval(estimate, math.nan, math.nan, confidence)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(kept, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), confidence)


def paired_bootstrap(
    rows: PairedRows, confidence: float, resamples: int, seed: int
) -> tuple[Interval, Interval]:
    """Percentile intervals of the challenger's F1 gain and ROC AUC change over the champion.

    Paired: each resample draws the test rows with replacement once and scores both models
    on that same draw (each at its own threshold), so what the two share (the days, the
    stations, the hard rows) cancels out of the difference. Seeded and chunked in a fixed
    order, so the same rows and seed give the same intervals. The point estimates are the
    differences on all rows.
    """
    a, b = rows.candidate, rows.champion
    y, n = a.labels, len(a.labels)
    if n == 0:
        raise ValueError("no rows to compare the models on")
    plan_a, plan_b = _auc_plan(y, a.probability), _auc_plan(y, b.probability)
    pred_a, pred_b = a.probability >= a.threshold, b.probability >= b.threshold

    def gains(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f1 = _weighted_f1(weights, y, pred_a) - _weighted_f1(weights, y, pred_b)
        return f1, _weighted_auc(weights, plan_a) - _weighted_auc(weights, plan_b)

    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n)
    f1_draws, auc_draws = [], []
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        # Row i of the chunk draws n row indices; its weights count how often each was drawn.
        drawn = rng.integers(0, n, size=(k, n)) + (np.arange(k) * n)[:, None]
        f1, auc = gains(np.bincount(drawn.ravel(), minlength=k * n).reshape(k, n).astype(float))
        f1_draws.append(f1)
        auc_draws.append(auc)
    f1_point, auc_point = gains(np.ones((1, n)))
    return (
        _interval(float(f1_point[0]), np.concatenate(f1_draws), confidence),
        _interval(float(auc_point[0]), np.concatenate(auc_draws), confidence),
    )


def station_aucs(rows: PairedRows, min_rows: int) -> list[StationAuc]:
    """Both models' ROC AUC at every station with at least ``min_rows`` rows and both
    classes (fewer rows give an AUC too noisy to judge a model by), by station name."""
    y, loc = rows.candidate.labels, rows.candidate.location
    out = []
    for name in sorted(set(loc.tolist())):
        at = loc == name
        if at.sum() < min_rows or len(set(y[at].tolist())) < 2:
            continue
        out.append(
            StationAuc(
                str(name),
                int(at.sum()),
                roc_auc(y[at], rows.candidate.probability[at]),
                roc_auc(y[at], rows.champion.probability[at]),
            )
        )
    return out
