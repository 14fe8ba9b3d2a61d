"""The raw store: idempotent upserts, derived labels, quarantine, decision history, locks."""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from raincast import schema
from raincast.data import store
from tests.conftest import RawRows
from tests.helpers import race_two_upserts

D1, D2, D3 = "2020-01-01", "2020-01-02", "2020-01-03"


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    return store.connect(f"sqlite:///{tmp_path}/s.db")


def _row(
    day: str, location: str = "Sydney", rainfall: float | None = 0.0, **values: object
) -> dict:
    """A hand-made conformed row: only the given values, everything else missing."""
    row: dict[str, object] = dict.fromkeys(schema.COLUMNS)
    row.update({schema.DATE: day, schema.LOCATION: location, schema.RAINFALL: rainfall, **values})
    return row


def _frame(*rows: dict) -> pd.DataFrame:
    return schema.conform(pd.DataFrame(list(rows)))


def _labels(engine: sa.Engine) -> dict[tuple[str, str], str | None]:
    obs = store.read_observations(engine)
    return {
        (d, loc): (None if pd.isna(lab) else lab)
        for d, loc, lab in zip(
            obs[schema.DATE], obs[schema.LOCATION], obs[schema.RAIN_TOMORROW], strict=True
        )
    }


# --- upserts ----------------------------------------------------------------------------


def test_upsert_inserts_then_identical_upsert_changes_nothing(
    engine: sa.Engine, raw_rows: RawRows
) -> None:
    batch = raw_rows(n_days=2)
    first = store.upsert_observations(engine, batch, "synthetic", "run-1")
    assert (first.inserted, first.updated, first.unchanged) == (len(batch), 0, 0)
    assert first.changed
    before = store.read_observations(engine)
    assert len(before) == len(batch)
    assert set(before["run_id"]) == {"run-1"}

    again = store.upsert_observations(engine, batch, "synthetic", "run-2")
    assert (again.inserted, again.updated, again.labels_filled) == (0, 0, 0)
    assert again.unchanged == len(batch)
    assert not again.changed
    after = store.read_observations(engine)
    pd.testing.assert_frame_equal(after, before)  # fetched_at and run_id untouched


def test_changed_value_updates_only_that_row(engine: sa.Engine, raw_rows: RawRows) -> None:
    batch = raw_rows(n_days=1)
    store.upsert_observations(engine, batch, "synthetic", "run-1")
    before = store.read_observations(engine).set_index(schema.LOCATION)

    changed = batch.copy()
    changed.loc[changed[schema.LOCATION] == "Perth", "MaxTemp"] += 1.5
    res = store.upsert_observations(engine, changed, "synthetic", "run-2")
    assert (res.inserted, res.updated, res.unchanged) == (0, 1, len(batch) - 1)

    after = store.read_observations(engine).set_index(schema.LOCATION)
    assert after.loc["Perth", "MaxTemp"] == pytest.approx(before.loc["Perth", "MaxTemp"] + 1.5)
    assert after.loc["Perth", "run_id"] == "run-2"
    assert after.loc["Perth", "fetched_at"] > before.loc["Perth", "fetched_at"]
    others = [loc for loc in after.index if loc != "Perth"]
    pd.testing.assert_frame_equal(after.loc[others], before.loc[others])


def test_an_upsert_never_replaces_an_observed_value_with_a_missing_one(engine: sa.Engine) -> None:
    store.upsert_observations(engine, _frame(_row(D1, MinTemp=10.0, MaxTemp=20.0)), "s", "run-1")
    before = store.read_observations(engine)
    # MaxTemp changes (an update) but MinTemp would be erased: the row is refused whole.
    res = store.upsert_observations(
        engine, _frame(_row(D1, MinTemp=None, MaxTemp=21.0)), "s", "run-2"
    )
    assert (res.inserted, res.updated, res.unchanged) == (0, 0, 0)
    assert not res.changed
    assert res.refused[[schema.DATE, schema.LOCATION, "check"]].values.tolist() == [
        [D1, "Sydney", "erase:stored"]
    ]
    assert "would replace stored MinTemp with missing values" in res.refused["reason"].iloc[0]
    pd.testing.assert_frame_equal(store.read_observations(engine), before)


