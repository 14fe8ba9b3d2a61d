"""What ``/predict`` and ``/predict_batch`` answer: pure functions from the request body
(bytes) and the served model to (status, JSON body).

Every body is refused as cheaply as its fault allows, and no answer grows with the input:

* a body that is not a JSON object is refused from its first byte, before any parsing;
* the structure (``{"rows": [objects]}``, ``{"columns": {name: list}}``) and the row count
  are checked on the parsed document before any per-row validation, so a wrong shape never
  builds one error per element;
* error bodies list at most `MAX_ERRORS` errors, never echo input values (pydantic's
  ``input``/``ctx`` are dropped) and cut long names and messages (`bounded_errors`).

Errors keep FastAPI's shape (``{"detail": [{"loc", "msg", "type"}]}`` with ``loc`` starting
at ``body`` for /predict), so clients see one format whichever path answered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pydantic import ValidationError

from raincast.features import build_matrix_columns
from raincast.serving import metrics
from raincast.serving.schemas import (
    MAX_BATCH_ROWS,
    MAX_ROWS,
    InputError,
    PredictRequest,
    predict_request_model,
    validate_columns,
)

if TYPE_CHECKING:
    from raincast.serving.model import LoadedModel

#: At most this many errors in a 422 body (then one line saying how many were left out).
MAX_ERRORS = 20
#: Longest string kept in an error's ``loc`` or ``msg``.
ERROR_TEXT_CHARS = 120

Answer = tuple[int, bytes]
#: An answer with extra response headers (already encoded).
StampedAnswer = Answer | tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]

NO_MODEL: Answer = (503, b'{"detail":"no champion model loaded yet"}')


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > ERROR_TEXT_CHARS:
        return value[:ERROR_TEXT_CHARS] + "..."
    return value if isinstance(value, str | int) else _cut(str(value))


def bounded_errors(
    errors: Iterable[Mapping[str, Any]], prefix: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """At most `MAX_ERRORS` errors as ``{"loc", "msg", "type"}`` (no input echoed, long
    strings cut), plus a last one counting the rest."""
    out: list[dict[str, Any]] = []
    more = 0
    for err in errors:
        if len(out) == MAX_ERRORS:
            more += 1
            continue
        out.append(
            {
                "loc": [*prefix, *(_cut(part) for part in err.get("loc", ()))],
                "msg": _cut(str(err.get("msg", ""))),
                "type": _cut(str(err.get("type", "value_error"))),
            }
        )
    if more:
        out.append({"loc": list(prefix), "msg": f"{more} more errors", "type": "too_many_errors"})
    return out


def error_answer(errors: Iterable[Mapping[str, Any]], prefix: tuple[str, ...] = ()) -> Answer:
    """A 422 with bounded errors."""
    return 422, orjson.dumps({"detail": bounded_errors(errors, prefix)})


def _refuse(loc: list[Any], msg: str, kind: str) -> Answer:
    return error_answer([{"loc": loc, "msg": msg, "type": kind}])


def _starts_object(body: bytes) -> bool:
    return body[:64].lstrip()[:1] == b"{"


def _parse_object(body: bytes, expected: str) -> dict[str, Any] | Answer:
    """The body as a JSON object, or the 422 saying it is not one."""
    if not _starts_object(body):
        return _refuse(["body"], f"expected a JSON object {expected}", "model_attributes_type")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _refuse(["body"], "invalid JSON", "json_invalid")
    if not isinstance(doc, dict):  # cannot happen after `{`, but never trust it
        return _refuse(["body"], f"expected a JSON object {expected}", "model_attributes_type")
    return doc


def parse_predict(body: bytes, max_rows: int = MAX_ROWS) -> PredictRequest | Answer:
    """A validated `/predict` request of at most ``max_rows`` rows, or the 422 (shape
    first, then the rows)."""
    doc = _parse_object(body, '{"rows": [...]}')
    if isinstance(doc, tuple):
        return doc
    rows = doc.get("rows")
    if not isinstance(rows, list):
        return _refuse(["body", "rows"], "Input should be a valid list", "list_type")
    if not 1 <= len(rows) <= max_rows:
        return _refuse(["body", "rows"], f"between 1 and {max_rows} rows required", "too_long")
    try:
        return predict_request_model(max_rows).model_validate(doc)
    except ValidationError as err:
        return error_answer(err.errors(include_url=False, include_input=False), ("body",))


def predictions(model: LoadedModel, request: PredictRequest) -> dict[str, Any]:
    """The `/predict` response for a validated request."""
    proba = model.predict_records([row.model_dump() for row in request.rows])
    labels = np.where(proba >= model.threshold, "Yes", "No")
    metrics.observe(labels, proba)
    return {
        "predictions": [
            {
                "probability": float(p),
                "label": str(lab),
                "threshold": model.threshold,
                "model_version": model.version,
            }
            for p, lab in zip(proba, labels, strict=True)
        ]
    }


def with_model_headers(model: LoadedModel | None, answer: Answer) -> StampedAnswer:
    """A 200 answer with the headers naming the model that made it (``X-Model-Name``,
    ``X-Model-Version``, encoded once per loaded version); any other answer as it is."""
    status, body = answer
    if status != 200 or model is None:
        return answer
    return status, body, model.response_headers


def answer_predict(model: LoadedModel | None, body: bytes, max_rows: int = MAX_ROWS) -> Answer:
    """`/predict`: 200 with one prediction per row, 422 or 503."""
    request = parse_predict(body, max_rows)
    if isinstance(request, tuple):
        return request
    if model is None:
        return NO_MODEL
    return 200, orjson.dumps(predictions(model, request))


def batch_answer(
    model: LoadedModel, columns: dict[str, list[Any]], max_rows: int = MAX_BATCH_ROWS
) -> Answer:
    """(status, JSON body) of a columnar batch of at most ``max_rows`` rows: 422 naming
    column and row, or the scores."""
    try:
        matrix = build_matrix_columns(validate_columns(columns, max_rows))
    except InputError as err:
        return error_answer(err.errors)
    proba = model.predict_matrix(matrix)
    labels = np.where(proba >= model.threshold, "Yes", "No")
    metrics.observe(labels, proba)
    # orjson straight to bytes: re-validating 10k floats through the response model
    # would cost more than the prediction.
    return 200, orjson.dumps(
        {
            "probability": proba,
            "label": labels.tolist(),
            "threshold": model.threshold,
            "model_version": model.version,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def answer_batch(model: LoadedModel | None, body: bytes, max_rows: int = MAX_BATCH_ROWS) -> Answer:
    """`/predict_batch`: 200 with the columnar scores, 422 or 503."""
    doc = _parse_object(body, '{"columns": {...}}')
    if isinstance(doc, tuple):
        return doc
    extra = [k for k in doc if k != "columns"]
    if extra:
        return error_answer(
            ({"loc": [k], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
             for k in extra),
            ("body",),
        )  # fmt: skip
    columns = doc.get("columns")
    if not isinstance(columns, dict):
        return _refuse(["body", "columns"], "Input should be a valid dictionary", "dict_type")
    not_lists = (
        {"loc": [name], "msg": "Input should be a valid list", "type": "list_type"}
        for name, values in columns.items()
        if not isinstance(values, list)
    )
    first = next(not_lists, None)
    if first is not None:
        return error_answer([first, *not_lists], ("body", "columns"))
    if model is None:
        return NO_MODEL
    return batch_answer(model, columns, max_rows)
