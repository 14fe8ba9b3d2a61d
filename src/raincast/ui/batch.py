"""Uploaded weatherAUS CSVs to the API's columnar payload, and the results back to a table."""

from __future__ import annotations

import io
import math
from typing import Any

import pandas as pd

from raincast import schema
from raincast.ui.client import BatchResult

_TEXT_COLUMNS = {c: "object" for c in (schema.DATE, schema.LOCATION, *schema.DIRECTION_COLUMNS)}


class UploadError(ValueError):
    """The upload is not a weatherAUS-format CSV; the message is meant for the user."""


def read_upload(data: bytes) -> tuple[pd.DataFrame, list[str]]:
    """The input columns of a weatherAUS CSV (``NA`` = missing) and the ignored columns.

    RainTomorrow and any column the API does not take are dropped (and listed); values
    are not range-checked here, the API does that and names the bad cells."""
    try:
        frame = pd.read_csv(
            io.BytesIO(data), na_values=["NA"], keep_default_na=True, dtype=_TEXT_COLUMNS
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UploadError(f"This file is not a readable CSV ({err}).") from None
    missing = [c for c in (schema.DATE, schema.LOCATION) if c not in frame.columns]
    if missing:
        raise UploadError(
            f"The CSV lacks the column(s) {', '.join(missing)}; "
            "the header must be weatherAUS's (Date,Location,MinTemp,...)."
        )
    if frame.empty:
        raise UploadError("The CSV has a header but no rows.")
    ignored = [c for c in frame.columns if c not in schema.INPUT_COLUMNS]
    kept = [c for c in schema.INPUT_COLUMNS if c in frame.columns]
    return frame.loc[:, kept].reset_index(drop=True), ignored


def to_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """The columnar `/predict_batch` payload: plain Python values, ``None`` for missing."""
    return {
        col: [None if _is_missing(v) else v for v in frame[col].tolist()] for col in frame.columns
    }


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def with_predictions(frame: pd.DataFrame, result: BatchResult) -> pd.DataFrame:
    """``frame`` with the probability, label and model version of each row appended."""
    return frame.assign(
        probability=result.probability,
        label=result.label,
        model_version=result.model_version,
    )
