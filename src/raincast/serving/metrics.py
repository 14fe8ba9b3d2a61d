"""Prometheus metrics of the API (prefix ``raincast_``), registered through
``bentoml.metrics`` so they appear on BentoML's ``/metrics`` next to its request metrics
(and work with several workers). No per-user or per-request labels."""

from __future__ import annotations

import bentoml
import numpy as np

PREDICTIONS = bentoml.metrics.Counter(
    name="raincast_predictions_total",
    documentation="Rows predicted, by predicted label",
    labelnames=["label"],
)
PROBABILITY = bentoml.metrics.Histogram(
    name="raincast_prediction_probability",
    documentation="Predicted P(rain tomorrow)",
    buckets=tuple(np.round(np.linspace(0.1, 1.0, 10), 2)),
)
MODEL_INFO = bentoml.metrics.Gauge(
    name="raincast_model_info",
    documentation="1 for the model version being served",
    labelnames=["version"],
    multiprocess_mode="livemax",
)
MODEL_LOADED = bentoml.metrics.Gauge(
    name="raincast_model_loaded_timestamp_seconds",
    documentation="Unix time the served model was loaded (age = time() - this)",
    multiprocess_mode="livemax",
)
MODEL_AGE = bentoml.metrics.Gauge(
    name="raincast_model_age_seconds",
    documentation="Seconds since the served model was loaded, updated on each request",
    multiprocess_mode="livemax",
)
RELOADS = bentoml.metrics.Counter(
    name="raincast_model_reloads_total",
    documentation="Admin reloads of the champion, by outcome",
    labelnames=["outcome"],
)
AUTH_FAILURES = bentoml.metrics.Counter(
    name="raincast_auth_failures_total",
    documentation="Rejected requests and logins, by reason",
    labelnames=["reason"],
)
LOGINS = bentoml.metrics.Counter(
    name="raincast_logins_total",
    documentation="Token requests, by outcome",
    labelnames=["outcome"],
)

REFUSED = bentoml.metrics.Counter(
    name="raincast_requests_refused_total",
    documentation="Requests refused with 429 at the concurrency limit, before BentoML's "
    "own request metrics see them",
)

_served: dict[str, str | None] = {"version": None}


def set_model(version: str, loaded_at: float) -> None:
    if _served["version"] not in (None, version):
        MODEL_INFO.labels(version=_served["version"]).set(0)
    _served["version"] = version
    MODEL_INFO.labels(version=version).set(1)
    MODEL_LOADED.set(loaded_at)


def model_age(loaded_at: float) -> None:
    import time

    MODEL_AGE.set(time.time() - loaded_at)


def observe(labels: np.ndarray, probability: np.ndarray) -> None:
    yes = int((labels == "Yes").sum())
    if yes:
        PREDICTIONS.labels(label="Yes").inc(yes)
    if len(labels) - yes:
        PREDICTIONS.labels(label="No").inc(len(labels) - yes)
    if len(probability) <= 1000:
        for p in probability:
            PROBABILITY.observe(float(p))
    else:  # large batches: a systematic sample keeps the histogram's shape at low cost
        for p in probability[:: len(probability) // 1000]:
            PROBABILITY.observe(float(p))


def reload(ok: bool) -> None:
    RELOADS.labels(outcome="ok" if ok else "failed").inc()


def auth_failure(reason: str) -> None:
    AUTH_FAILURES.labels(reason=reason).inc()


def refused() -> None:
    REFUSED.inc()


def login(success: bool) -> None:
    LOGINS.labels(outcome="ok" if success else "failed").inc()