def test_a_missing_value_becoming_observed_is_an_update(engine: sa.Engine) -> None:
    store.upsert_observations(engine, _frame(_row(D1, MinTemp=None)), "s", "run-1")
    res = store.upsert_observations(engine, _frame(_row(D1, MinTemp=9.5)), "s", "run-2")
    assert res.updated == 1 and res.refused.empty
    assert store.read_observations(engine)["MinTemp"].iloc[0] == 9.5


def test_a_refused_row_does_not_block_the_rest_of_the_batch(engine: sa.Engine) -> None:
    store.upsert_observations(engine, _frame(_row(D1, "Sydney", Temp9am=15.0)), "s", "run-1")
    res = store.upsert_observations(
        engine,
        _frame(_row(D1, "Sydney", Temp9am=None), _row(D1, "Perth", Temp9am=22.0)),
        "s",
        "run-2",
    )
    assert (res.inserted, len(res.refused)) == (1, 1)
    obs = store.read_observations(engine).set_index(schema.LOCATION)
    assert obs.loc["Sydney", "Temp9am"] == 15.0 and obs.loc["Perth", "Temp9am"] == 22.0


def test_empty_batch_is_a_no_op(engine: sa.Engine) -> None:
    res = store.upsert_observations(engine, schema.empty_frame(), "s", "run-1")
    assert not res.changed
    assert store.count_rows(engine) == 0


# --- derived labels ---------------------------------------------------------------------


def test_rain_today_is_derived_from_rainfall(engine: sa.Engine) -> None:
    # The batch's own RainToday is ignored: it is recomputed from Rainfall.
    batch = _frame(
        _row(D1, "Sydney", 1.2, RainToday="No"),
        _row(D1, "Perth", 1.0, RainToday="Yes"),
        _row(D1, "Darwin", 0.0),
        _row(D1, "Hobart", None, RainToday="Yes"),
    )
    store.upsert_observations(engine, batch, "s", "run-1")
    obs = store.read_observations(engine).set_index(schema.LOCATION)
    assert obs.loc["Sydney", schema.RAIN_TODAY] == "Yes"
    assert obs.loc["Perth", schema.RAIN_TODAY] == "No"  # exactly 1.0 mm is not rain
    assert obs.loc["Darwin", schema.RAIN_TODAY] == "No"
    assert pd.isna(obs.loc["Hobart", schema.RAIN_TODAY])


def test_rain_tomorrow_is_filled_when_the_next_day_arrives(engine: sa.Engine) -> None:
    first = store.upsert_observations(engine, _frame(_row(D1, rainfall=0.0)), "s", "run-1")
    assert first.labels_filled == 0
    assert _labels(engine) == {(D1, "Sydney"): None}

    second = store.upsert_observations(engine, _frame(_row(D2, rainfall=5.0)), "s", "run-2")
    assert second.labels_filled == 1
    assert _labels(engine) == {(D1, "Sydney"): "Yes", (D2, "Sydney"): None}


def test_rain_tomorrow_is_filled_when_days_arrive_out_of_order(engine: sa.Engine) -> None:
    store.upsert_observations(engine, _frame(_row(D2, rainfall=0.4)), "s", "run-2")
    store.upsert_observations(engine, _frame(_row(D1, rainfall=9.0)), "s", "run-1")
    assert _labels(engine) == {(D1, "Sydney"): "No", (D2, "Sydney"): None}


