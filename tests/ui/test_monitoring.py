"""The UI's read-only views of the raw store."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from raincast.data import store
from raincast.ui import monitoring


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'raincast.db'}"
    engine = store.connect(url)
    store.record_decision(
        engine,
        model_name="rain-tomorrow",
        action="promote",
        decision="promoted",
        candidate_version="2",
        champion_before="1",
        champion_after="2",
        reasons="better",
    )
    engine.dispose()
    return url


def test_a_missing_sqlite_store_is_not_available_and_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'absent' / 'raincast.db'}"
    assert monitoring.promotion_history(url, "rain-tomorrow") is None
    assert monitoring.live_scores(url, "rain-tomorrow") is None
    assert monitoring.drift_shares(url) is None
    assert not (tmp_path / "absent").exists()


def test_an_unreachable_server_store_is_not_available() -> None:
    url = "postgresql+psycopg2://nobody:nothing@127.0.0.1:1/raincast"
    assert monitoring.promotion_history(url, "rain-tomorrow") is None


def test_history_is_read_and_filtered_by_model(db: str) -> None:
    history = monitoring.promotion_history(db, "rain-tomorrow")
    assert history is not None
    assert history[["decision", "candidate_version"]].values.tolist() == [["promoted", "2"]]
    other = monitoring.promotion_history(db, "other-model")
    assert other is not None and other.empty


def test_the_engine_cannot_write(db: str) -> None:
    engine = monitoring.read_only_engine(db)
    assert engine is not None
    with pytest.raises(sa.exc.OperationalError, match="readonly"), engine.begin() as conn:
        conn.execute(sa.delete(store.promotion_history))
    engine.dispose()


def test_a_store_without_the_tables_reads_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bare.db'}"
    sa.create_engine(url).connect().close()  # an empty database file
    assert (tmp_path / "bare.db").exists()
    history = monitoring.promotion_history(url, "rain-tomorrow")
    scores = monitoring.live_scores(url, "rain-tomorrow")
    assert history is not None and history.empty and "decision" in history.columns
    assert scores is not None and scores.empty and "f1" in scores.columns
    assert sa.inspect(sa.create_engine(url)).get_table_names() == []  # nothing created


def test_a_drift_table_is_found_by_name_and_share_column(db: str) -> None:
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE drift_reports (as_of_date DATE, drift_share FLOAT)"))
        conn.execute(
            sa.text("INSERT INTO drift_reports VALUES (:d, :s)"),
            [{"d": date(2026, 1, 2), "s": 0.3}, {"d": date(2026, 1, 1), "s": 0.1}],
        )
    engine.dispose()
    drift = monitoring.drift_shares(db)
    assert drift is not None
    assert drift["drift_share"].tolist() == [0.1, 0.3]
