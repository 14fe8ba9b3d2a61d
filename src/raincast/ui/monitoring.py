"""Read-only views of the raw store for the UI: promotion history, live scores, drift.

The UI never writes: `store.connect` would create missing tables (and a SQLite file), so
these open their own read-only engine and answer ``None`` when the store is not there or
cannot be reached (the page then says so instead of failing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import sqlalchemy as sa

from raincast.data import store

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A drift table is any table whose name contains this word, with a time column and a
#: column whose name contains "share" (the share of drifted columns); none exists yet.
DRIFT_TABLE_WORD = "drift"
_TIME_COLUMNS = ("as_of_date", "date", "logical_date", "computed_at", "created_at")


def read_only_engine(url: str) -> sa.Engine | None:
    """An engine that cannot write to the store at ``url``; None for a missing SQLite file."""
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


@contextmanager
def _engine(url: str) -> Iterator[sa.Engine | None]:
    engine = read_only_engine(url)
    try:
        yield engine
    finally:
        if engine is not None:
            engine.dispose()


def _read(url: str, what: str, reader: Callable[[sa.Engine, set[str]], T]) -> T | None:
    try:
        with _engine(url) as engine:
            if engine is None:
                return None
            return reader(engine, set(sa.inspect(engine).get_table_names()))
    except (sa.exc.SQLAlchemyError, OSError) as err:
        log.warning("cannot read %s from the store: %s", what, err)
        return None


def promotion_history(url: str, model_name: str) -> pd.DataFrame | None:
    """Registry decisions for ``model_name`` (oldest first); None when unreachable."""

    def read(engine: sa.Engine, tables: set[str]) -> pd.DataFrame:
        if store.promotion_history.name not in tables:
            return pd.DataFrame(columns=[c.name for c in store.promotion_history.columns])
        return store.read_history(engine, model_name)

    return _read(url, "promotion history", read)


def live_scores(url: str, model_name: str) -> pd.DataFrame | None:
    """Live F1 / AUC / base rate per as-of date and window; None when unreachable."""

    def read(engine: sa.Engine, tables: set[str]) -> pd.DataFrame:
        if store.live_scores.name not in tables:
            return pd.DataFrame(columns=[c.name for c in store.live_scores.columns])
        return store.read_live_scores(engine, model_name)

    return _read(url, "live scores", read)


def drift_shares(url: str) -> pd.DataFrame | None:
    """``(time, drift_share)`` rows from a drift table, oldest first; empty when the store
    has no such table, None when unreachable."""

    def read(engine: sa.Engine, tables: set[str]) -> pd.DataFrame:
        for name in sorted(t for t in tables if DRIFT_TABLE_WORD in t.lower()):
            table = sa.Table(name, sa.MetaData(), autoload_with=engine)
            cols = [c.name for c in table.columns]
            time_col = next((c for c in _TIME_COLUMNS if c in cols), None) or next(
                (c for c in cols if c.endswith(("_date", "_at"))), None
            )
            share_col = next((c for c in cols if "share" in c.lower()), None)
            if time_col and share_col:
                query = sa.select(table.c[time_col], table.c[share_col]).order_by(table.c[time_col])
                with engine.connect() as conn:
                    rows = conn.execute(query).all()
                return pd.DataFrame(rows, columns=["time", "drift_share"])
        return pd.DataFrame(columns=["time", "drift_share"])

    return _read(url, "drift", read)
