"""The predict form's typical values and the batch upload's CSV handling, checked against
the API's own input rules (`raincast.serving.schemas`)."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import pytest

from raincast import schema
from raincast.serving.schemas import Observation, validate_columns
from raincast.ui.batch import UploadError, read_upload, to_columns, with_predictions
from raincast.ui.client import BatchResult
from raincast.ui.defaults import mean_temperature, typical_inputs


@pytest.mark.parametrize("month", range(1, 13))
def test_typical_inputs_are_valid_api_rows_for_every_station(month: int) -> None:
    for station in schema.stations():
        row = typical_inputs(station, date(2021, month, 15))
        assert set(row) == set(schema.INPUT_COLUMNS)
        Observation(**row)  # raises on any out-of-range value


def test_typical_temperatures_follow_latitude_and_season() -> None:
    darwin, hobart = schema.stations()["Darwin"], schema.stations()["Hobart"]
    assert mean_temperature(darwin.latitude, 7) > mean_temperature(hobart.latitude, 7) + 10
    assert mean_temperature(hobart.latitude, 1) > mean_temperature(hobart.latitude, 7) + 10
    dry, wet = (
        typical_inputs("Darwin", date(2021, 7, 1)),
        typical_inputs("Darwin", date(2021, 1, 1)),
    )
    assert dry["Humidity3pm"] < wet["Humidity3pm"]


def test_typical_inputs_reject_an_unknown_station() -> None:
    with pytest.raises(KeyError):
        typical_inputs("Atlantis", date(2021, 1, 1))


HEADER = ",".join(schema.COLUMNS)


def test_read_upload_drops_the_label_and_unknown_columns_and_keeps_na_missing() -> None:
    data = (
        b"Date,Location,Rainfall,WindGustDir,RainToday,RainTomorrow,Extra\n"
        b"2021-01-01,Sydney,NA,NA,No,Yes,1\n"
        b"2021-01-02,Perth,3.2,SSE,Yes,No,2\n"
    )
    frame, ignored = read_upload(data)
    assert ignored == ["RainTomorrow", "Extra"]
    columns = to_columns(frame)
    assert columns == {
        "Date": ["2021-01-01", "2021-01-02"],
        "Location": ["Sydney", "Perth"],
        "Rainfall": [None, 3.2],
        "WindGustDir": [None, "SSE"],
        "RainToday": ["No", "Yes"],
    }
    assert len(validate_columns(columns)["Date"]) == 2  # the API accepts the payload


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a readable CSV"),
        (b"Date,Rainfall\n2021-01-01,3\n", "lacks the column(s) Location"),
        (HEADER.encode() + b"\n", "no rows"),
        (b"\xff\xfe\x00garbage", "not a readable CSV"),
    ],
    ids=["empty", "no-location", "header-only", "binary"],
)
def test_read_upload_failures_are_user_messages(data: bytes, message: str) -> None:
    with pytest.raises(UploadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_upload(data)


def test_with_predictions_appends_the_results() -> None:
    frame, _ = read_upload(b"Date,Location\n2021-01-01,Sydney\n2021-01-02,Perth\n")
    table = with_predictions(frame, BatchResult([0.1, 0.9], ["No", "Yes"], ["3", "3"], 0.5))
    assert table.to_dict("list") == {
        "Date": ["2021-01-01", "2021-01-02"],
        "Location": ["Sydney", "Perth"],
        "probability": [0.1, 0.9],
        "label": ["No", "Yes"],
        "model_version": ["3", "3"],
    }


@pytest.mark.needs_data
def test_the_real_weatheraus_file_uploads_as_is(shared_data: Path) -> None:
    with gzip.open(shared_data / "weatherAUS.csv.gz", "rb") as f:
        head = b"".join(f.readline() for _ in range(501))
    frame, ignored = read_upload(head)
    assert ignored == ["RainTomorrow"] and len(frame) == 500
    assert len(validate_columns(to_columns(frame))["Date"]) == 500