def test_rain_tomorrow_stays_missing_without_a_usable_next_day(engine: sa.Engine) -> None:
    batch = _frame(
        _row(D1, rainfall=3.0),
        _row(D2, rainfall=None),  # D2 arrived but its rain gauge was not read
        _row(D1, "Perth", rainfall=3.0),  # Perth D2 never arrives
        _row(D3, "Perth", rainfall=3.0),  # a gap day does not label D1
    )
    store.upsert_observations(engine, batch, "s", "run-1")
    labels = _labels(engine)
    assert labels[(D1, "Sydney")] is None
    assert labels[(D1, "Perth")] is None
    assert all(v is None for v in labels.values())


def test_labels_belong_to_the_same_station(engine: sa.Engine) -> None:
    batch = _frame(_row(D1, "Sydney", 0.0), _row(D2, "Perth", 20.0))
    store.upsert_observations(engine, batch, "s", "run-1")
    assert _labels(engine)[(D1, "Sydney")] is None


def test_corrected_next_day_rainfall_relabels_the_day_before(engine: sa.Engine) -> None:
    store.upsert_observations(engine, _frame(_row(D1), _row(D2, rainfall=0.0)), "s", "run-1")
    assert _labels(engine)[(D1, "Sydney")] == "No"
    res = store.upsert_observations(engine, _frame(_row(D2, rainfall=12.0)), "s", "run-2")
    assert res.updated == 1
    assert _labels(engine)[(D1, "Sydney")] == "Yes"


def test_next_day_labels_on_a_frame() -> None:
    frame = _frame(_row(D2, rainfall=2.0), _row(D1, rainfall=0.0), _row(D3, rainfall=None))
    labels = store.next_day_labels(frame)
    assert labels.index.equals(frame.index)
    assert labels.tolist() == [None, "Yes", None]


# --- quarantine and decision history ---------------------------------------------------


def _quarantine(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            schema.DATE: [D1] * n,
            schema.LOCATION: [f"Station{i}" for i in range(n)],
            "check": ["station:Location"] * n,
            "reason": ["not a station"] * n,
            "payload": ["{}"] * n,
        }
    )


def _quarantine_by_run(engine: sa.Engine) -> dict[str, int]:
    q = sa.select(store.quarantine.c.run_id, sa.func.count()).group_by(store.quarantine.c.run_id)
    with engine.connect() as conn:
        return {run: int(n) for run, n in conn.execute(q).all()}


def test_quarantine_rows_of_a_run_are_replaced_on_rerun(engine: sa.Engine) -> None:
    store.write_quarantine(engine, _quarantine(3), "s", "run-a")
    store.write_quarantine(engine, _quarantine(2), "s", "run-b")
    assert _quarantine_by_run(engine) == {"run-a": 3, "run-b": 2}

    store.write_quarantine(engine, _quarantine(1), "s", "run-a")
    assert _quarantine_by_run(engine) == {"run-a": 1, "run-b": 2}
    store.write_quarantine(engine, _quarantine(0), "s", "run-a")
    assert _quarantine_by_run(engine) == {"run-b": 2}


def test_decision_history_round_trip(engine: sa.Engine) -> None:
    decision = {
        "model_name": "rain-tomorrow",
        "action": "promote",
        "decision": "promoted",
        "candidate_version": "3",
        "champion_before": "2",
        "champion_after": "3",
        "candidate_f1": 0.61,
        "candidate_auc": 0.88,
        "champion_f1": 0.60,
        "champion_auc": 0.87,
        "test_window": "2020-01-01..2020-12-31",
        "reasons": "F1 gain +0.0100",
    }
    store.record_decision(engine, **decision, extra={"run": "abc"})
    store.record_decision(engine, **{**decision, "candidate_version": "4", "decision": "rejected"})
    store.record_decision(engine, **{**decision, "model_name": "other"})

    hist = store.read_history(engine, "rain-tomorrow")
    assert len(hist) == 2
    first = hist.iloc[0]
    for key, value in decision.items():
        assert first[key] == (pytest.approx(value) if isinstance(value, float) else value)
    assert first["extra"] == '{"run": "abc"}'
    assert hist.iloc[1]["extra"] == "{}"
    assert hist["candidate_version"].tolist() == ["3", "4"]  # in insertion order
    assert hist["decided_at"].notna().all()
    assert store.read_history(engine, "nobody").empty


