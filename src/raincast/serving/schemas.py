"""Request and response models of the prediction API, built from the ingestion schema
(`raincast.schema`): same columns, same physical ranges, same categories.

Unknown fields are rejected (``extra="forbid"``), missing measurements are ``null`` (or
absent), and every violation becomes a 422 naming the field path.
"""

from __future__ import annotations

import os
from datetime import date
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from raincast import schema

#: Rows per `/predict` request and per `/predict_batch` request.
MAX_ROWS = int(os.environ.get("RAINCAST_API_MAX_ROWS", "1000"))
MAX_BATCH_ROWS = int(os.environ.get("RAINCAST_API_MAX_BATCH_ROWS", "100000"))

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

    rows: list[Observation] = Field(min_length=1, max_length=MAX_ROWS)  # type: ignore[valid-type]


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


def columnar_frame(columns: dict[str, list[Any]]) -> pd.DataFrame:
    """Validate a columnar batch vectorised (same rules as ``Observation``) into a frame.

    Raises ``InputError`` with the first bad row of every failing column."""
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
    if n == 0 or n > MAX_BATCH_ROWS:
        raise InputError([_error(["columns"], f"between 1 and {MAX_BATCH_ROWS} rows required")])

    frame: dict[str, Any] = {}
    dates = pd.to_datetime(
        pd.Series(columns[schema.DATE], dtype=object), format="%Y-%m-%d", errors="coerce"
    )
    bad = np.flatnonzero(dates.isna().to_numpy())
    if bad.size:
        errors.append(_error(["columns", schema.DATE, int(bad[0])], "invalid date (YYYY-MM-DD)"))
    frame[schema.DATE] = dates.dt.strftime("%Y-%m-%d")
    loc = pd.Series(columns[schema.LOCATION], dtype=object)
    bad = np.flatnonzero(~loc.isin(list(schema.stations())).to_numpy())
    if bad.size:
        errors.append(_error(["columns", schema.LOCATION, int(bad[0])], "unknown station"))
    frame[schema.LOCATION] = loc
    for col, (lo, hi) in schema.NUMERIC_RANGES.items():
        if col not in columns:
            continue
        raw = pd.Series(columns[col], dtype=object)
        values = pd.to_numeric(raw, errors="coerce").astype("float64")
        not_number = values.isna() & raw.notna()
        out_of_range = ~values.isna() & ~values.between(lo, hi)
        bad = np.flatnonzero((not_number | out_of_range).to_numpy())
        if bad.size:
            errors.append(
                _error(["columns", col, int(bad[0])], f"must be a number in [{lo}, {hi}] or null")
            )
        frame[col] = values
    categories = {c: schema.COMPASS_POINTS for c in schema.DIRECTION_COLUMNS}
    categories[schema.RAIN_TODAY] = ("Yes", "No")
    for col, allowed_values in categories.items():
        if col not in columns:
            continue
        raw = pd.Series(columns[col], dtype=object)
        bad = np.flatnonzero((raw.notna() & ~raw.isin(allowed_values)).to_numpy())
        if bad.size:
            errors.append(
                _error(
                    ["columns", col, int(bad[0])], f"must be one of {list(allowed_values)} or null"
                )
            )
        frame[col] = raw
    if errors:
        raise InputError(errors)
    return pd.DataFrame(frame)
