"""`raincast.data.champions.champion_spans`: the decision history folded into which version
was champion over which time span."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from raincast.data import store
from raincast.data.champions import UNRECORDED, ChampionSpan, champion_spans

T0 = datetime(2026, 1, 2, 6, 0, tzinfo=UTC)


def at(day: int) -> datetime:
    return T0 + timedelta(days=day)


def history(*rows: tuple[int, str, str, str | None, str | None]) -> pd.DataFrame:
    """Decisions as (day, action, decision, champion_before, champion_after)."""
    return pd.DataFrame(
        [
            {
                "decided_at": at(day),
                "action": action,
                "decision": decision,
                "candidate_version": after or "9",
                "champion_before": before,
                "champion_after": after,
            }
            for day, action, decision, before, after in rows
        ]
    )


def spans(frame: pd.DataFrame) -> list[tuple[str, datetime, datetime | None, str]]:
    return [(s.version, s.start, s.end, s.decided_by) for s in champion_spans(frame)]


def test_no_decision_no_span() -> None:
    assert champion_spans(history()) == []
    assert champion_spans(pd.DataFrame()) == []


def test_promotions_chain_and_a_rejection_changes_nothing() -> None:
    frame = history(
        (0, "promote", "promoted", None, "1"),
        (1, "promote", "rejected", "1", "1"),
        (2, "promote", "promoted", "1", "2"),
    )
    assert spans(frame) == [
        ("1", at(0), at(2), "promote/promoted"),
        ("2", at(2), None, "promote/promoted"),
    ]


def test_a_rollback_reopens_the_earlier_version() -> None:
    frame = history(
        (0, "promote", "promoted", None, "1"),
        (1, "promote", "promoted", "1", "2"),
        (3, "rollback", "moved", "2", "1"),
    )
    assert spans(frame) == [
        ("1", at(0), at(1), "promote/promoted"),
        ("2", at(1), at(3), "promote/promoted"),
        ("1", at(3), None, "rollback/moved"),
    ]


def test_a_stage_command_moves_the_champion_and_a_challenger_label_does_not() -> None:
    frame = history(
        (0, "promote", "promoted", None, "1"),
        (1, "alias", "moved", "1", "1"),  # Staging -> challenger on another version
        (2, "alias", "moved", "1", "3"),  # Production -> champion on version 3
    )
    assert spans(frame) == [
        ("1", at(0), at(2), "promote/promoted"),
        ("3", at(2), None, "alias/moved"),
    ]


def test_archiving_the_champion_leaves_none_until_the_next_move() -> None:
    frame = history(
        (0, "promote", "promoted", None, "1"),
        (1, "alias", "moved", "1", None),  # Archived on the champion
        (2, "promote", "rejected", None, None),  # nothing to compare: still none
        (4, "promote", "promoted", None, "5"),
    )
    assert spans(frame) == [
        ("1", at(0), at(1), "promote/promoted"),
        ("5", at(4), None, "promote/promoted"),
    ]


def test_an_unrecorded_move_is_found_at_the_next_decision() -> None:
    # Version 3 became champion by hand between day 0 and day 2; the decisions of day 2
    # and 3 find it in place.
    frame = history(
        (0, "promote", "promoted", None, "1"),
        (2, "promote", "rejected", "3", "3"),
        (3, "promote", "promoted", "3", "4"),
    )
    assert spans(frame) == [
        ("1", at(0), at(2), "promote/promoted"),
        ("3", at(2), at(3), UNRECORDED),
        ("4", at(3), None, "promote/promoted"),
    ]


def test_a_champion_older_than_the_history_starts_at_the_first_decision() -> None:
    frame = history((0, "promote", "promoted", "2", "5"))
    assert spans(frame) == [("2", at(0), at(0), UNRECORDED), ("5", at(0), None, "promote/promoted")]


def test_a_history_without_the_champion_columns_is_refused_by_name() -> None:
    frame = history((0, "promote", "promoted", None, "1")).drop(columns=["champion_after"])
    with pytest.raises(ValueError, match="no column champion_after"):
        champion_spans(frame)


def test_json_shape_has_iso_times_and_an_open_end() -> None:
    closed = ChampionSpan("1", at(0), at(1), "promote/promoted").as_dict()
    assert closed == {
        "version": "1",
        "from": "2026-01-02T06:00:00+00:00",
        "to": "2026-01-03T06:00:00+00:00",
        "decided_by": "promote/promoted",
    }
    assert ChampionSpan("2", at(1), None, "rollback/moved").as_dict()["to"] is None


def test_spans_of_the_history_the_store_gives_back(tmp_path: Path) -> None:
    """SQLite hands back naive timestamps and None versions: the spans are in UTC."""
    engine = store.connect(f"sqlite:///{tmp_path / 'raincast.db'}")
    decisions: list[dict[str, Any]] = [
        {"action": "promote", "decision": "promoted", "candidate_version": "1",
         "champion_before": None, "champion_after": "1"},
        {"action": "promote", "decision": "rejected", "candidate_version": "2",
         "champion_before": "1", "champion_after": "1"},
        {"action": "promote", "decision": "promoted", "candidate_version": "3",
         "champion_before": "1", "champion_after": "3"},
        {"action": "rollback", "decision": "moved", "candidate_version": "1",
         "champion_before": "3", "champion_after": "1"},
    ]  # fmt: skip
    for values in decisions:
        store.record_decision(engine, model_name="rain-tomorrow", reasons="test", **values)
    store.record_decision(
        engine, model_name="other-model", action="alias", decision="moved",
        candidate_version="7", champion_before=None, champion_after="7", reasons="test",
    )  # fmt: skip
    hist = store.read_history(engine, "rain-tomorrow")
    got = champion_spans(hist)
    assert [(s.version, s.decided_by) for s in got] == [
        ("1", "promote/promoted"),
        ("3", "promote/promoted"),
        ("1", "rollback/moved"),
    ]
    times = [t.to_pydatetime().replace(tzinfo=UTC) for t in pd.to_datetime(hist["decided_at"])]
    assert [(s.start, s.end) for s in got] == [
        (times[0], times[2]),
        (times[2], times[3]),
        (times[3], None),
    ]
    assert all(s.start.tzinfo is UTC for s in got)
