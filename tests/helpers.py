"""Shared test builders: a source of fixed rows, the two-writers upsert race and the
waiting-advisory-locks probe.

The builders bench/ uses too (free ports, logged servers, a small champion) live in
`testbed`; they are re-exported here for the tests that still import them from here.
"""

from __future__ import annotations

import threading
import time
from datetime import date

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
    "FixedRows",
    "api_command",
    "free_port",
    "http_status",
    "labelled_rows",
    "mlflow_server_command",
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
