"""Validation: every rule quarantines exactly its row with a named check and a readable reason;
and the validate task end to end through the landing area."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from raincast import catalog, schema
from raincast.data import store
from raincast.data.validation import ValidationResult, validate_batch
from raincast.params import ValidateParams
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource
from raincast.steps import fetch as fetch_step
from raincast.steps import validate as validate_step
from tests.conftest import RawRows

START = date(2020, 1, 1)
END = date(2020, 1, 3)
TEN = (
    "Adelaide", "AliceSprings", "Brisbane", "Cairns", "Canberra",
    "Darwin", "Hobart", "Melbourne", "Perth", "Sydney",
)  # fmt: skip


@pytest.fixture
def clean(raw_rows: RawRows) -> pd.DataFrame:
    """3 days x 3 stations, as object columns so any cell can be corrupted."""
    return raw_rows(n_days=3, start=START).astype(object)


def _windy_index(df: pd.DataFrame) -> int:
    """A row whose 9 am wind was measured and non-zero (it carries a direction)."""
    ok = df.index[(pd.to_numeric(df["WindSpeed9am"]) > 0) & df["WindDir9am"].notna()]
    return int(ok[0])


def _run(raw: pd.DataFrame) -> ValidationResult:
    res = validate_batch(raw, START, END)
    assert res.rows_in == len(raw) == len(res.accepted) + len(res.quarantined)
    return res


def test_clean_batch_is_accepted_whole(clean: pd.DataFrame) -> None:
    res = _run(clean)
    assert res.quarantined.empty
    assert res.check_counts == {}
    assert res.invalid_share == 0.0
    assert len(res.accepted) == len(clean)
    assert list(res.accepted.columns) == list(schema.COLUMNS)
    assert res.accepted["MinTemp"].dtype == "float64"


@pytest.mark.parametrize(
    ("column", "value", "check", "reason_part"),
    [
        ("MinTemp", "warm", "type:MinTemp", "MinTemp='warm' is not a number"),
        ("Humidity3pm", 150.0, "range:Humidity3pm", "outside physical range [0.0, 100.0]"),
        ("Pressure9am", 800.0, "range:Pressure9am", "outside physical range [900.0, 1080.0]"),
        ("Location", "Atlantis", "station:Location", "'Atlantis' is not one of the 49 stations"),
        ("WindGustDir", "NORTH", "category:WindGustDir", "'NORTH' is not an allowed value"),
        ("RainToday", "maybe", "category:RainToday", "RainToday='maybe' is not an allowed value"),
        ("Date", "2019-12-25", "freshness:Date", "outside requested 2020-01-01..2020-01-03"),
    ],
)
def test_one_bad_cell_quarantines_only_its_row(
    clean: pd.DataFrame, column: str, value: object, check: str, reason_part: str
) -> None:
    raw = clean.copy()
    raw.loc[4, column] = value
    res = _run(raw)

    assert len(res.quarantined) == 1
    bad = res.quarantined.iloc[0]
    assert bad["check"] == check
    assert reason_part in bad["reason"]
    assert res.check_counts == {check: 1}
    # Every other row is accepted, conformed and unchanged.
    pd.testing.assert_frame_equal(res.accepted, schema.conform(clean.drop(index=4)))


def test_calm_wind_with_a_direction_is_quarantined(clean: pd.DataFrame) -> None:
    raw = clean.copy()
    i = _windy_index(raw)
    raw.loc[i, "WindSpeed9am"] = 0.0
    res = _run(raw)
    assert res.quarantined["check"].tolist() == ["calm:WindDir9am"]
    assert "WindSpeed9am=0 (calm) but WindDir9am is set" in res.quarantined["reason"].iloc[0]
    assert len(res.accepted) == len(clean) - 1


def test_calm_wind_without_a_direction_is_fine(clean: pd.DataFrame) -> None:
    raw = clean.copy()
    i = _windy_index(raw)
    raw.loc[i, "WindSpeed9am"] = 0.0
    raw.loc[i, "WindDir9am"] = None
    res = _run(raw)
    assert res.quarantined.empty


def test_missing_measurements_are_not_failures(clean: pd.DataFrame) -> None:
    raw = clean.copy()
    raw.loc[0, ["MinTemp", "Rainfall", "WindGustDir", "RainToday"]] = None
    assert _run(raw).quarantined.empty


def test_missing_location_is_quarantined_as_missing(clean: pd.DataFrame) -> None:
    raw = clean.copy()
    raw.loc[2, schema.LOCATION] = None
    res = _run(raw)
    assert res.quarantined["check"].tolist() == ["missing:Location"]
    assert res.quarantined[schema.LOCATION].iloc[0] is None


def test_exact_duplicate_keeps_one_and_quarantines_the_repeat(clean: pd.DataFrame) -> None:
    raw = pd.concat([clean, clean.iloc[[5]]], ignore_index=True)
    res = _run(raw)
    assert res.quarantined["check"].tolist() == ["duplicate:key"]
    assert res.quarantined["reason"].iloc[0] == "exact repeat of an earlier row"
    assert len(res.accepted) == len(clean)
    assert not res.accepted.duplicated([schema.DATE, schema.LOCATION]).any()


def test_conflicting_duplicate_quarantines_both(clean: pd.DataFrame) -> None:
    other = clean.iloc[[5]].copy()
    other["MaxTemp"] = float(other["MaxTemp"].iloc[0]) + 1.0
    raw = pd.concat([clean, other], ignore_index=True)
    res = _run(raw)
    assert res.quarantined["check"].tolist() == ["duplicate:key", "duplicate:key"]
    assert set(res.quarantined["reason"]) == {"same (Date, Location) as a row with other values"}
    key = (clean.loc[5, schema.DATE], clean.loc[5, schema.LOCATION])
    assert key not in set(
        zip(res.accepted[schema.DATE], res.accepted[schema.LOCATION], strict=True)
    )
    assert len(res.accepted) == len(clean) - 1
    assert res.check_counts == {"duplicate:key": 2}


def test_missing_column_raises(clean: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="Humidity3pm"):
        validate_batch(clean.drop(columns=["Humidity3pm"]), START, END)


def test_every_failing_rule_at_once_keeps_the_row_accounting(clean: pd.DataFrame) -> None:
    raw = clean.copy()
    raw.loc[0, "MinTemp"] = "warm"
    raw.loc[1, "Humidity9am"] = -5.0
    raw.loc[1, "Cloud3pm"] = 12.0  # two failures on one row: one quarantined row, two checks
    raw.loc[2, "WindDir3pm"] = "X"
    res = _run(raw)
    assert len(res.quarantined) == 3
    assert res.quarantined["check"].tolist() == [
        "type:MinTemp",
        "range:Cloud3pm,range:Humidity9am",
        "category:WindDir3pm",
    ]
    assert "Humidity9am=-5.0" in res.quarantined["reason"].iloc[1]
    assert "Cloud3pm=12.0" in res.quarantined["reason"].iloc[1]
    assert res.invalid_share == pytest.approx(3 / len(clean))
    assert res.worst_checks(1) == [("category:WindDir3pm", 1)]


def test_payload_keeps_the_original_raw_values(clean: pd.DataFrame) -> None:
    raw = clean.copy()
    raw.loc[3, "MinTemp"] = "12,5"  # a decimal comma: kept verbatim, not coerced to NaN
    raw.loc[3, "Evaporation"] = None
    res = _run(raw)
    payload = json.loads(res.quarantined["payload"].iloc[0])
    assert set(payload) == set(schema.COLUMNS)
    assert payload["MinTemp"] == "12,5"
    assert payload["Evaporation"] is None
    assert payload[schema.LOCATION] == clean.loc[3, schema.LOCATION]
    assert payload["MaxTemp"] == pytest.approx(float(clean.loc[3, "MaxTemp"]))
    assert res.quarantined[schema.DATE].iloc[0] == clean.loc[3, schema.DATE]


# --- the validate task: landing area -> store --------------------------------------------

DAY = date(2021, 3, 10)


class _Corrupting:
    """A source that returns synthetic rows with the first ``n_bad`` made out of range."""

    name = "synthetic"

    def __init__(self, n_bad: int) -> None:
        self.inner = SyntheticSource(seed=2, stations=TEN)
        self.n_bad = n_bad

    def fetch(self, start: date, end: date) -> pd.DataFrame:
        df = self.inner.fetch(start, end)
        df.loc[: self.n_bad - 1, "Humidity3pm"] = 150.0
        return df


class _Empty:
    name = "synthetic"

    def fetch(self, start: date, end: date) -> pd.DataFrame:
        return schema.empty_frame()


def _quarantine_rows(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(sa.select(store.quarantine)).mappings().all())


def test_validate_loads_a_clean_fetch(settings: Settings) -> None:
    source = fetch_step.make_source("synthetic:2", settings)
    fetched = fetch_step.run(settings, source, DAY, start=DAY - timedelta(days=1))
    assert fetched.path.exists() and fetched.rows == 2 * len(schema.station_names())

    out = validate_step.run(settings, ValidateParams(), DAY)
    engine = store.connect(settings.raw_store_url)
    assert out.run_id == f"synthetic:{DAY.isoformat()}"
    assert out.result.quarantined.empty
    assert out.upsert is not None and out.upsert.inserted == fetched.rows
    assert store.count_rows(engine) == fetched.rows
    # Day 1 is labelled from day 2's rainfall; day 2 waits for day 3.
    landed = pd.read_parquet(fetched.path)
    expected = store.next_day_labels(landed).rename(schema.RAIN_TOMORROW)
    obs = store.read_observations(engine)
    pd.testing.assert_series_equal(
        obs[schema.RAIN_TOMORROW].astype(object).where(obs[schema.RAIN_TOMORROW].notna(), None),
        expected.set_axis(obs.index).astype(object),
        check_dtype=False,
    )
    assert obs.loc[obs[schema.DATE] == DAY.isoformat(), schema.RAIN_TOMORROW].isna().all()
    assert (settings.project_dir / catalog.MANIFEST.path).exists()


def test_validate_rejects_a_mostly_bad_batch_and_loads_nothing(settings: Settings) -> None:
    fetch_step.run(settings, _Corrupting(n_bad=3), DAY)  # 3 of 10 rows > 5 %
    with pytest.raises(validate_step.ValidationFailedError) as err:
        validate_step.run(settings, ValidateParams(max_invalid_share=0.05), DAY)
    msg = str(err.value)
    assert "3/10 rows invalid" in msg
    assert "worst checks: range:Humidity3pm (3 rows)" in msg
    assert "Nothing loaded" in msg

    engine = store.connect(settings.raw_store_url)
    assert store.count_rows(engine) == 0
    kept = _quarantine_rows(engine)
    assert len(kept) == 3
    assert set(kept["check"]) == {"range:Humidity3pm"}
    assert set(kept["run_id"]) == {f"synthetic:{DAY.isoformat()}"}
    assert not (settings.project_dir / catalog.MANIFEST.path).exists()


def test_validate_tolerates_a_few_bad_rows(settings: Settings) -> None:
    fetch_step.run(settings, _Corrupting(n_bad=1), DAY)  # 1 of 10 = 10 %
    out = validate_step.run(settings, ValidateParams(max_invalid_share=0.2), DAY)
    engine = store.connect(settings.raw_store_url)
    assert store.count_rows(engine) == 9
    assert out.upsert is not None and out.upsert.inserted == 9
    assert len(_quarantine_rows(engine)) == 1


def test_validate_fails_an_empty_batch(settings: Settings) -> None:
    fetch_step.run(settings, _Empty(), DAY)
    with pytest.raises(validate_step.ValidationFailedError, match="returned no rows"):
        validate_step.run(settings, ValidateParams(), DAY)
    assert store.count_rows(store.connect(settings.raw_store_url)) == 0


def test_validate_without_a_fetch_says_what_to_run(settings: Settings) -> None:
    with pytest.raises(FileNotFoundError, match="raincast fetch --date 2021-03-10"):
        validate_step.run(settings, ValidateParams(), DAY)


def test_revalidating_the_same_date_is_a_no_op(settings: Settings) -> None:
    fetch_step.run(settings, _Corrupting(n_bad=1), DAY)
    params = ValidateParams(max_invalid_share=0.2)
    validate_step.run(settings, params, DAY)
    engine = store.connect(settings.raw_store_url)
    before = store.read_observations(engine)
    manifest = (settings.project_dir / catalog.MANIFEST.path).read_text()

    again = validate_step.run(settings, params, DAY)
    assert again.upsert is not None
    assert (again.upsert.inserted, again.upsert.updated, again.upsert.labels_filled) == (0, 0, 0)
    assert again.upsert.unchanged == 9
    assert not again.upsert.changed
    pd.testing.assert_frame_equal(store.read_observations(engine), before)
    assert len(_quarantine_rows(engine)) == 1  # replaced for the run id, not appended
    assert (settings.project_dir / catalog.MANIFEST.path).read_text() == manifest


def test_non_iso_date_is_quarantined_not_guessed() -> None:
    from datetime import date as _date

    from raincast.sources.synthetic import SyntheticSource

    rows = SyntheticSource(seed=1, stations=["Sydney", "Perth"]).fetch(
        _date(2021, 1, 2), _date(2021, 1, 2)
    )
    rows = rows.astype(object)
    rows.loc[0, "Date"] = "02/01/2021"  # day/month order is ambiguous: never guess
    result = validate_batch(rows, _date(2021, 1, 1), _date(2021, 1, 3))
    assert len(result.accepted) == 1
    assert result.quarantined["check"].tolist() == ["type:Date"]
    assert "ISO" in result.quarantined["reason"].iloc[0]


# --- what was sent: parse failures are judged here, with the raw value --------------------


@pytest.mark.parametrize("text", ["nan", "NaN", "12,5", " ", "1e400x"])
def test_any_text_that_is_not_a_number_is_a_type_error(clean: pd.DataFrame, text: str) -> None:
    raw = clean.copy()
    raw.loc[2, "Rainfall"] = text  # "nan" is text too: only an empty cell means missing
    res = _run(raw)
    assert res.quarantined["check"].tolist() == ["type:Rainfall"]
    assert json.loads(res.quarantined["payload"].iloc[0])["Rainfall"] == text


def test_numbers_sent_as_text_are_parsed(clean: pd.DataFrame) -> None:
    as_text = clean.copy()
    for c in schema.NUMERIC_COLUMNS:
        as_text[c] = [None if pd.isna(v) else f"{v:g}" for v in clean[c]]
    res = _run(as_text)
    assert res.quarantined.empty
    pd.testing.assert_frame_equal(res.accepted, schema.conform(clean))


def test_an_impossible_date_is_a_type_error_with_its_raw_value(clean: pd.DataFrame) -> None:
    raw = clean.copy()
    raw.loc[1, schema.DATE] = "2020-02-30"
    raw.loc[3, schema.DATE] = None
    res = _run(raw)
    assert res.quarantined["check"].tolist() == ["type:Date", "missing:Date"]
    assert res.quarantined[schema.DATE].iloc[0] == "2020-02-30"
    assert pd.isna(res.quarantined[schema.DATE].iloc[1])
    assert "Date='2020-02-30' is not a valid ISO date" in res.quarantined["reason"].iloc[0]


def test_a_row_that_observes_nothing_is_quarantined(clean: pd.DataFrame) -> None:
    raw = clean.copy()
    raw.loc[4, list(schema.OBSERVED_COLUMNS)] = None
    raw.loc[4, schema.RAIN_TODAY] = "No"  # a flag alone is no observation (it is derived)
    raw.loc[5, list(schema.OBSERVED_COLUMNS)] = None
    raw.loc[5, "Sunshine"] = 3.0  # one measurement is enough
    res = _run(raw)
    assert res.quarantined["check"].tolist() == ["empty:row"]
    assert res.quarantined["reason"].iloc[0] == "no observations: every measured column is missing"


def test_a_line_the_source_could_not_split_is_quarantined_with_it(clean: pd.DataFrame) -> None:
    raw = clean.copy()
    raw[schema.PARSE_PROBLEM] = None
    raw[schema.RAW_RECORD] = None
    raw.loc[6, list(schema.COLUMNS[2:])] = None
    raw.loc[6, schema.PARSE_PROBLEM] = "line 8 has 3 fields, the header has 23"
    raw.loc[6, schema.RAW_RECORD] = "2020-01-03,Perth,12.5"
    res = _run(raw)
    assert res.quarantined["check"].tolist() == ["arity:row"]
    assert res.quarantined["reason"].iloc[0] == "line 8 has 3 fields, the header has 23"
    payload = json.loads(res.quarantined["payload"].iloc[0])
    assert payload[schema.RAW_RECORD] == "2020-01-03,Perth,12.5"
    assert list(res.accepted.columns) == list(schema.COLUMNS)  # parse columns never stored
