"""fetch -> validate -> store under crashes, concurrency and mixed provenance; and what
`raincast fetch / validate / run` say when they refuse."""

from __future__ import annotations

import json
import threading
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from testbed.params_file import small_model_params

from raincast import catalog, schema
from raincast.data import store
from raincast.params import ValidateParams
from raincast.pipeline import cycle
from raincast.settings import Settings
from raincast.sources import SourceUnavailableError
from raincast.sources.synthetic import SyntheticSource
from raincast.steps import fetch as fetch_step
from raincast.steps import validate as validate_step
from tests.helpers import FixedRows

DAY = date(2021, 3, 10)
STATIONS = ("Darwin", "Perth", "Sydney", "Hobart")
LENIENT = ValidateParams(max_invalid_share=0.5)
LENIENT_PARAMS = small_model_params({"validate": {"max_invalid_share": 0.5}})


def _synthetic(start: date = DAY - timedelta(days=3), end: date = DAY, seed: int = 3):
    return SyntheticSource(seed=seed, stations=STATIONS).fetch(start, end)


def _load(settings: Settings, name: str, day: date = DAY, start: date | None = None, **kw):  # type: ignore[no-untyped-def]
    rows = _synthetic(start or day - timedelta(days=3), day)
    fetch_step.run(settings, FixedRows(name, rows), day, start)
    return validate_step.run(settings, kw.pop("params", LENIENT), day, **kw)


def _engine(settings: Settings) -> sa.Engine:
    return store.connect(settings.raw_store_url)


def _table(engine: sa.Engine, table: sa.Table) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(sa.select(table)).mappings().all())


def _manifest(settings: Settings) -> dict:
    return json.loads((settings.project_dir / catalog.MANIFEST.path).read_text())


# --- crashes ------------------------------------------------------------------------------


