"""Sources backed by a weatherAUS-format CSV file: the whole file, or replayed a day at a time."""

from __future__ import annotations

from datetime import date
from functools import cached_property
from pathlib import Path

import pandas as pd

from raincast import schema


class CsvSource:
    """Rows of a weatherAUS-format file (the Kaggle download) within the requested dates.

    The file's ``RainTomorrow`` is dropped: on day D it is not yet known, and the store
    back-fills it when D+1 arrives, exactly as for live sources.
    """

    name = "csv"

    def __init__(self, path: Path) -> None:
        if not Path(path).exists():
            raise FileNotFoundError(f"weatherAUS file not found: {path}")
        self.path = Path(path)

    @cached_property
    def frame(self) -> pd.DataFrame:
        df = schema.read_weather_csv(self.path)
        df[schema.RAIN_TOMORROW] = None
        return df

    def last_date(self) -> date:
        """The newest date in the file (the default logical date for csv/replay runs)."""
        return date.fromisoformat(str(self.frame[schema.DATE].dropna().max()))

    def fetch(self, start: date, end: date) -> pd.DataFrame:
        if start > end:
            raise ValueError(f"start {start} is after end {end}")
        dates = self.frame[schema.DATE]
        mask = (dates >= start.isoformat()) & (dates <= end.isoformat())
        if end >= self.last_date():
            # Rows without a valid ISO date belong to no window. Rather than drop them
            # silently, the batch reaching the file's newest date carries them, so
            # validation quarantines them with a reason (type:Date).
            mask |= dates.isna()
        return self.frame.loc[mask].reset_index(drop=True)


class ReplaySource(CsvSource):
    """A weatherAUS file replayed one logical date at a time (real history, no network)."""

    name = "replay"
