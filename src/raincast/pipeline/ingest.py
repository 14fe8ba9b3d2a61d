"""fetch and validate: the IO edge between a source and the raw store.

What is atomic: a landing file (data and its metadata in one parquet file, written to a
temporary name and renamed); one validation (quarantine, upsert and the validation-run
record in one database transaction); the DVC manifest (renamed into place after the
commit, and rewritten from the store on every validate, so a rerun repairs a manifest a
crash left behind). What is locked: a validation holds the store lock (see
store.store_lock) from reading the store to writing the manifest.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from raincast import catalog, schema
from raincast.data import store
from raincast.data.validation import ValidationResult, quarantine_records, validate_batch
from raincast.params import ValidateParams
from raincast.settings import Settings
from raincast.sources import Source

log = logging.getLogger(__name__)

#: Key of the landing metadata inside the parquet file's schema metadata.
_META_KEY = b"raincast.landing"


class ValidationFailedError(RuntimeError):
    """Too many rows of a batch failed validation; nothing of it was loaded."""


class LandingError(ValueError):
    """A landing file cannot be read; the message names it and says to fetch again."""


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


def landing_paths(settings: Settings, logical_date: date) -> tuple[Path, Path]:
    """The landing file of a date and its human-readable metadata (validate reads the
    metadata embedded in the parquet file; the JSON is for people and older tools)."""
    base = settings.landing_dir / logical_date.isoformat()
    return base.with_suffix(".parquet"), base.with_suffix(".json")


@dataclass(frozen=True)
class FetchResult:
    path: Path
    rows: int
    source: str
    unknown_columns: tuple[str, ...] = ()


def _replace_atomically(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` (same folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_landing(path: Path, df: pd.DataFrame, meta: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()}
    )
    _replace_atomically(path, lambda tmp: pq.write_table(table, tmp))


def fetch(
    settings: Settings, source: Source, logical_date: date, start: date | None = None
) -> FetchResult:
    """Fetch [start, logical_date] (default: the logical date alone) into the landing area.

    The rows are landed as the source sent them, with their metadata inside the same
    parquet file (one atomic rename: validate never sees half a file or stale metadata).
    """
    start = start or logical_date
    df = source.fetch(start, logical_date)
    unknown = tuple(getattr(source, "unknown_columns", ()) or ())
    data_path, meta_path = landing_paths(settings, logical_date)
    meta = {
        "source": source.name,
        "start": start.isoformat(),
        "end": logical_date.isoformat(),
        "rows": len(df),
        "fetched_at": datetime.now(UTC).isoformat(),
        "unknown_columns": list(unknown),
    }
    _write_landing(data_path, df, meta)
    _replace_atomically(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    log.info("fetched %d rows from %s for %s..%s", len(df), source.name, start, logical_date)
    return FetchResult(data_path, len(df), source.name, unknown)


def read_landing(settings: Settings, logical_date: date) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The landed batch of a date and its metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data_path, meta_path = landing_paths(settings, logical_date)
    again = f"fetch it again (`raincast fetch --date {logical_date}`)"
    if not data_path.exists():
        raise FileNotFoundError(
            f"nothing fetched for {logical_date} ({data_path} is missing): "
            f"run `raincast fetch --date {logical_date}`"
        )
    try:
        table = pq.read_table(data_path)
        embedded = (table.schema.metadata or {}).get(_META_KEY)
        meta = json.loads(embedded) if embedded else json.loads(meta_path.read_text())
        lacking = [k for k in ("source", "start", "end") if k not in meta]
        if lacking:
            raise KeyError(f"metadata lacks {lacking}")
        date.fromisoformat(meta["start"])
        date.fromisoformat(meta["end"])
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError) as err:
        raise LandingError(
            f"landing file {data_path} is unreadable ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'}); {again}"
        ) from None
    return table.to_pandas(), meta


@dataclass(frozen=True)
class ValidateOutcome:
    result: ValidationResult
    upsert: store.UpsertResult | None
    run_id: str
    source: str
    manifest_written: bool = False


def _with_refusals(result: ValidationResult, refused: pd.DataFrame) -> ValidationResult:
    """Move rows the store refused (keyed by Date, Location) from accepted to quarantined."""
    if refused.empty:
        return result
    key = [schema.DATE, schema.LOCATION]
    acc = result.accepted
    hit = pd.MultiIndex.from_frame(acc[key]).isin(pd.MultiIndex.from_frame(refused[key]))
    reasons = {
        (d, loc): [(c, r)]
        for d, loc, c, r in refused[[*key, "check", "reason"]].itertuples(index=False)
    }
    rows = acc.loc[hit].reset_index(drop=True)
    by_index = {
        i: reasons[(rows.at[i, schema.DATE], rows.at[i, schema.LOCATION])] for i in rows.index
    }
    extra = pd.DataFrame(quarantine_records(rows, by_index), columns=result.quarantined.columns)
    counts = dict(result.check_counts)
    for c in refused["check"]:
        counts[c] = counts.get(c, 0) + 1
    return ValidationResult(
        accepted=acc.loc[~hit].reset_index(drop=True),
        quarantined=pd.concat([result.quarantined, extra], ignore_index=True),
        rows_in=result.rows_in,
        check_counts=counts,
    )


def validate(
    settings: Settings,
    params: ValidateParams,
    logical_date: date,
    run_id: str | None = None,
    allow_mixed: bool | None = None,
) -> ValidateOutcome:
    """Validate the landed batch for ``logical_date``; load accepted rows, quarantine the rest.

    Raises ValidationFailedError (after quarantining, loading nothing) when the invalid
    share exceeds ``params.max_invalid_share`` or the batch is stale or empty;
    store.SourceMixError (writing nothing) when the batch's kind of data (real or
    synthetic) differs from the store's and mixing is not allowed; store.StoreBusyError
    when another writer holds the store lock beyond ``settings.store_lock_timeout_s``.
    """
    allow = settings.allow_mixed_sources if allow_mixed is None else allow_mixed
    raw, meta = read_landing(settings, logical_date)
    source = str(meta["source"])
    run_id = run_id or f"{source}:{logical_date.isoformat()}"
    start, end = date.fromisoformat(meta["start"]), date.fromisoformat(meta["end"])
    if meta.get("unknown_columns"):
        log.warning(
            "batch %s carries column(s) outside the weatherAUS schema, ignored: %s",
            run_id,
            ", ".join(meta["unknown_columns"]),
        )
    engine = store.connect(settings.raw_store_url)
    lock = store.store_lock(
        engine, settings.lock_dir, settings.store_lock_timeout_s, f"validate {logical_date}"
    )
    with lock:
        store.check_source_kind(engine, source, allow)  # refuse before any work or write
        result = validate_batch(raw, start, end)
        with store.write_transaction(engine) as conn:
            plan = store.plan_upsert(conn, result.accepted, source, allow)
            result = _with_refusals(result, plan.refused)
            problems = _problems(result, params, logical_date, meta)
            upsert = None if problems else store.apply_upsert(conn, plan, run_id)
            store.write_quarantine(conn, result.quarantined, source, run_id)
            store.record_validation_run(
                conn,
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
        # After the commit; also repairs a manifest that an earlier crash left behind.
        written = sync_manifest(settings, engine)
    if problems:
        raise ValidationFailedError(
            "; ".join(problems)
            + f". Nothing loaded; {len(result.quarantined)} rows kept in quarantine "
            f"(run_id {run_id}) and the batch stays in {landing_paths(settings, logical_date)[0]}."
        )
    return ValidateOutcome(result, upsert, run_id, source, written)


def _problems(
    result: ValidationResult, params: ValidateParams, logical_date: date, meta: dict[str, Any]
) -> list[str]:
    problems = []
    if result.rows_in == 0:
        problems.append(
            f"source {meta['source']} returned no rows for {meta['start']}..{meta['end']}"
        )
    if result.invalid_share > params.max_invalid_share:
        worst = ", ".join(f"{c} ({n} rows)" for c, n in result.worst_checks())
        problems.append(
            f"{len(result.quarantined)}/{result.rows_in} rows invalid "
            f"({result.invalid_share:.1%} > max_invalid_share {params.max_invalid_share:.1%}); "
            f"worst checks: {worst}"
        )
    if not result.accepted.empty:
        newest = date.fromisoformat(result.accepted[schema.DATE].max())
        if (logical_date - newest).days > params.max_age_days:
            problems.append(
                f"stale batch: newest row {newest} is older than {params.max_age_days} days"
            )
    return problems


def manifest_body(engine: store.Target) -> dict[str, Any]:
    """What `process` depends on: derived from the store alone (its revision changes with
    every write), so it is the same however often it is written."""
    state = store.read_state(engine)
    rng = store.date_range(engine)
    return {
        "rows": store.count_rows(engine),
        "first_date": rng[0].isoformat() if rng else None,
        "last_date": rng[1].isoformat() if rng else None,
        "revision": state.revision,
        "last_change_run_id": state.last_change_run_id,
        "source_kind": state.source_kind,
    }


def sync_manifest(settings: Settings, engine: store.Target) -> bool:
    """Write the DVC manifest when it is missing or differs from the store (atomically);
    True when it was written. `process` depends on this file in dvc.yaml."""
    path = catalog.MANIFEST.at(settings.project_dir)
    body = manifest_body(engine)
    if body["revision"] == 0 and body["rows"] == 0:
        return False  # nothing was ever stored: nothing for DVC to process
    text = json.dumps(body, indent=2) + "\n"
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    _replace_atomically(path, lambda tmp: tmp.write_text(text))
    log.info("store manifest %s updated", path)
    return True