def test_a_crash_after_the_commit_is_repaired_by_the_rerun(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows committed, then the process dies before the DVC manifest is written: the
    rerun changes no row but writes the manifest, so DVC sees the day."""
    fetch_step.run(settings, FixedRows("csv", _synthetic()), DAY, DAY - timedelta(days=3))

    def crash(*_: object) -> bool:
        raise OSError("killed right after the commit")

    monkeypatch.setattr(validate_step, "sync_manifest", crash)
    with pytest.raises(OSError, match="killed"):
        validate_step.run(settings, LENIENT, DAY)
    engine = _engine(settings)
    assert store.count_rows(engine) == 4 * len(STATIONS)  # the commit happened...
    assert len(_table(engine, store.validation_runs)) == 1  # ...with its record
    assert not (settings.project_dir / catalog.MANIFEST.path).exists()

    monkeypatch.undo()
    again = validate_step.run(settings, LENIENT, DAY)
    assert again.upsert is not None and not again.upsert.changed
    assert again.manifest_written
    assert _manifest(settings) == validate_step.manifest_body(engine)
    assert _manifest(settings)["rows"] == 4 * len(STATIONS)
    assert not validate_step.run(settings, LENIENT, DAY).manifest_written  # stable: no rewrite


def test_a_crash_inside_the_transaction_leaves_nothing_behind(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upsert, the quarantine and the validation record commit together."""
    rows = _synthetic()
    rows.loc[0, "Humidity3pm"] = 150.0  # one row for the quarantine
    fetch_step.run(settings, FixedRows("csv", rows), DAY, DAY - timedelta(days=3))

    def crash(*_: object, **__: object) -> None:
        raise RuntimeError("killed before the validation record")

    monkeypatch.setattr(store, "record_validation_run", crash)
    with pytest.raises(RuntimeError, match="killed"):
        validate_step.run(settings, LENIENT, DAY)
    engine = _engine(settings)
    assert store.count_rows(engine) == 0
    assert store.count_rows(engine, store.quarantine) == 0
    assert store.count_rows(engine, store.validation_runs) == 0
    assert store.read_state(engine).revision == 0

    monkeypatch.undo()
    out = validate_step.run(settings, LENIENT, DAY)
    assert out.upsert is not None and out.upsert.inserted == len(rows) - 1
    assert store.count_rows(engine, store.quarantine) == 1
    assert _manifest(settings)["rows"] == len(rows) - 1


def test_a_failed_landing_write_keeps_the_previous_file(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    fetch_step.run(settings, FixedRows("csv", _synthetic()), DAY)
    path, _ = catalog.landing_paths(settings, DAY)
    before = path.read_bytes()

    def half_written(table: object, where: object, **_: object) -> None:
        Path(str(where)).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", half_written)
    with pytest.raises(OSError, match="disk full"):
        fetch_step.run(settings, FixedRows("csv", _synthetic(seed=9)), DAY)
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_validate_trusts_the_metadata_inside_the_landing_file(settings: Settings) -> None:
    """A crash between the data and its JSON sidecar cannot pair new rows with old
    metadata: validate reads the metadata embedded in the parquet file."""
    fetch_step.run(settings, FixedRows("csv", _synthetic()), DAY, DAY - timedelta(days=3))
    _, sidecar = catalog.landing_paths(settings, DAY)
    stale = {"source": "synthetic", "start": DAY.isoformat(), "end": DAY.isoformat(), "rows": 4}
    sidecar.write_text(json.dumps(stale))
    out = validate_step.run(settings, LENIENT, DAY)
    assert out.source == "csv" and out.result.quarantined.empty
    assert out.upsert is not None and out.upsert.inserted == 4 * len(STATIONS)


def test_an_unreadable_landing_file_says_to_fetch_again(settings: Settings) -> None:
    fetch_step.run(settings, FixedRows("csv", _synthetic()), DAY)
    path, _ = catalog.landing_paths(settings, DAY)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(catalog.LandingError, match=r"2021-03-10\.parquet is unreadable.*fetch"):
        validate_step.run(settings, LENIENT, DAY)


# --- what was sent: no erasing, no empty rows ---------------------------------------------


def test_an_all_missing_reply_never_overwrites_a_stored_day(settings: Settings) -> None:
    _load(settings, "csv")
    engine = _engine(settings)
    before = store.read_observations(engine)
    blank = _synthetic(DAY, DAY)
    blank[list(schema.OBSERVED_COLUMNS)] = None  # what an upstream outage may send
    blank[schema.RAIN_TODAY] = None
    fetch_step.run(settings, FixedRows("csv", blank), DAY)
    with pytest.raises(validate_step.ValidationFailedError, match=r"empty:row \(4 rows\)"):
        validate_step.run(settings, ValidateParams(), DAY)
    pd.testing.assert_frame_equal(store.read_observations(engine), before)


def test_erasing_values_is_quarantined_with_a_reason(settings: Settings) -> None:
    _load(settings, "csv")
    engine = _engine(settings)
    before = store.read_observations(engine)
    sparse = _synthetic(DAY, DAY)
    sparse.loc[sparse[schema.LOCATION] == "Perth", ["Humidity3pm", "Temp3pm"]] = None
    fetch_step.run(settings, FixedRows("csv", sparse), DAY)
    out = validate_step.run(settings, LENIENT, DAY, run_id="sparse")
    q = out.result.quarantined
    assert q[[schema.LOCATION, "check"]].values.tolist() == [["Perth", "erase:stored"]]
    assert "would replace stored Humidity3pm, Temp3pm with missing values" in q["reason"].iloc[0]
    assert out.result.rows_in == len(out.result.accepted) + len(q) == len(STATIONS)
    pd.testing.assert_frame_equal(store.read_observations(engine), before)
    runs = _table(engine, store.validation_runs).set_index("run_id")
    assert (runs.loc["sparse", "accepted"], runs.loc["sparse", "quarantined"]) == (3, 1)
    kept = _table(engine, store.quarantine)
    assert kept.loc[kept["run_id"] == "sparse", "check"].tolist() == ["erase:stored"]


# --- provenance -----------------------------------------------------------------------------


def test_validate_refuses_synthetic_rows_for_a_real_store_and_writes_nothing(
    settings: Settings,
) -> None:
    _load(settings, "csv")
    engine = _engine(settings)
    counts = {t.name: store.count_rows(engine, t) for t in store.metadata.sorted_tables}
    manifest = _manifest(settings)
    later = DAY + timedelta(days=1)
    fetch_step.run(settings, FixedRows("synthetic", _synthetic(later, later, seed=5)), later)
    with pytest.raises(store.SourceMixError, match="holds real observations"):
        validate_step.run(settings, LENIENT, DAY + timedelta(days=1))
    assert {t.name: store.count_rows(engine, t) for t in store.metadata.sorted_tables} == counts
    assert _manifest(settings) == manifest
    out = validate_step.run(settings, LENIENT, DAY + timedelta(days=1), allow_mixed=True)
    assert out.upsert is not None and out.upsert.inserted == len(STATIONS)
    assert store.read_state(engine).source_kind == "mixed"


class _Unreachable:
    name = "openmeteo"

    def fetch(self, start: date, end: date) -> pd.DataFrame:
        raise SourceUnavailableError("Open-Meteo host api.open-meteo.com cannot be resolved")


@pytest.fixture
def no_dvc(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Stub out dvc, promotion and replay: these tests are about what reaches the store."""
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(cycle, "dvc", lambda _dir, *args, **_: calls.append(args) or "ok")
    monkeypatch.setattr(cycle, "promote", lambda *a, **k: None)
    monkeypatch.setattr(cycle, "replay", lambda *a, **k: (None, "stubbed"))
    return calls


def test_the_fallback_never_writes_synthetic_rows_into_a_real_store(
    settings: Settings, no_dvc: list[tuple[str, ...]]
) -> None:
    _load(settings, "csv", day=DAY - timedelta(days=1))
    engine = _engine(settings)
    before = store.read_observations(engine)
    params = small_model_params({"validate": {"max_invalid_share": 0.5}})
    with pytest.raises(store.SourceMixError) as err:
        cycle.run_cycle(settings, params, _Unreachable(), DAY, SyntheticSource(seed=1))
    msg = str(err.value)
    assert "openmeteo is unreachable" in msg and "not falling back to synthetic data" in msg
    assert "RAINCAST_HOME" in msg and "make clean" in msg
    pd.testing.assert_frame_equal(store.read_observations(engine), before)
    assert no_dvc == []  # nothing retrained either


def test_the_fallback_fills_an_empty_store_and_stays_synthetic(
    settings: Settings, no_dvc: list[tuple[str, ...]]
) -> None:
    params = small_model_params(
        {"validate": {"max_invalid_share": 0.5}, "history": {"synthetic_days": 3}}
    )
    fallback = SyntheticSource(seed=1, stations=STATIONS)
    rep = cycle.run_cycle(settings, params, _Unreachable(), DAY, fallback)
    assert rep.fell_back and rep.source == "synthetic"
    engine = _engine(settings)
    assert set(store.read_observations(engine)["source"]) == {"synthetic"}
    assert store.read_state(engine).source_kind == "synthetic"
    # Open-Meteo answers again: its real rows are refused by this synthetic store.
    fetch_step.run(settings, FixedRows("openmeteo", _synthetic()), DAY)
    with pytest.raises(store.SourceMixError, match="holds synthetic observations"):
        validate_step.run(settings, LENIENT, DAY)


# --- locks ----------------------------------------------------------------------------------


def test_validate_waits_for_the_store_lock(settings: Settings) -> None:
    engine = _engine(settings)
    fetch_step.run(settings, FixedRows("csv", _synthetic()), DAY)
    done = threading.Event()
    outcome: list[object] = []

    def validate() -> None:
        outcome.append(validate_step.run(settings, LENIENT, DAY))
        done.set()

    with store.store_lock(engine, settings.lock_dir, 5, "test holder"):
        t = threading.Thread(target=validate)
        t.start()
        assert not done.wait(1.0)  # blocked behind us
        assert store.count_rows(engine) == 0
    t.join(30)
    assert done.is_set() and store.count_rows(engine) == len(STATIONS)


def test_a_busy_store_is_refused_with_the_holder_named(settings: Settings) -> None:
    engine = _engine(settings)
    fetch_step.run(settings, FixedRows("csv", _synthetic()), DAY)
    impatient = settings.model_copy(update={"store_lock_timeout_s": 0.0})
    errors: list[BaseException] = []

    def validate() -> None:
        try:
            validate_step.run(impatient, LENIENT, DAY)
        except store.StoreBusyError as err:
            errors.append(err)

    with store.store_lock(engine, settings.lock_dir, 5, "run 2021-03-09"):
        t = threading.Thread(target=validate)
        t.start()
        t.join(30)
    assert len(errors) == 1
    assert "is busy: raincast run 2021-03-09 (pid" in str(errors[0])
    assert "RAINCAST_STORE_LOCK_TIMEOUT_S" in str(errors[0])
    assert store.count_rows(engine) == 0


def test_a_cycle_holds_the_store_lock_before_it_fetches(
    settings: Settings, no_dvc: list[tuple[str, ...]]
) -> None:
    fetched: list[date] = []

    class _Watched(FixedRows):
        def fetch(self, start: date, end: date) -> pd.DataFrame:
            fetched.append(end)
            return super().fetch(start, end)

    impatient = settings.model_copy(update={"store_lock_timeout_s": 0.0})
    errors: list[BaseException] = []

    def run() -> None:
        try:
            cycle.run_cycle(impatient, LENIENT_PARAMS, _Watched("csv", _synthetic()), DAY)
        except store.StoreBusyError as err:
            errors.append(err)

    with store.store_lock(_engine(settings), settings.lock_dir, 5, "validate 2021-03-10"):
        t = threading.Thread(target=run)
        t.start()
        t.join(30)
    assert len(errors) == 1 and "raincast validate 2021-03-10" in str(errors[0])
    assert fetched == [] and no_dvc == []
