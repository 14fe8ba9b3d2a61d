"""The csv/replay source reads what the file says and hands it to validation unchanged:
real weatherAUS rows with one fault each, and every broken file gives a one-line error."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from testbed.params_file import LIBRARY_DEFAULTS, write_params
from typer.testing import CliRunner

from raincast import schema
from raincast.cli import app
from raincast.data.validation import validate_batch
from raincast.sources import SourceFileError
from raincast.sources.csvfile import CsvSource

N_REAL = 200  # the first rows of the Kaggle file: Albury, 2008-12-01 onwards


@pytest.fixture
def real_lines(shared_data: Path) -> list[str]:
    """The header and the first N_REAL data lines of the real weatherAUS file."""
    with gzip.open(shared_data / "weatherAUS.csv.gz", "rt") as fh:
        return [next(fh).rstrip("\n") for _ in range(N_REAL + 1)]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _field(line: str, column: str) -> str:
    return line.split(",")[schema.COLUMNS.index(column)]


def _replace(line: str, column: str, value: str) -> str:
    fields = line.split(",")
    fields[schema.COLUMNS.index(column)] = value
    return ",".join(fields)


def _validate(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    src = CsvSource(path)
    rows = src.fetch(src.first_date(), src.last_date())
    res = validate_batch(rows, src.first_date(), src.last_date())
    assert res.rows_in == len(rows) == len(res.accepted) + len(res.quarantined)
    return res.accepted, res.quarantined


def test_real_rows_pass_through_unchanged(real_lines: list[str], tmp_path: Path) -> None:
    accepted, quarantined = _validate(_write(tmp_path / "w.csv", real_lines))
    assert quarantined.empty and len(accepted) == N_REAL
    first = real_lines[1].split(",")
    assert accepted.loc[0, schema.DATE] == first[0]
    assert accepted.loc[0, "MinTemp"] == float(first[2])


def test_text_in_a_numeric_column_is_quarantined_with_its_raw_value(
    real_lines: list[str], tmp_path: Path
) -> None:
    lines = list(real_lines)
    lines[5] = _replace(lines[5], "MinTemp", "12,5")  # a decimal comma, quoted below
    lines[5] = lines[5].replace(",12,5,", ',"12,5",')
    lines[9] = _replace(lines[9], "Pressure9am", "n/a")
    accepted, quarantined = _validate(_write(tmp_path / "w.csv", lines))
    assert len(accepted) == N_REAL - 2
    assert quarantined["check"].tolist() == ["type:MinTemp", "type:Pressure9am"]
    assert "MinTemp='12,5' is not a number" in quarantined["reason"].iloc[0]
    assert json.loads(quarantined["payload"].iloc[0])["MinTemp"] == "12,5"
    assert json.loads(quarantined["payload"].iloc[1])["Pressure9am"] == "n/a"


def test_short_and_long_lines_are_quarantined_not_padded(
    real_lines: list[str], tmp_path: Path
) -> None:
    lines = list(real_lines)
    short = ",".join(lines[3].split(",")[:20])  # the last three fields are gone
    lines[3] = short
    lines[7] = lines[7] + ",42"  # one field too many
    accepted, quarantined = _validate(_write(tmp_path / "w.csv", lines))
    assert len(accepted) == N_REAL - 2
    assert quarantined["check"].tolist() == ["arity:row", "arity:row"]
    assert quarantined["reason"].tolist() == [
        "line 4 has 20 fields, the header has 23",
        "line 8 has 24 fields, the header has 23",
    ]
    payload = json.loads(quarantined["payload"].iloc[0])
    assert payload[schema.RAW_RECORD] == short  # the line as the file had it
    assert quarantined[schema.DATE].iloc[0] == _field(short, schema.DATE)
    assert quarantined[schema.LOCATION].iloc[0] == "Albury"


def test_an_impossible_date_keeps_its_raw_value(real_lines: list[str], tmp_path: Path) -> None:
    lines = list(real_lines)
    lines[4] = _replace(lines[4], schema.DATE, "2008-11-31")
    lines[6] = _replace(lines[6], schema.DATE, "01/12/2008")  # day/month order: never guessed
    accepted, quarantined = _validate(_write(tmp_path / "w.csv", lines))
    assert len(accepted) == N_REAL - 2
    assert quarantined["check"].tolist() == ["type:Date", "type:Date"]
    assert quarantined[schema.DATE].tolist() == ["2008-11-31", "01/12/2008"]
    assert "Date='2008-11-31' is not a valid ISO date" in quarantined["reason"].iloc[0]


def test_rows_without_a_valid_date_travel_with_the_newest_batch_only(
    real_lines: list[str], tmp_path: Path
) -> None:
    lines = list(real_lines)
    lines[4] = _replace(lines[4], schema.DATE, "2008-02-30")
    src = CsvSource(_write(tmp_path / "w.csv", lines))
    last = src.last_date()
    earlier = src.fetch(src.first_date(), date.fromordinal(last.toordinal() - 1))
    newest = src.fetch(last, last)
    assert "2008-02-30" not in set(earlier[schema.DATE])
    assert "2008-02-30" in set(newest[schema.DATE])


def test_a_row_with_no_observation_is_quarantined(real_lines: list[str], tmp_path: Path) -> None:
    lines = list(real_lines)
    head = lines[10].split(",")[:2]
    lines[10] = ",".join([*head, *["NA"] * (len(schema.COLUMNS) - 2)])
    accepted, quarantined = _validate(_write(tmp_path / "w.csv", lines))
    assert quarantined["check"].tolist() == ["empty:row"]
    assert "no observations" in quarantined["reason"].iloc[0]
    assert len(accepted) == N_REAL - 1


# --- files that are not what they claim: one clear line each -------------------------------


def _gz(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()))
    return path


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    write_params(tmp_path, LIBRARY_DEFAULTS)
    return {
        "RAINCAST_PROJECT_DIR": str(tmp_path),
        "RAINCAST_HOME": str(tmp_path / "var"),
        "RAINCAST_DATE": "",
        "RAINCAST_STORE_URL": "",
    }


def _fetch_fails(path: Path, env: dict[str, str], *expected: str) -> str:
    res = CliRunner().invoke(app, ["fetch", "--source", f"csv:{path}"], env=env)
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit)  # no traceback, no bare "Aborted."
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert str(path) in lines[0]
    for part in expected:
        assert part in lines[0], lines[0]
    return lines[0]


def test_a_truncated_gzip_is_one_clear_line(
    real_lines: list[str], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    whole = gzip.compress(("\n".join(real_lines) + "\n").encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])
    _fetch_fails(path, cli_env, "truncated", "download it again")


def test_a_header_only_file_is_one_clear_line(
    real_lines: list[str], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    _fetch_fails(_gz(tmp_path / "h.csv.gz", real_lines[0] + "\n"), cli_env, "no data rows")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (b"\x00\xff\xfe garbage \x81\n\x02,\x03\n", "not a text CSV"),
        (b"a,b\n1,2\n", "lacks 23 of the 23 weatherAUS columns"),
    ],
    ids=["empty", "binary", "other-csv"],
)
def test_other_broken_files_are_one_clear_line(
    tmp_path: Path, cli_env: dict[str, str], content: bytes, expected: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    _fetch_fails(path, cli_env, expected)


def test_a_missing_file_is_one_clear_line(tmp_path: Path, cli_env: dict[str, str]) -> None:
    _fetch_fails(tmp_path / "nowhere.csv", cli_env, "not found")


def test_unknown_columns_are_reported_and_kept_out_of_the_store(
    real_lines: list[str], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    lines = [real_lines[0] + ",RISK_MM,Station"] + [ln + ",0.6,x" for ln in real_lines[1:]]
    path = _write(tmp_path / "extra.csv", lines)
    src = CsvSource(path)
    src.fetch(src.first_date(), src.last_date())
    assert src.unknown_columns == ["RISK_MM", "Station"]
    res = CliRunner().invoke(app, ["fetch", "--source", f"csv:{path}"], env=cli_env)
    assert res.exit_code == 0, res.output
    assert "2 column(s) outside the weatherAUS schema were ignored: RISK_MM, Station" in res.output
    meta = json.loads(next((tmp_path / "var" / "landing").glob("*.json")).read_text())
    assert meta["unknown_columns"] == ["RISK_MM", "Station"]


def test_csv_source_refuses_a_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceFileError, match="is not a file"):
        CsvSource(tmp_path)
