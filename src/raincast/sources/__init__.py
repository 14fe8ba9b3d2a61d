"""Observation sources. Each returns weatherAUS-schema rows for a date range.

A source never fills ``RainTomorrow`` (it is not known on the day) and may leave
``RainToday`` empty: the raw store derives both from ``Rainfall`` (see store.py).
"""

from __future__ import annotations

from datetime import date
from typing import Protocol

import pandas as pd


class Source(Protocol):
    """Something that returns observations for every station it knows, per day."""

    name: str

    def fetch(self, start: date, end: date) -> pd.DataFrame:
        """Rows with ``start <= Date <= end`` in the weatherAUS schema (see schema.conform)."""
        ...


class SourceUnavailableError(RuntimeError):
    """The source could not be reached (network down, server error after retries)."""
