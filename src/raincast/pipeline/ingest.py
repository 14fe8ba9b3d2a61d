"""fetch and validate: the IO edge between a source and the raw store."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from raincast.data import store
from raincast.data.validation import ValidationResult, validate_batch
from raincast.params import ValidateParams
from raincast.settings import Settings
from raincast.sources import Source

log = logging.getLogger(__name__)

MANIFEST = Path("data/raw/store_manifest.json")


class ValidationFailedError(RuntimeError):
    """Too many rows of a batch failed validation; nothing of it was loaded."""


def make_source(spec: str, settings: Settings, seed: int = 0) -> Source:
    """Source from a spec: ``openmeteo``, ``synthetic``, ``csv:<file>`` or ``replay:<file>``."""
    kind, _, arg = spec.partition(":")
    if kind == "openmeteo":
        from raincast.sources.openmeteo import OpenMeteoSource

        return OpenMeteoSource(settings)
    if kind == "synthetic":
        from raincast.sources.synthetic import SyntheticSource

        return SyntheticSource(seed=int(arg) if arg else seed)
    if kind in ("csv", "replay"):
        from raincast.sources.csvfile import CsvSource, ReplaySource

        if not arg:
            raise ValueError(f"source {kind!r} needs a file: {kind}:<path to weatherAUS csv>")
        return (CsvSource if kind == "csv" else ReplaySource)(Path(arg))
    raise ValueError(
        f"unknown source {spec!r}: use openmeteo, synthetic, csv:<file> or replay:<file>"
    )


def landing_paths(settings: Settings, logical_date: date) -> tuple[Path, Path]:
    base = settings.landing_dir / logical_date.isoformat()
    return base.with_suffix(".parquet"), base.with_suffix(".json")


@dataclass(frozen=True)
class FetchResult:
    path: Path
    rows: int
    source: str


def fetch(
    settings: Settings, source: Source, logical_date: date, start: date | None = None
) -> FetchResult:
    """Fetch [start, logical_date] (default: the logical date alone) into the landing area."""
    start = start or logical_date
    df = source.fetch(start, logical_date)
    data_path, meta_path = landing_paths(settings, logical_date)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = data_path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(data_path)  # atomic: validate never sees half a file
    meta = {
        "source": source.name,
        "start": start.isoformat(),
        "end": logical_date.isoformat(),
        "rows": len(df),
        "fetched_at": datetime.now(UTC).isoformat(),
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    log.info("fetched %d rows from %s for %s..%s", len(df), source.name, start, logical_date)
    return FetchResult(data_path, len(df), source.name)


@dataclass(frozen=True)
class ValidateOutcome:
    result: ValidationResult
    upsert: store.UpsertResult | None
    run_id: str
    source: str


def validate(
    settings: Settings, params: ValidateParams, logical_date: date, run_id: str | None = None
) -> ValidateOutcome:
    """Validate the landed batch for ``logical_date``; load accepted rows, quarantine the rest.

    Raises ValidationFailedError (after quarantining, loading nothing) when the invalid
    share exceeds ``params.max_invalid_share`` or the batch is stale or empty.
    """
    data_path, meta_path = landing_paths(settings, logical_date)
    if not data_path.exists():
        raise FileNotFoundError(
            f"nothing fetched for {logical_date}: run `raincast fetch --date {logical_date}`"
        )
    meta = json.loads(meta_path.read_text())
    source = meta["source"]
    run_id = run_id or f"{source}:{logical_date.isoformat()}"
    raw = pd.read_parquet(data_path)
    result = validate_batch(raw, date.fromisoformat(meta["start"]), date.fromisoformat(meta["end"]))
    engine = store.connect(settings.raw_store_url)
    store.write_quarantine(engine, result.quarantined, source, run_id)

    problems = []
    if result.rows_in == 0:
        problems.append(f"source {source} returned no rows for {meta['start']}..{meta['end']}")
    if result.invalid_share > params.max_invalid_share:
        worst = ", ".join(f"{c} ({n} rows)" for c, n in result.worst_checks())
        problems.append(
            f"{len(result.quarantined)}/{result.rows_in} rows invalid "
            f"({result.invalid_share:.1%} > max_invalid_share {params.max_invalid_share:.1%}); "
            f"worst checks: {worst}"
        )
    if not result.accepted.empty:
        newest = date.fromisoformat(result.accepted["Date"].max())
        if (logical_date - newest).days > params.max_age_days:
            problems.append(
                f"stale batch: newest row {newest} is older than {params.max_age_days} days"
            )

    upsert = (
        None if problems else store.upsert_observations(engine, result.accepted, source, run_id)
    )
    store.record_validation_run(
        engine,
        run_id=run_id,
        logical_date=logical_date,
        source=source,
        status="failed" if problems else "ok",
        rows_in=result.rows_in,
        accepted=len(result.accepted),
        quarantined=len(result.quarantined),
        inserted=upsert.inserted if upsert else 0,
        updated=upsert.updated if upsert else 0,
        labels_filled=upsert.labels_filled if upsert else 0,
        worst_checks=json.dumps(result.worst_checks()),
    )
    if problems:
        raise ValidationFailedError(
            "; ".join(problems)
            + f". Nothing loaded; {len(result.quarantined)} rows kept in quarantine "
            f"(run_id {run_id}) and the batch stays in {data_path}."
        )
    if upsert and upsert.changed:
        write_manifest(settings, engine, run_id)
    return ValidateOutcome(result, upsert, run_id, source)


def write_manifest(settings: Settings, engine: object, run_id: str) -> None:
    """Record that the store changed; `process` depends on this file in dvc.yaml."""
    rng = store.date_range(engine)  # type: ignore[arg-type]
    path = settings.project_dir / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "rows": store.count_rows(engine),  # type: ignore[arg-type]
        "first_date": rng[0].isoformat() if rng else None,
        "last_date": rng[1].isoformat() if rng else None,
        "last_change_run_id": run_id,
    }
    path.write_text(json.dumps(body, indent=2) + "\n")
