"""Monitor's store reads (serving.monitor) without a server: the binning, parameter checks,
and a store that is absent or unreachable."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raincast.data import store
from raincast.serving import monitor
from tests.helpers import free_port


def test_reliability_bins_by_hand() -> None:
    p = np.array([0.05, 0.15, 0.95, 1.0, 0.1])
    y = np.array([0.0, 1.0, 1.0, 1.0, 0.0])
    bins = monitor.reliability_bins(y, p, 10)
    assert [(b["lower"], b["n"]) for b in bins] == [(0.0, 1), (0.1, 2), (0.9, 2)]
    assert bins[1]["mean_probability"] == pytest.approx(0.125)
    assert bins[1]["observed_frequency"] == pytest.approx(0.5)
    assert bins[2]["upper"] == 1.0 and bins[2]["observed_frequency"] == 1.0


def test_reliability_keeps_the_last_scored_days_only() -> None:
    scored = pd.DataFrame(
        {
            "target_date": ["2021-03-01", "2021-03-09", "2021-03-10", "2021-03-11"],
            "probability": [0.9, 0.2, 0.8, 0.5],
            "outcome": ["Yes", "No", "Yes", None],  # 03-11 is still pending
        }
    )
    out = monitor.reliability(scored, "live", 2, 2)
    assert (out["start"], out["end"], out["n"]) == ("2021-03-09", "2021-03-10", 2)
    assert [b["n"] for b in out["bins"]] == [1, 1]
    empty = monitor.reliability(scored.iloc[3:], "live", 30, 10)
    assert empty == {"kind": "live", "start": None, "end": None, "n": 0, "bins": []}


@pytest.mark.parametrize(
    ("value", "reason"),
    [("0", "between 1 and 366"), ("-3", "between 1 and 366"), ("x", "whole number")],
)
def test_parse_int_refuses_with_a_reason(value: str, reason: str) -> None:
    with pytest.raises(monitor.BadQueryError, match=reason):
        monitor.parse_int("window_days", value, monitor.WINDOW_DAYS)


def test_parse_defaults_and_choices() -> None:
    assert monitor.parse_int("bins", None, monitor.BINS) == 10
    assert monitor.parse_choice("kind", None, monitor.SCORE_KINDS, "all") == "all"
    with pytest.raises(monitor.BadQueryError, match="live, replayed, all"):
        monitor.parse_choice("kind", "everything", monitor.SCORE_KINDS, "all")


def test_missing_numbers_are_null_not_nan() -> None:
    history = pd.DataFrame(
        [
            {
                "decided_at": pd.Timestamp("2021-03-01 10:00"),
                "action": "promote",
                "decision": "promoted",
                "candidate_version": "1",
                "champion_before": None,
                "champion_after": "1",
                "candidate_f1": 0.6,
                "champion_f1": math.nan,
            }
        ]
    )
    (row,) = monitor.champion_rows(history)
    assert row["champion_f1"] is None and row["champion_before"] is None
    assert row["decided_at"] == "2021-03-01T10:00:00+00:00"


def test_an_absent_sqlite_store_is_unavailable_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "none" / "raincast.db"
    reader = monitor.MonitorStore(f"sqlite:///{db}", "rain-tomorrow")
    with pytest.raises(monitor.StoreUnavailableError, match="absent"):
        reader.scores("all")
    assert not db.exists() and not db.parent.exists()


def test_an_unreachable_postgres_is_unavailable_without_the_password() -> None:
    url = f"postgresql+psycopg2://reader:s3cret-pw@127.0.0.1:{free_port()}/raincast"
    reader = monitor.MonitorStore(url, "rain-tomorrow")
    for read in (lambda: reader.scores("all"), reader.drift, lambda: reader.champions(None)):
        with pytest.raises(monitor.StoreUnavailableError, match="unreachable") as err:
            read()
        assert "s3cret-pw" not in str(err.value)


def test_model_champion_history_is_the_spans_of_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'raincast.db'}"
    engine = store.connect(url)
    reader = monitor.MonitorStore(url, "rain-tomorrow")
    assert reader.champion_history() == {"champion_history": [], "champion_history_error": None}
    for before, after, action in (
        (None, "1", "promote"),
        ("1", "2", "promote"),
        ("2", "1", "rollback"),
    ):
        store.record_decision(
            engine, model_name="rain-tomorrow", action=action, decision="moved",
            candidate_version=after, champion_before=before, champion_after=after, reasons="t",
        )  # fmt: skip
    body = reader.champion_history()
    assert body["champion_history_error"] is None
    spans = body["champion_history"]
    assert [(s["version"], s["decided_by"]) for s in spans] == [
        ("1", "promote/moved"),
        ("2", "promote/moved"),
        ("1", "rollback/moved"),
    ]
    assert spans[0]["to"] == spans[1]["from"] and spans[-1]["to"] is None
    assert spans[0]["from"].endswith("+00:00")


def test_model_champion_history_degrades_to_null_with_the_reason(tmp_path: Path) -> None:
    db = tmp_path / "none" / "raincast.db"
    absent = monitor.MonitorStore(f"sqlite:///{db}", "rain-tomorrow").champion_history()
    assert absent["champion_history"] is None
    assert "absent" in absent["champion_history_error"]
    assert not db.parent.exists()  # read-only: a missing store is reported, never made
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    body = monitor.MonitorStore(f"sqlite:///{broken}", "rain-tomorrow").champion_history()
    assert body["champion_history"] is None
    assert body["champion_history_error"].startswith("the raw store is unreachable")
