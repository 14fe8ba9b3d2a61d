"""Request and response models of the prediction API, built from the ingestion schema
(`raincast.schema`): same columns, same physical ranges, same categories.

Unknown fields are rejected (``extra="forbid"``), missing measurements are ``null`` (or
absent), and every violation becomes a 422 naming the field path.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from raincast import schema
from raincast.settings import Settings

#: Rows per `/predict` request and per `/predict_batch` request unless the settings say
#: otherwise (`Settings.api_max_rows`, `Settings.api_max_batch_rows`: their defaults).
MAX_ROWS: Final[int] = Settings.model_fields["api_max_rows"].default
MAX_BATCH_ROWS: Final[int] = Settings.model_fields["api_max_batch_rows"].default

#: Body bytes allowed per row: a `/predict` row with all 22 fields is ~600 bytes of JSON
#: (~900 pretty-printed); a columnar `/predict_batch` row is 22 values, ~150-250 bytes.
ROW_BODY_BYTES = 2048
BATCH_ROW_BODY_BYTES = 320
#: Body bytes allowed on top of the rows, and for every endpoint without rows.
BASE_BODY_BYTES = 64 * 1024


def body_limits(max_rows: int, max_batch_rows: int, cap: int | None = None) -> dict[str, int]:
    """Largest request body per path, sized from its row limit (OWASP API4: a body can
    cost no more than the rows it may carry). ``cap`` (``RAINCAST_API_MAX_BODY_BYTES``),
    when set, caps every path further; paths not listed get `BASE_BODY_BYTES`."""
    limits = {
        "/predict": BASE_BODY_BYTES + max_rows * ROW_BODY_BYTES,
        "/predict_batch": BASE_BODY_BYTES + max_batch_rows * BATCH_ROW_BODY_BYTES,
    }
    if cap:
        limits = {path: min(limit, cap) for path, limit in limits.items()}
    return limits


Compass = Literal[schema.COMPASS_POINTS]  # type: ignore[valid-type]
YesNo = Literal["Yes", "No"]


def _numeric_fields() -> dict[str, Any]:
    return {
        col: (float | None, Field(default=None, ge=lo, le=hi, allow_inf_nan=False))
        for col, (lo, hi) in schema.NUMERIC_RANGES.items()
    }


class _ObservationBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    Date: date
    Location: str

    @field_validator("Location")
    @classmethod
    def _known_station(cls, v: str) -> str:
        if v not in schema.stations():
            raise ValueError("unknown station (see GET /model for the list)")
        return v


#: One raw weatherAUS observation (day D) to predict RainTomorrow (D+1) from.
Observation = create_model(  # type: ignore[call-overload]
    "Observation",
    __base__=_ObservationBase,
    **_numeric_fields(),
    **{c: (Compass | None, None) for c in schema.DIRECTION_COLUMNS},
    RainToday=(YesNo | None, None),
)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[Observation] = Field(min_length=1, max_length=MAX_ROWS)


@cache
def predict_request_model(max_rows: int) -> type[PredictRequest]:
    """`PredictRequest` taking at most ``max_rows`` rows (same name in the OpenAPI docs)."""
    if max_rows == MAX_ROWS:
        return PredictRequest
    return create_model(
        "PredictRequest",
        __base__=PredictRequest,
        rows=(list[Observation], Field(min_length=1, max_length=max_rows)),
    )


class Prediction(BaseModel):
    probability: float
    label: YesNo
    threshold: float
    model_version: str


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class BatchRequest(BaseModel):
    """Columnar rows: ``{"columns": {"Date": [...], "Location": [...], "Rainfall": [...]}}``.

    Every list has the same length; absent measurement columns are all-missing."""

    model_config = ConfigDict(extra="forbid")

    columns: dict[str, list[Any]]


class BatchResponse(BaseModel):
    probability: list[float]
    label: list[YesNo]
    threshold: float
    model_version: str


class InputError(ValueError):
    """Bad request content; ``errors`` are pydantic-style dicts (loc, msg, type)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["msg"] if errors else "invalid input")
        self.errors = errors


