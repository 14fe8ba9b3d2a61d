"""A no-op `raincast run` (dvc repro changed nothing) reports the promotion decision and
the replayed window the store already records, without MLflow; anything it cannot vouch
for sends the cycle down the full promote + replay path."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from raincast import schema
from raincast.data import store
from raincast.params import ReplayParams
from raincast.pipeline.cycle import settled_in_store
from raincast.settings import Settings

NAME = "rain-tomorrow"
CFG = ReplayParams(days=60, windows=(7, 30))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(project_dir=tmp_path, home=tmp_path / "var")


@pytest.fixture
def engine(settings: Settings) -> sa.Engine:
    engine = store.connect(settings.raw_store_url)
    rows = [dict.fromkeys(schema.COLUMNS) for _ in range(2)]
    for row, day in zip(rows, ("2020-03-01", "2020-03-02"), strict=True):
        row.update({schema.DATE: day, schema.LOCATION: "Sydney", schema.RAINFALL: 0.0})
    store.upsert_observations(engine, schema.conform(pd.DataFrame(rows)), "synthetic", "r1")
    assert store.newest_labelled_date(engine) == date(2020, 3, 1)
    return engine


def _candidate(settings: Settings, version: str) -> None:
    model_dir = settings.project_dir / "data" / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "train.json").write_text(json.dumps({"model_version": version}))


def _decide(engine: sa.Engine, version: str, decision: str, after: str | None) -> None:
    store.record_decision(
        engine,
        model_name=NAME,
        action="promote",
        decision=decision,
        candidate_version=version,
        champion_before=None,
        champion_after=after,
        reasons="test",
    )


def _replayed(engine: sa.Engine, version: str, last: date, windows: str = "7,30") -> None:
    run = {
        "run_id": f"replay-{version}-{last}",
        "model_name": NAME,
        "model_version": version,
        "replayed_at": datetime.now(UTC),
        "first_observation_date": date(2020, 1, 2),
        "last_observation_date": last,
        "days": 60,
        "windows": windows,
        "n_predictions": 0,
        "n_scored": 0,
        "trained_through": date(2020, 1, 1),
        "overlaps_training": False,
        "note": "",
    }
    store.replace_replayed_window(engine, run, [], [])


def test_a_recorded_decision_and_a_current_replay_settle_the_cycle(
    settings: Settings, engine: sa.Engine
) -> None:
    _candidate(settings, "2")
    _decide(engine, "1", "promoted", "1")
    _decide(engine, "2", "rejected", "1")
    _replayed(engine, "1", date(2020, 3, 1))
    settled = settled_in_store(settings, CFG, engine)
    assert settled is not None
    outcome, replay_note = settled
    assert outcome.champion_version == "1" and outcome.decision is None
    assert outcome.skipped is not None and "version 2 was already rejected" in outcome.skipped
    assert replay_note == "version 1's replayed window 2020-01-02..2020-03-01 is current"


@pytest.mark.parametrize(
    "case",
    [
        "no candidate file",
        "candidate not decided",
        "champion archived",
        "no replay",
        "replay of another version",
        "replay behind the newest labelled day",
        "replay with other windows",
    ],
)
def test_anything_the_store_cannot_vouch_for_runs_the_full_path(
    settings: Settings, engine: sa.Engine, case: str
) -> None:
    _decide(engine, "1", "promoted", "1")
    if case != "no candidate file":
        _candidate(settings, "3" if case == "candidate not decided" else "1")
    if case == "champion archived":
        store.record_decision(
            engine,
            model_name=NAME,
            action="alias",
            decision="moved",
            candidate_version="1",
            champion_before="1",
            champion_after=None,
            reasons="archived",
        )
    if case != "no replay":
        version = "2" if case == "replay of another version" else "1"
        last = date(2020, 2, 1) if case == "replay behind the newest labelled day" else None
        windows = "7" if case == "replay with other windows" else "7,30"
        _replayed(engine, version, last or date(2020, 3, 1), windows)
    assert settled_in_store(settings, CFG, engine) is None