# --- lock -------------------------------------------------------------------------------


def test_exclusive_lock_serialises_threads(engine: sa.Engine, tmp_path: Path) -> None:
    events: list[str] = []
    first_inside = threading.Event()

    def worker(name: str, wait_for_first: bool) -> None:
        if wait_for_first:
            first_inside.wait(timeout=5)
        with store.exclusive_lock(engine, "promote", tmp_path / "locks", timeout_s=10):
            events.append(f"enter {name}")
            first_inside.set()
            time.sleep(0.3)  # B tries to enter during this window
            events.append(f"exit {name}")

    threads = [
        threading.Thread(target=worker, args=("A", False)),
        threading.Thread(target=worker, args=("B", True)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert events == ["enter A", "exit A", "enter B", "exit B"]
    assert (tmp_path / "locks" / "promote.lock").exists()


def test_exclusive_lock_times_out_while_held(engine: sa.Engine, tmp_path: Path) -> None:
    from filelock import Timeout

    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store.exclusive_lock(engine, "x", tmp_path):
            held.set()
            release.wait(timeout=5)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(timeout=5)
        with (
            pytest.raises(Timeout),
            store.exclusive_lock(engine, "x", tmp_path, timeout_s=0.1),
        ):
            pass
    finally:
        release.set()
        t.join(timeout=5)
    with store.exclusive_lock(engine, "x", tmp_path, timeout_s=1):  # free again
        pass


def test_connect_creates_the_sqlite_folder(tmp_path: Path) -> None:
    engine = store.connect(f"sqlite:///{tmp_path}/nested/dir/s.db")
    assert (tmp_path / "nested" / "dir" / "s.db").exists()
    assert store.date_range(engine) is None
    store.upsert_observations(engine, _frame(_row(D1), _row(D3)), "s", "run-1")
    assert store.date_range(engine) == (date(2020, 1, 1), date(2020, 1, 3))


def _open_and_write(url: str, n: int) -> str:
    try:
        engine = store.connect(url)
        store.upsert_observations(engine, _frame(_row(date(2020, 2, n))), "s", f"run-{n}")
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())
    except Exception as err:  # reported to the parent, which asserts on it
        return f"{type(err).__name__}: {err}"


def test_processes_opening_one_new_sqlite_store_at_once_all_get_it(tmp_path: Path) -> None:
    """A new file in rollback mode answers a racing lock upgrade with "database is locked"
    at once (no busy wait); connect() takes turns on a setup lock beside the file."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        for attempt in range(5):
            url = f"sqlite:///{tmp_path}/{attempt}/s.db"
            answers = pool.starmap(_open_and_write, [(url, n) for n in range(1, 5)], chunksize=1)
            assert answers == ["wal"] * 4, answers
            assert store.count_rows(store.connect(url)) == 4


# --- provenance: one kind of data per store ----------------------------------------------


def test_synthetic_rows_are_refused_by_a_store_of_real_rows(
    engine: sa.Engine, raw_rows: RawRows
) -> None:
    store.upsert_observations(engine, raw_rows(n_days=2), "replay", "real-1")
    before = store.read_observations(engine)
    with pytest.raises(store.SourceMixError) as err:
        store.upsert_observations(
            engine, raw_rows(n_days=1, start=date(2020, 1, 3)), "synthetic", "syn-1"
        )
    msg = str(err.value)
    assert "holds real observations (source: replay)" in msg
    assert "refusing to add synthetic rows" in msg
    assert "RAINCAST_HOME" in msg and "make clean" in msg and "RAINCAST_ALLOW_MIXED_SOURCES" in msg
    pd.testing.assert_frame_equal(store.read_observations(engine), before)
    assert store.read_state(engine).source_kind == "real"


def test_real_rows_are_refused_by_a_store_of_synthetic_rows(
    engine: sa.Engine, raw_rows: RawRows
) -> None:
    store.upsert_observations(engine, raw_rows(n_days=2), "synthetic", "syn-1")
    for real in ("csv", "replay", "openmeteo"):
        with pytest.raises(store.SourceMixError, match="holds synthetic observations"):
            store.upsert_observations(engine, raw_rows(n_days=1), real, "real-1")
    assert set(store.read_observations(engine)["source"]) == {"synthetic"}


def test_real_sources_share_a_store(engine: sa.Engine, raw_rows: RawRows) -> None:
    store.upsert_observations(engine, raw_rows(n_days=1), "csv", "a")
    store.upsert_observations(engine, raw_rows(n_days=1, start=date(2020, 1, 2)), "openmeteo", "b")
    obs = store.read_observations(engine)
    assert obs.groupby(schema.DATE)["source"].first().tolist() == ["csv", "openmeteo"]


def test_a_store_written_before_its_state_row_is_judged_by_its_rows(
    engine: sa.Engine, raw_rows: RawRows
) -> None:
    store.upsert_observations(engine, raw_rows(n_days=1), "csv", "a")
    with engine.begin() as conn:  # as an older raincast left it
        conn.execute(sa.delete(store.store_state))
    assert store.stored_kind(engine) == "real"
    with pytest.raises(store.SourceMixError):
        store.upsert_observations(engine, raw_rows(n_days=1), "synthetic", "b")


def test_mixing_on_purpose_never_labels_across_kinds(engine: sa.Engine) -> None:
    store.upsert_observations(engine, _frame(_row(D1, rainfall=0.0)), "synthetic", "syn")
    res = store.upsert_observations(
        engine, _frame(_row(D2, rainfall=9.0), _row(D3, rainfall=0.0)), "csv", "real",
        allow_mixed=True,
    )  # fmt: skip
    assert res.inserted == 2
    labels = _labels(engine)
    assert labels[(D1, "Sydney")] is None  # a synthetic day never takes a real day's rain
    assert labels[(D2, "Sydney")] == "No"  # real D2 from real D3
    assert store.read_state(engine).source_kind == "mixed"


def test_the_revision_counts_changes_only(engine: sa.Engine, raw_rows: RawRows) -> None:
    assert store.read_state(engine).revision == 0
    batch = raw_rows(n_days=2)
    store.upsert_observations(engine, batch, "synthetic", "r1")
    store.upsert_observations(engine, batch, "synthetic", "r2")  # no-op
    assert store.read_state(engine) == store.StoreState("synthetic", 1, "r1")
    changed = batch.copy()
    changed.loc[0, "MaxTemp"] += 1
    store.upsert_observations(engine, changed, "synthetic", "r3")
    assert store.read_state(engine) == store.StoreState("synthetic", 2, "r3")


# --- concurrency --------------------------------------------------------------------------


def test_two_upserts_of_one_day_at_once_never_collide(
    tmp_path: Path, raw_rows: RawRows, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upsert reads what it compares against inside its write transaction: a second
    writer waits for the first to commit, then finds its rows (no duplicate key, nothing
    lost). Reading outside the transaction, both see an empty day and the slower one
    fails on the primary key."""
    url = f"sqlite:///{tmp_path}/race.db"
    batch = raw_rows(n_days=1)
    results, errors = race_two_upserts(url, batch, "synthetic", monkeypatch)
    assert errors == {}
    assert results["first"].inserted == len(batch)
    assert (results["second"].inserted, results["second"].unchanged) == (0, len(batch))
    assert store.count_rows(store.connect(url)) == len(batch)
