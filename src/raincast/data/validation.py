"""Validation of a fetched batch: every row is either accepted or quarantined with a reason.

Validation judges what the source sent: a file source hands over text, so parsing is
part of validation. A value that is not a number, a Date that is not a real ISO day, a
line with the wrong number of fields (``schema.PARSE_PROBLEM``) and a row that observes
nothing are quarantined with their raw values, never turned into missing values.

Value rules come from schema.py (ranges, compass, stations) and are expressed as pandera
schemas; numbers are parsed column-wise (pyarrow's cast, pandas for the rare dirty
column) and the rules that span cells or rows (freshness, calm wind, duplicates, empty
rows) are vectorised frame checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from raincast import schema

#: Text columns and their allowed values (None = free text).
_CATEGORIES: dict[str, tuple[str, ...]] = {
    **{c: schema.COMPASS_POINTS for c in schema.DIRECTION_COLUMNS},
    schema.RAIN_TODAY: schema.YES_NO,
    schema.RAIN_TOMORROW: schema.YES_NO,
}
_CALM_PAIRS: tuple[tuple[str, str], ...] = (
    ("WindSpeed9am", "WindDir9am"),
    ("WindSpeed3pm", "WindDir3pm"),
)
_ISO_DATE = r"\d{4}-\d{2}-\d{2}"
_EXTRA_COLUMNS = (schema.PARSE_PROBLEM, schema.RAW_RECORD)

Failure = tuple[int, str, str]  # (row index, check, reason)


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of validating one batch. ``quarantined`` keeps every rejected raw row."""

    accepted: pd.DataFrame
    quarantined: pd.DataFrame  # columns: Date, Location, check, reason, payload
    rows_in: int
    check_counts: dict[str, int] = field(default_factory=dict)

    @property
    def invalid_share(self) -> float:
        return len(self.quarantined) / self.rows_in if self.rows_in else 0.0

    def worst_checks(self, n: int = 3) -> list[tuple[str, int]]:
        return sorted(self.check_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _value_schema() -> pa.DataFrameSchema:
    cols: dict[str, pa.Column] = {
        c: pa.Column(float, pa.Check.in_range(lo, hi), nullable=True)
        for c, (lo, hi) in schema.NUMERIC_RANGES.items()
    }
    for c, allowed in _CATEGORIES.items():
        cols[c] = pa.Column(checks=pa.Check.isin(list(allowed)), nullable=True)
    cols[schema.LOCATION] = pa.Column(
        checks=pa.Check.isin(list(schema.station_names())), nullable=False
    )
    return pa.DataFrameSchema(cols, strict=False)


def _check_name(column: str, check: str) -> str:
    if check.startswith(("coerce_dtype", "dtype", "not_nullable")):
        kind = "type" if check.startswith(("coerce", "dtype")) else "missing"
        return f"{kind}:{column}"
    if column == schema.LOCATION:
        return "station:Location"
    if check.startswith("isin"):
        return f"category:{column}"
    if check.startswith("in_range"):
        return f"range:{column}"
    return f"{check}:{column}"


def _reason(name: str, column: str, value: object) -> str:
    kind = name.split(":", 1)[0]
    if kind == "range":
        lo, hi = schema.NUMERIC_RANGES[column]
        return f"{column}={value!r} outside physical range [{lo}, {hi}]"
    if kind == "station":
        return f"{column}={value!r} is not one of the {len(schema.stations())} stations"
    if kind == "category":
        return f"{column}={value!r} is not an allowed value"
    if kind == "missing":
        return f"{column} is missing"
    return f"{column}={value!r} fails {name}"


def _failures(s: pa.DataFrameSchema, df: pd.DataFrame) -> list[Failure]:
    """(row index, check, reason) for every failing cell; whole-frame errors raise."""
    try:
        s.validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        out = []
        for fc in err.failure_cases.itertuples(index=False):
            if fc.index is None or pd.isna(fc.index):
                raise ValueError(f"batch fails {fc.check} on column {fc.column}") from err
            name = _check_name(str(fc.column), str(fc.check))
            out.append((int(fc.index), name, _reason(name, str(fc.column), fc.failure_case)))
        return out
    return []


def _as_float(col: pd.Series) -> np.ndarray:
    """A column as float64 (NaN where missing or not a number). Text goes through
    pyarrow's vectorised cast; only a column holding a non-number falls back to pandas."""
    if col.dtype.kind in "fiub":
        return col.to_numpy(dtype="float64", na_value=np.nan)
    import pyarrow as pyarrow
    import pyarrow.compute as pc

    try:
        cast = pc.cast(pyarrow.array(col, from_pandas=True), pyarrow.float64())
        return np.asarray(cast.to_numpy(zero_copy_only=False), dtype="float64")
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError, pyarrow.ArrowNotImplementedError):
        return pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _parse(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[Failure]]:
    """The batch with numbers parsed (float64) and each parse failure: a line the source
    could not split into the schema, a non-number in a numeric column (the text "nan"
    included), a missing or impossible Date."""
    out: list[Failure] = []
    if schema.PARSE_PROBLEM in raw.columns:
        for i, problem in raw[schema.PARSE_PROBLEM].dropna().items():
            out.append((int(i), "arity:row", str(problem)))
    typed = raw.loc[:, list(schema.COLUMNS)].copy()
    for c in schema.NUMERIC_COLUMNS:
        values = _as_float(raw[c])
        bad = raw[c].notna().to_numpy() & np.isnan(values)
        for i in np.flatnonzero(bad):
            value = raw[c].iat[i]
            out.append((int(raw.index[i]), f"type:{c}", f"{c}={value!r} is not a number"))
        typed[c] = values
    text = raw[schema.DATE].astype("string")
    iso = text.str.fullmatch(_ISO_DATE).fillna(False).astype(bool)
    parsed = pd.to_datetime(text.where(iso), format="%Y-%m-%d", errors="coerce")
    for i in raw.index[text.isna().to_numpy()]:
        out.append((int(i), "missing:Date", "Date is missing"))
    for i in raw.index[(text.notna() & parsed.isna()).to_numpy()]:
        out.append((int(i), "type:Date", f"Date={text[i]!r} is not a valid ISO date (YYYY-MM-DD)"))
    return typed, out