def _error(loc: list[Any], msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


_NUMBER_TYPES = frozenset({float, int, type(None)})
_STATIONS = frozenset(schema.stations())
_CATEGORIES: dict[str, tuple[str, ...]] = {
    **{c: schema.COMPASS_POINTS for c in schema.DIRECTION_COLUMNS},
    schema.RAIN_TODAY: ("Yes", "No"),
}


def validate_columns(
    columns: dict[str, list[Any]], max_rows: int = MAX_BATCH_ROWS
) -> dict[str, Any]:
    """Validate a columnar batch of 1 to ``max_rows`` rows vectorised (same rules as
    ``Observation``).

    Returns the batch as arrays: ``Date`` a datetime Series, ``Location`` and the
    categorical columns object arrays (None for missing), measurements float64 (NaN for
    missing); absent optional columns are left out. Raises ``InputError`` with the first
    bad row of every failing column."""
    errors: list[dict[str, Any]] = []
    allowed = set(schema.INPUT_COLUMNS)
    for name in columns:
        if name not in allowed:
            errors.append(_error(["columns", name], "unknown column", "extra_forbidden"))
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        errors.append(_error(["columns"], f"columns differ in length: {sorted(lengths)}"))
    for req in (schema.DATE, schema.LOCATION):
        if req not in columns:
            errors.append(_error(["columns", req], "field required", "missing"))
    if errors:
        raise InputError(errors)
    n = lengths.pop() if lengths else 0
    if n == 0 or n > max_rows:
        raise InputError([_error(["columns"], f"between 1 and {max_rows} rows required")])

    out: dict[str, Any] = {}
    dates = pd.to_datetime(
        pd.Series(columns[schema.DATE], dtype=object), format="%Y-%m-%d", errors="coerce"
    )
    bad = np.flatnonzero(dates.isna().to_numpy())
    if bad.size:
        errors.append(_error(["columns", schema.DATE, int(bad[0])], "invalid date (YYYY-MM-DD)"))
    out[schema.DATE] = dates
    loc = np.array(columns[schema.LOCATION], dtype=object)
    bad = np.flatnonzero(~_known(loc, _STATIONS))
    if bad.size:
        errors.append(_error(["columns", schema.LOCATION, int(bad[0])], "unknown station"))
    out[schema.LOCATION] = loc
    for col, (lo, hi) in schema.NUMERIC_RANGES.items():
        if col not in columns:
            continue
        values, not_number = _numbers(columns[col])
        with np.errstate(invalid="ignore"):
            out_of_range = ~np.isnan(values) & ~((values >= lo) & (values <= hi))
        bad = np.flatnonzero(not_number | out_of_range)
        if bad.size:
            errors.append(
                _error(["columns", col, int(bad[0])], f"must be a number in [{lo}, {hi}] or null")
            )
        out[col] = values
    for col, allowed_values in _CATEGORIES.items():
        if col not in columns:
            continue
        raw = np.array(columns[col], dtype=object)
        known = _known(raw, frozenset(allowed_values), missing_ok=True)
        bad = np.flatnonzero(~known & pd.notna(raw))
        if bad.size:
            errors.append(
                _error(
                    ["columns", col, int(bad[0])], f"must be one of {list(allowed_values)} or null"
                )
            )
        out[col] = raw
    if errors:
        raise InputError(errors)
    return out


def _known(raw: np.ndarray, allowed: frozenset[str], missing_ok: bool = False) -> np.ndarray:
    """Mask of the entries that are one of ``allowed`` (unhashable JSON values are not);
    with ``missing_ok`` a batch of known values and nulls is all True at C speed."""
    try:
        if set(raw) - ({None} if missing_ok else set()) <= allowed:  # the usual case
            return np.ones(len(raw), dtype=bool)
    except TypeError:  # a list or an object among the values
        pass
    return np.fromiter(
        (v.__hash__ is not None and v in allowed for v in raw), dtype=bool, count=len(raw)
    )


def _numbers(raw: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN for missing) and a mask of entries that are not numbers."""
    if set(map(type, raw)) <= _NUMBER_TYPES:  # plain JSON numbers and nulls: no parsing
        try:
            return np.array(raw, dtype=np.float64), np.zeros(len(raw), dtype=bool)
        except OverflowError:
            pass
    series = pd.Series(raw, dtype=object)  # strings, booleans, ...: pandas' coercion rules
    values = pd.to_numeric(series, errors="coerce").astype("float64")
    return values.to_numpy(), (values.isna() & series.notna()).to_numpy()
