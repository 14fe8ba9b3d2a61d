"""Champion spans: the store's decision history (`store.read_history`) folded into which
version was champion over which time span.

A span opens when a recorded decision moves the champion alias to a version (a promotion,
a rollback, a stage or alias command) and closes at the next decision that moves it away
(or archives it: no champion until the next move). A rejected candidate, or an alias move
that leaves the champion where it was (a challenger label), changes nothing.

The alias can also move without a record (by hand in MLflow, or before the history began).
A decision then finds a ``champion_before`` other than the open span's version: the open
span closes there and the found version's span opens at that decision, ``decided_by``
`UNRECORDED`. Both times are then only bounds: the move happened at or before them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

#: ``decided_by`` of a span whose start no recorded decision explains.
UNRECORDED = "unrecorded"
#: The history columns the spans are made of.
COLUMNS = ("decided_at", "action", "decision", "champion_before", "champion_after")


@dataclass(frozen=True)
class ChampionSpan:
    """One version's time as champion; ``end`` None while it still is."""

    version: str
    start: datetime
    end: datetime | None
    decided_by: str  # "<action>/<decision>" of the decision that made it champion

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape: ``{version, from, to, decided_by}`` with ISO 8601 times."""
        return {
            "version": self.version,
            "from": self.start.isoformat(),
            "to": None if self.end is None else self.end.isoformat(),
            "decided_by": self.decided_by,
        }


def _version(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return str(value)


def _utc(value: Any) -> datetime:
    """An aware UTC datetime; SQLite gives back naive UTC timestamps."""
    when = value if isinstance(value, datetime) else pd.Timestamp(value).to_pydatetime()
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def champion_spans(history: pd.DataFrame) -> list[ChampionSpan]:
    """The champion spans of ``history`` (rows of ``promotion_history`` in the order they
    were recorded), oldest first; at most the last one is open. No rows, no spans; rows
    without one of `COLUMNS` are a ValueError naming it."""
    if history.empty:
        return []
    if missing := [c for c in COLUMNS if c not in history.columns]:
        raise ValueError(f"the decision history has no column {', '.join(missing)}")
    spans: list[ChampionSpan] = []
    open_span: ChampionSpan | None = None

    def close(at: datetime) -> None:
        nonlocal open_span
        if open_span is not None:
            spans.append(ChampionSpan(open_span.version, open_span.start, at, open_span.decided_by))
            open_span = None

    def open_at(version: str | None, at: datetime, decided_by: str) -> None:
        nonlocal open_span
        if version is not None:
            open_span = ChampionSpan(version, at, None, decided_by)

    for row in history.to_dict("records"):
        at = _utc(row["decided_at"])
        before, after = _version(row["champion_before"]), _version(row["champion_after"])
        current = open_span.version if open_span else None
        if before != current:  # the alias moved without a record since the last decision
            close(at)
            open_at(before, at, UNRECORDED)
        if after != before:
            close(at)
            open_at(after, at, f"{row['action']}/{row['decision']}")
    if open_span is not None:
        spans.append(open_span)
    return spans
