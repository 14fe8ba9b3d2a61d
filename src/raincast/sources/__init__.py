"""Observation sources. Each returns weatherAUS-schema rows for a date range.

A source never fills ``RainTomorrow`` (it is not known on the day) and may leave
``RainToday`` empty: the raw store derives both from ``Rainfall`` (see store.py).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Protocol

import pandas as pd

from raincast.params import HistoryParams


class Source(Protocol):
    """Something that returns observations for every station it knows, per day."""

    name: str

    def fetch(self, start: date, end: date) -> pd.DataFrame:
        """Rows with ``start <= Date <= end`` with the weatherAUS columns. Values are as the
        source sent them (a file source keeps text); validation parses and judges them."""
        ...


def default_date(source: Source) -> date:
    """File sources default to their last date; live ones to today."""
    last = getattr(source, "last_date", None)
    return last() if callable(last) else date.today()


def history_start(source: Source, logical_date: date, history: HistoryParams) -> date:
    """First day of the history an empty store loads before ``logical_date``: csv/replay
    files every earlier row, Open-Meteo / synthetic the days params.yaml `history` sets."""
    first = getattr(source, "first_date", None)
    if callable(first):
        return first()
    days = history.openmeteo_days if source.name == "openmeteo" else history.synthetic_days
    return logical_date - timedelta(days=days)


class SourceUnavailableError(RuntimeError):
    """The source could not be reached (network down, server error after retries)."""


class SourceFileError(ValueError):
    """A source file cannot be read as weatherAUS data; the message names the file and
    what to do about it."""
