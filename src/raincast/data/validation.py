"""Validation of a fetched batch: every row is either accepted or quarantined with a reason.

Rules come from schema.py (ranges, compass, stations) and are expressed as pandera
schemas; the only hand-written parts are the row bookkeeping and the duplicate rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date

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


def _type_schema() -> pa.DataFrameSchema:
    cols: dict[str, pa.Column] = {
        c: pa.Column(float, nullable=True, coerce=True) for c in schema.NUMERIC_COLUMNS
    }
    # Date is parsed strictly as ISO by schema.conform; unparseable dates are caught there.
    cols[schema.DATE] = pa.Column(nullable=False)
    cols[schema.LOCATION] = pa.Column(nullable=False)
    return pa.DataFrameSchema(cols, strict=False)


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
    if kind == "type":
        return f"{column}={value!r} is not a number/date"
    return f"{column}={value!r} fails {name}"


def _failures(s: pa.DataFrameSchema, df: pd.DataFrame) -> list[tuple[int, str, str]]:
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


def _frame_failures(df: pd.DataFrame, start: date, end: date) -> list[tuple[int, str, str]]:
    """Freshness, calm-wind and duplicate rules, which span cells or rows."""
    out: list[tuple[int, str, str]] = []
    for i in df.index[df[schema.DATE].isna()]:
        out.append((i, "type:Date", "Date is not an ISO date (YYYY-MM-DD)"))
    dates = pd.to_datetime(df[schema.DATE]).dt.date
    known = df[schema.DATE].notna()
    for i in df.index[known & ((dates < start) | (dates > end))]:
        out.append((i, "freshness:Date", f"Date {dates[i]} outside requested {start}..{end}"))
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

    def note(items: list[tuple[int, str, str]]) -> None:
        for i, check, reason in items:
            reasons.setdefault(i, []).append((check, reason))

    note(_failures(_type_schema(), raw))
    typed_ok = raw.drop(index=list(reasons))
    conformed = schema.conform(typed_ok).set_axis(typed_ok.index)
    note(_failures(_value_schema(), conformed))
    note(_frame_failures(conformed, start, end))

    bad = sorted(reasons)
    counts: dict[str, int] = {}
    records = []
    for i in bad:
        checks = sorted({c for c, _ in reasons[i]})
        for c in checks:
            counts[c] = counts.get(c, 0) + 1
        row = raw.loc[i]
        records.append(
            {
                schema.DATE: None if pd.isna(row[schema.DATE]) else str(row[schema.DATE]),
                schema.LOCATION: None
                if pd.isna(row[schema.LOCATION])
                else str(row[schema.LOCATION]),
                "check": ",".join(checks),
                "reason": "; ".join(dict.fromkeys(r for _, r in reasons[i])),
                "payload": json.dumps(
                    {k: (None if pd.isna(v) else v) for k, v in row.items()}, default=str
                ),
            }
        )
    quarantined = pd.DataFrame(
        records, columns=[schema.DATE, schema.LOCATION, "check", "reason", "payload"]
    )
    accepted = conformed.drop(index=[i for i in bad if i in conformed.index]).reset_index(drop=True)
    result = ValidationResult(accepted, quarantined, rows_in=len(raw), check_counts=counts)
    if len(result.accepted) + len(result.quarantined) != result.rows_in:  # never lose a row
        raise AssertionError(
            f"row accounting broken: {result.rows_in} in != "
            f"{len(result.accepted)} accepted + {len(result.quarantined)} quarantined"
        )
    return result
