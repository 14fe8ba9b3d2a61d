"""What /predict and /predict_batch answer (`raincast.serving.answers`), without a server:
wrong shapes refused whole (one error, not one per element), error bodies bounded and never
echoing input, per-endpoint body limits sized from the row limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from raincast.serving import answers, schemas

ROW = {"Date": "2021-03-03", "Location": "Sydney", "Rainfall": 6.2, "WindGustDir": "SSE"}
SENTINEL = "ECHO-ME-" * 40


@dataclass
class StubModel:
    """What the answers need of a LoadedModel: P(rain) per row, threshold, version."""

    threshold: float = 0.5
    version: str = "7"

    def predict_records(self, records: list[dict[str, Any]]) -> np.ndarray:
        return np.full(len(records), 0.75)

    def predict_matrix(self, matrix: np.ndarray) -> np.ndarray:
        return np.full(len(matrix), 0.25)


def _body(doc: Any) -> bytes:
    return orjson.dumps(doc)


def _detail(answer: answers.Answer) -> list[dict[str, Any]]:
    status, body = answer
    assert status == 422, body[:200]
    return orjson.loads(body)["detail"]  # type: ignore[no-any-return]


def test_valid_rows_are_scored() -> None:
    status, body = answers.answer_predict(StubModel(), _body({"rows": [ROW, ROW]}))  # type: ignore[arg-type]
    assert status == 200
    preds = orjson.loads(body)["predictions"]
    assert [p["label"] for p in preds] == ["Yes", "Yes"] and preds[0]["model_version"] == "7"


def test_valid_rows_without_a_model_are_503_but_bad_rows_still_422() -> None:
    assert answers.answer_predict(None, _body({"rows": [ROW]}))[0] == 503
    assert answers.answer_predict(None, _body({"rows": [{**ROW, "Foo": 1}]}))[0] == 422


@pytest.mark.parametrize(
    "body",
    [
        b"[" + b",".join([b'{"Date": "2021-01-01"}'] * 50_000) + b"]",  # array, not object
        b"   \n[1, 2, 3]",
        b'"rows"',
        b"null",
        b"",
    ],
)
def test_a_body_that_is_not_an_object_is_refused_from_its_first_byte(body: bytes) -> None:
    detail = _detail(answers.answer_predict(StubModel(), body))  # type: ignore[arg-type]
    msg = 'expected a JSON object {"rows": [...]}'
    assert detail == [{"loc": ["body"], "msg": msg, "type": "model_attributes_type"}]
    assert answers.answer_batch(StubModel(), body)[0] == 422  # type: ignore[arg-type]


def test_too_many_rows_is_one_error_not_one_per_row() -> None:
    rows = [{"Date": 1}] * (schemas.MAX_ROWS + 1)  # every row would also be invalid
    detail = _detail(answers.answer_predict(StubModel(), _body({"rows": rows})))  # type: ignore[arg-type]
    assert len(detail) == 1 and detail[0]["loc"] == ["body", "rows"]
    assert (
        _detail(answers.answer_predict(StubModel(), _body({"rows": {"a": 1}})))[0][  # type: ignore[arg-type]
            "type"
        ]
        == "list_type"
    )


def test_many_bad_rows_give_a_bounded_error_list() -> None:
    rows = [{**ROW, "Humidity3pm": 500}] * schemas.MAX_ROWS
    status, body = answers.answer_predict(StubModel(), _body({"rows": rows}))  # type: ignore[arg-type]
    detail = orjson.loads(body)["detail"]
    assert status == 422 and len(detail) == answers.MAX_ERRORS + 1
    assert detail[0]["loc"] == ["body", "rows", 0, "Humidity3pm"]
    assert detail[-1]["type"] == "too_many_errors"
    assert f"{schemas.MAX_ROWS - answers.MAX_ERRORS} more" in detail[-1]["msg"]
    assert len(body) < 8 * 1024


def test_error_bodies_never_echo_the_input() -> None:
    for doc in (
        {"rows": [{**ROW, "Location": SENTINEL}]},
        {"rows": [{**ROW, "Rainfall": SENTINEL}]},
        {"rows": [{**ROW, SENTINEL: 1}]},
        {"rows": [ROW], SENTINEL: 1},
    ):
        status, body = answers.answer_predict(StubModel(), _body(doc))  # type: ignore[arg-type]
        assert status == 422
        assert SENTINEL.encode() not in body, body[:300]
        assert b'"input"' not in body
    cols = {"Date": [SENTINEL], "Location": [SENTINEL], SENTINEL: [1]}
    status, body = answers.answer_batch(StubModel(), _body({"columns": cols}))  # type: ignore[arg-type]
    assert status == 422 and SENTINEL.encode() not in body


def test_batch_shapes_are_refused_whole() -> None:
    model: Any = StubModel()
    assert (
        _detail(answers.answer_batch(model, _body({"columns": [1, 2]})))[0]["type"] == "dict_type"
    )
    assert _detail(answers.answer_batch(model, _body({"columns": {}, "x": 1})))[0]["loc"] == [
        "body",
        "x",
    ]
    many = {f"c{i}": 1 for i in range(5000)}  # 5000 columns that are not lists
    status, body = answers.answer_batch(model, _body({"columns": many}))
    assert status == 422 and len(orjson.loads(body)["detail"]) == answers.MAX_ERRORS + 1
    assert answers.answer_batch(model, b"{not json")[0] == 422


def test_a_valid_batch_is_scored_and_a_bad_value_names_column_and_row() -> None:
    model: Any = StubModel()
    cols = {"Date": ["2021-01-01", "2021-01-02"], "Location": ["Sydney", "Perth"]}
    status, body = answers.answer_batch(model, _body({"columns": cols}))
    assert status == 200 and orjson.loads(body)["label"] == ["No", "No"]
    cols["Location"][1] = "Atlantis"
    assert _detail(answers.answer_batch(model, _body({"columns": cols})))[0]["loc"] == [
        "columns",
        "Location",
        1,
    ]


def test_bounded_errors_cut_long_names_and_messages() -> None:
    out = answers.bounded_errors([{"loc": ["x" * 1000, 3], "msg": "m" * 1000, "input": "secret"}])
    assert len(out[0]["loc"][0]) <= answers.ERROR_TEXT_CHARS + 3 and out[0]["loc"][1] == 3
    assert len(out[0]["msg"]) <= answers.ERROR_TEXT_CHARS + 3 and "input" not in out[0]


def test_body_limits_follow_the_row_limits_and_an_optional_cap() -> None:
    limits = schemas.body_limits(schemas.MAX_ROWS, schemas.MAX_BATCH_ROWS)
    assert limits["/predict"] == schemas.BASE_BODY_BYTES + schemas.MAX_ROWS * schemas.ROW_BODY_BYTES
    assert limits["/predict"] < 4 * 1024 * 1024  # 1,000 rows: far below the old 32 MB
    assert limits["/predict_batch"] > limits["/predict"]
    # A full /predict body of the largest rows fits its limit.
    full = {c: 1013.2999999999999 for c in schemas.schema.NUMERIC_COLUMNS}
    row = {**full, "Date": "2017-06-24", "Location": "MelbourneAirport", "RainToday": "Yes",
           **{d: "WSW" for d in schemas.schema.DIRECTION_COLUMNS}}  # fmt: skip
    assert (
        len(orjson.dumps({"rows": [row] * schemas.MAX_ROWS}, option=orjson.OPT_INDENT_2))
        < (limits["/predict"])
    )
    assert schemas.body_limits(50, 100)["/predict"] < limits["/predict"]
    capped = schemas.body_limits(schemas.MAX_ROWS, schemas.MAX_BATCH_ROWS, cap=1000)
    assert set(capped.values()) == {1000}


def test_a_configured_row_limit_is_enforced_on_both_paths() -> None:
    model: Any = StubModel()
    rows = [ROW] * 3
    assert answers.answer_predict(model, _body({"rows": rows}), max_rows=3)[0] == 200
    detail = _detail(answers.answer_predict(model, _body({"rows": rows}), max_rows=2))
    assert detail == [
        {"loc": ["body", "rows"], "msg": "between 1 and 2 rows required", "type": "too_long"}
    ]
    # The request model FastAPI's route uses has the same limit (and the same name).
    request_model = schemas.predict_request_model(2)
    assert request_model.__name__ == "PredictRequest"
    with pytest.raises(ValidationError):
        request_model.model_validate({"rows": rows})
    assert schemas.predict_request_model(schemas.MAX_ROWS) is schemas.PredictRequest
    cols = {"Date": ["2021-01-01"] * 3, "Location": ["Sydney"] * 3}
    assert answers.answer_batch(model, _body({"columns": cols}), max_rows=3)[0] == 200
    detail = _detail(answers.answer_batch(model, _body({"columns": cols}), max_rows=2))
    assert detail[0]["msg"] == "between 1 and 2 rows required"