def _frame_failures(df: pd.DataFrame, start: date, end: date) -> list[Failure]:
    """Freshness, empty-row, calm-wind and duplicate rules, which span cells or rows."""
    out: list[Failure] = []
    dates = pd.to_datetime(df[schema.DATE]).dt.date
    for i in df.index[(dates < start) | (dates > end)]:
        out.append((i, "freshness:Date", f"Date {dates[i]} outside requested {start}..{end}"))
    empty = df[list(schema.OBSERVED_COLUMNS)].isna().all(axis=1)
    for i in df.index[empty]:
        out.append((i, "empty:row", "no observations: every measured column is missing"))
    for speed, direction in _CALM_PAIRS:
        calm = (df[speed] == 0) & df[direction].notna()
        for i in df.index[calm]:
            out.append((i, f"calm:{direction}", f"{speed}=0 (calm) but {direction} is set"))
    key = [dates, df[schema.LOCATION]]
    dup_key = pd.Series(list(zip(*key, strict=True)), index=df.index)
    repeated = df.duplicated(keep="first")
    # A key seen with two different value sets is a conflict: quarantine every row of it.
    distinct = dup_key[~repeated]
    conflicting = dup_key.isin(set(distinct[distinct.duplicated(keep=False)]))
    for i in df.index[repeated]:
        out.append((i, "duplicate:key", "exact repeat of an earlier row"))
    for i in df.index[conflicting & ~repeated]:
        out.append((i, "duplicate:key", "same (Date, Location) as a row with other values"))
    return out


def _payload(row: pd.Series) -> str:
    """The row as sent, as JSON (the parse-problem columns only when set)."""
    body: dict[str, Any] = {}
    for k, v in row.items():
        missing = v is None or (not isinstance(v, str) and bool(pd.isna(v)))
        if k in _EXTRA_COLUMNS and missing:
            continue
        body[str(k)] = None if missing else v
    return json.dumps(body, default=str)


def quarantine_records(raw: pd.DataFrame, reasons: dict[int, list[tuple[str, str]]]) -> list[dict]:
    """Quarantine rows (Date, Location, check, reason, payload) for the rows of ``raw``
    named in ``reasons``; checks are joined with ',' and reasons with '; '."""
    records = []
    for i in sorted(reasons):
        row = raw.loc[i]
        checks = sorted({c for c, _ in reasons[i]})
        date_value, location = row[schema.DATE], row[schema.LOCATION]
        records.append(
            {
                schema.DATE: None if pd.isna(date_value) else str(date_value),
                schema.LOCATION: None if pd.isna(location) else str(location),
                "check": ",".join(checks),
                "reason": "; ".join(dict.fromkeys(r for _, r in reasons[i])),
                "payload": _payload(row),
            }
        )
    return records


QUARANTINE_COLUMNS = [schema.DATE, schema.LOCATION, "check", "reason", "payload"]


def validate_batch(raw: pd.DataFrame, start: date, end: date) -> ValidationResult:
    """Split ``raw`` into accepted rows (conformed) and quarantined rows (raw, with reasons).

    ``start``/``end`` is the window the batch was fetched for (freshness). Invariant:
    ``len(accepted) + len(quarantined) == len(raw)``.
    """
    missing_cols = [c for c in schema.COLUMNS if c not in raw.columns]
    if missing_cols:
        raise ValueError(f"batch lacks weatherAUS columns {missing_cols}")
    raw = raw.reset_index(drop=True)
    reasons: dict[int, list[tuple[str, str]]] = {}

    def note(items: list[Failure]) -> None:
        for i, check, reason in items:
            reasons.setdefault(i, []).append((check, reason))

    typed, parse_failures = _parse(raw)
    note(parse_failures)
    typed_ok = typed.drop(index=list(reasons))
    conformed = schema.conform(typed_ok).set_axis(typed_ok.index)
    note(_failures(_value_schema(), conformed))
    note(_frame_failures(conformed, start, end))

    counts: dict[str, int] = {}
    for i in reasons:
        for c in {c for c, _ in reasons[i]}:
            counts[c] = counts.get(c, 0) + 1
    quarantined = pd.DataFrame(quarantine_records(raw, reasons), columns=QUARANTINE_COLUMNS)
    bad = [i for i in reasons if i in conformed.index]
    accepted = conformed.drop(index=bad).reset_index(drop=True)
    result = ValidationResult(accepted, quarantined, rows_in=len(raw), check_counts=counts)
    if len(result.accepted) + len(result.quarantined) != result.rows_in:  # never lose a row
        raise AssertionError(
            f"row accounting broken: {result.rows_in} in != "
            f"{len(result.accepted)} accepted + {len(result.quarantined)} quarantined"
        )
    return result
