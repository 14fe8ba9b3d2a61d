"""fetch: observations of a date (or a range) from a source into the landing area.

The rows are landed as the source sent them, with their metadata inside the same parquet
file (`raincast.catalog.save_landing`: one atomic rename, so validate never sees half a
file or stale metadata). No fallback here: `raincast run` decides about that.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from raincast import catalog
from raincast.settings import Settings
from raincast.sources import Source

log = logging.getLogger(__name__)


def make_source(spec: str, settings: Settings, seed: int = 0) -> Source:
    """Source from a spec: ``openmeteo``, ``synthetic``, ``csv:<file>`` or ``replay:<file>``."""
    kind, _, arg = spec.partition(":")
    if kind == "openmeteo":
        from raincast.sources.openmeteo import OpenMeteoSource

        return OpenMeteoSource(settings)
    if kind == "synthetic":
        from raincast.sources.synthetic import SyntheticSource

        try:
            return SyntheticSource(seed=int(arg) if arg else seed)
        except ValueError:
            raise ValueError(f"synthetic seed must be an integer: {spec!r}") from None
    if kind in ("csv", "replay"):
        from raincast.sources.csvfile import CsvSource, ReplaySource

        if not arg:
            raise ValueError(f"source {kind!r} needs a file: {kind}:<path to weatherAUS csv>")
        return (CsvSource if kind == "csv" else ReplaySource)(Path(arg))
    raise ValueError(
        f"unknown source {spec!r}: use openmeteo, synthetic, csv:<file> or replay:<file>"
    )


@dataclass(frozen=True)
class FetchResult:
    path: Path
    rows: int
    source: str
    unknown_columns: tuple[str, ...] = ()


def run(
    settings: Settings, source: Source, logical_date: date, start: date | None = None
) -> FetchResult:
    """Fetch [start, logical_date] (default: the logical date alone) into the landing area."""
    start = start or logical_date
    df = source.fetch(start, logical_date)
    unknown = tuple(getattr(source, "unknown_columns", ()) or ())
    data_path, meta_path = catalog.landing_paths(settings, logical_date)
    meta = {
        "source": source.name,
        "start": start.isoformat(),
        "end": logical_date.isoformat(),
        "rows": len(df),
        "fetched_at": datetime.now(UTC).isoformat(),
        "unknown_columns": list(unknown),
    }
    catalog.save_landing(data_path, df, meta)
    catalog.replace_atomically(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    log.info("fetched %d rows from %s for %s..%s", len(df), source.name, start, logical_date)
    return FetchResult(data_path, len(df), source.name, unknown)
