"""validate: the landed batch checked, its good rows loaded, its bad rows quarantined.

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
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd

from raincast import catalog, schema
from raincast.data import store
from raincast.data.validation import ValidationResult, quarantine_records, validate_batch
from raincast.params import ValidateParams
from raincast.settings import Settings

log = logging.getLogger(__name__)


class ValidationFailedError(RuntimeError):
    """Too many rows of a batch failed validation; nothing of it was loaded."""


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


def run(
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
    raw, meta = catalog.load_landing(settings, logical_date)
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
        landed = catalog.landing_paths(settings, logical_date)[0]
        raise ValidationFailedError(
            "; ".join(problems)
            + f". Nothing loaded; {len(result.quarantined)} rows kept in quarantine "
            f"(run_id {run_id}) and the batch stays in {landed}."
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
    catalog.replace_atomically(path, lambda tmp: tmp.write_text(text))
    log.info("store manifest %s updated", path)
    return True
