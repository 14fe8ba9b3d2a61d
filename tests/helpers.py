"""Shared test builders: a source of fixed rows, the two-writers upsert race, the
waiting-advisory-locks probe and backtest result files.

The builders bench/ uses too (free ports, logged servers, a small champion) live in
`testbed`; they are re-exported here for the tests that still import them from here.
"""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from testbed.champion import labelled_rows, train_on_split, train_small_model
from testbed.servers import (
    api_command,
    free_port,
    http_status,
    mlflow_server_command,
    start_logged,
    start_mlflow_server,
    stop_group,
    wait_until,
)

from raincast import schema
from raincast.data import store

__all__ = [
    "BACKTEST_START",
    "BENCH_RESULTS",
    "FixedRows",
    "api_command",
    "backtest_result_body",
    "free_port",
    "http_status",
    "labelled_rows",
    "mlflow_server_command",
    "policy_summary",
    "race_two_upserts",
    "start_logged",
    "start_mlflow_server",
    "stop_group",
    "train_on_split",
    "train_small_model",
    "wait_until",
    "waiting_advisory_locks",
]


class FixedRows:
    """A source returning fixed rows under a given name (``csv`` = real, ``synthetic``)."""

    def __init__(self, name: str, rows: pd.DataFrame) -> None:
        self.name, self.rows = name, rows

    def fetch(self, start: date, end: date) -> pd.DataFrame:
        d = self.rows[schema.DATE]
        return self.rows[(d >= start.isoformat()) & (d <= end.isoformat())].reset_index(drop=True)


def race_two_upserts(
    url: str, batch: pd.DataFrame, source: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, store.UpsertResult], dict[str, BaseException]]:
    """Two threads upsert ``batch`` into the store at ``url`` at once, the second starting
    while the first has read what it compares against and sleeps 0.5 s (every chance to
    overtake there). Returns each thread's result and error by name (first, second)."""
    first_has_read = threading.Event()
    real_read = store._read_observations

    def slow_read(*args: object, **kwargs: object) -> pd.DataFrame:
        out = real_read(*args, **kwargs)  # type: ignore[arg-type]
        if threading.current_thread().name == "first":
            first_has_read.set()
            time.sleep(0.5)
        return out

    monkeypatch.setattr(store, "_read_observations", slow_read)
    results: dict[str, store.UpsertResult] = {}
    errors: dict[str, BaseException] = {}

    def upsert(name: str) -> None:
        try:
            results[name] = store.upsert_observations(store.connect(url), batch, source, name)
        except BaseException as err:  # reported by the caller's assertions
            errors[name] = err

    first = threading.Thread(target=upsert, args=("first",), name="first")
    second = threading.Thread(target=upsert, args=("second",), name="second")
    first.start()
    assert first_has_read.wait(10)
    second.start()
    first.join(30)
    second.join(30)
    return results, errors


def waiting_advisory_locks(engine: sa.Engine) -> int:
    """PostgreSQL advisory locks requested and not yet granted (sessions waiting on one)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            ).scalar_one()
        )


# --- backtest result files ----------------------------------------------------------------------

#: The committed benchmark: a backtest summary (no per-day rows) and its three plots.
BENCH_RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
BACKTEST_START = date(2020, 1, 1)


def policy_summary(policy: str, days: int, retrains: int, promotions: int) -> dict[str, Any]:
    """A `PolicySummary` as `BacktestResult.as_dict` writes it."""
    return {
        "policy": policy, "first_day": "2020-01-01", "last_day": "2020-01-10", "days": days,
        "n_predictions": 470, "n_scored": 460, "roc_auc": 0.9, "f1": 0.66, "precision": 0.6,
        "recall": 0.7, "mean_rolling_roc_auc": 0.89, "mean_rolling_f1": 0.65,
        "retrains": retrains, "failed_retrains": 0, "promotions": promotions,
        "drift_checks": 0, "compute_seconds": 120.0, "fit_seconds": 100.0, "drift_seconds": 0.0,
    }  # fmt: skip


def day_row(policy: str, i: int, promoted: bool | None = None) -> dict[str, Any]:
    """A `DayRow` as written (the fields the API ignores included)."""
    return {
        "date": (BACKTEST_START + timedelta(days=i)).isoformat(), "policy": policy,
        "champion_version": "2019-12-31", "champion_data_through": "2019-12-30",
        "n_rows": 47, "n_scored": 46, "f1": 0.6, "roc_auc": 0.88,
        "rolling_f1": 0.6 + i / 10_000, "rolling_roc_auc": 0.9 - i / 10_000,
        "rolling_n_scored": 46 * (i + 1), "retrained": promoted is not None,
        "retrain_failed": False, "promoted": promoted, "compute_seconds": 1.5,
    }  # fmt: skip


def backtest_result_body(n_days: int = 10, promoted_on: int = 4) -> dict[str, Any]:
    """A two-policy result: ``daily`` promoted once, ``never`` never retrained."""
    days = [
        day_row(p, i, (i == promoted_on) if p == "daily" else None)
        for i in range(n_days)
        for p in ("daily", "never")
    ]
    retrain = {
        "policy": "daily", "day": (BACKTEST_START + timedelta(days=promoted_on)).isoformat(),
        "version": "2020-01-05", "promoted": True,
        "reasons": ["F1 0.67 vs champion 0.66 (gain +0.01, needs >= 0.002): ok"],
        "candidate": {"version": "2020-01-05", "f1": 0.67, "roc_auc": 0.91, "threshold": 0.3},
        "champion": {"version": "2019-12-31", "f1": 0.66, "roc_auc": 0.9, "threshold": 0.33},
        "error": "",
    }  # fmt: skip
    return {
        "meta": {"data": "w.csv.gz", "quarantined_rows": 0},
        "start": BACKTEST_START.isoformat(),
        "end": (BACKTEST_START + timedelta(days=n_days - 1)).isoformat(),
        "policies": ["daily", "never"],
        "last_days": {"daily": "2020-01-10", "never": "2020-01-10"},
        "history": {"first_day": "2019-01-01", "last_day": "2019-12-31", "rows": 1000},
        "params": {"split": "a1", "train": "b2", "promote": "c3", "drift": "d4"},
        "distinct_fits": 3,
        "wall_seconds": 61.5,
        "summary": {
            "daily": policy_summary("daily", n_days, n_days, 1),
            "never": policy_summary("never", n_days, 0, 0),
        },
        "initial": {"policy": "*", "day": "2019-12-31", "promoted": True, "reasons": []},
        "retrains": [retrain],
        "days": days,
    }
