"""Airflow 3 with its metadata DB on PostgreSQL (as deployed), not SQLite: `airflow db
migrate`, then `airflow dags test` of the data update (its Asset event queues the retrain)
and of the retrain, with the raincast store on PostgreSQL and the registry on the MLflow
server. The assertions read Airflow's own tables in PostgreSQL.

The retrain starts with the registry unreachable: `train` fails its first try and Airflow
retries it (the DAG's own `retries`), which succeeds once the registry is back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from raincast import local_airflow
from raincast.data import store
from raincast.models.registry import alias_version
from tests.backends.conftest import BIN, Stack
from tests.backends.tcp_proxy import TcpProxy
from tests.dags.conftest import FIRST, LAST, airflow_env, make_project, run
from tests.helpers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "rain-airflow-pg"
UPDATE, RETRAIN = "weather_data_update", "weather_retrain"
ASSET_URI = "raincast://weather/observations"


def _rows(engine: sa.Engine, sql: str) -> list[sa.Row]:  # type: ignore[type-arg]
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql)))


def _retry_train_once_registry_is_back(
    meta: sa.Engine, registry: TcpProxy, done: threading.Event, seen: list[str]
) -> None:
    """Wait for `train` to be up for retry; bring the registry back and move the try's end
    back an hour, standing in for the DAG's 5-minute retry delay."""
    query = sa.text("SELECT state FROM task_instance WHERE dag_id = :dag AND task_id = 'train'")
    while not done.wait(0.5):
        with meta.begin() as conn:
            state = conn.execute(query, {"dag": RETRAIN}).scalar()
            if state != "up_for_retry":
                continue
            seen.append(state)
            registry.up()
            conn.execute(
                sa.text(
                    "UPDATE task_instance SET end_date = end_date - interval '1 hour' "
                    "WHERE dag_id = :dag AND task_id = 'train'"
                ),
                {"dag": RETRAIN},
            )
            return


@pytest.fixture
def registry(registry_up: Stack) -> Iterator[TcpProxy]:
    """A relay to the MLflow server: the tasks' registry URL, which the test can cut."""
    relay = TcpProxy(registry_up.mlflow.port)
    relay.up()
    yield relay
    relay.down()


def test_dags_run_with_the_airflow_metadata_db_on_postgres(
    registry_up: Stack, registry: TcpProxy, tmp_path: Path
) -> None:
    stack = registry_up
    work = make_project(tmp_path)
    meta_url = stack.new_db("airflow")
    store_url = stack.new_db("afstore")
    env = airflow_env(work, free_port())
    env.update(
        {
            k: v
            for k, v in stack.env(work, store_url, MODEL).items()
            if k.startswith(("RAINCAST_", "MLFLOW_", "AWS_"))
        },
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=meta_url,
        RAINCAST_SOURCE="replay:replay.csv",
        RAINCAST_MLFLOW_TRACKING_URI=registry.url,
        RAINCAST_TASK_RETRIES="1",
    )
    local_airflow.prepare(env)  # `airflow db migrate` + the DVC pool, on PostgreSQL
    history_end = (LAST - timedelta(days=2)).isoformat()
    for cmd in (
        ["fetch", "--source", "replay:replay.csv", "--date", history_end, "--start", str(FIRST)],
        ["validate", "--date", history_end],
    ):
        out = run([str(BIN / "raincast"), *cmd], work, env)
        assert out.returncode == 0, out.stdout + out.stderr
    rows_before = store.count_rows(store.connect(store_url))

    day = (LAST - timedelta(days=1)).isoformat()
    airflow = str(BIN / "airflow")
    update = run([airflow, "dags", "test", UPDATE, day], work, env, timeout=600)
    assert update.returncode == 0, update.stdout[-4000:] + update.stderr[-4000:]

    meta = sa.create_engine(meta_url)
    assert meta.dialect.name == "postgresql"
    assert not (Path(env["AIRFLOW_HOME"]) / "airflow.db").exists()  # no SQLite fallback
    runs = _rows(meta, f"SELECT state, logical_date FROM dag_run WHERE dag_id = '{UPDATE}'")
    assert [r.state for r in runs] == ["success"], runs
    assert runs[0].logical_date.date() == date.fromisoformat(day)
    tis = _rows(
        meta, f"SELECT task_id, state FROM task_instance WHERE dag_id = '{UPDATE}' ORDER BY 1"
    )
    assert [(t.task_id, t.state) for t in tis] == [("fetch", "success"), ("validate", "success")]
    events = _rows(
        meta,
        "SELECT a.uri, e.source_dag_id, e.source_task_id FROM asset_event e "
        "JOIN asset a ON a.id = e.asset_id",
    )
    assert [tuple(e) for e in events] == [(ASSET_URI, UPDATE, "validate")], events
    # The event queued the consumer DAG: a scheduler would start weather_retrain from this.
    queued = _rows(meta, "SELECT target_dag_id FROM asset_dag_run_queue")
    assert {q.target_dag_id for q in queued} >= {RETRAIN}, queued
    assert store.count_rows(store.connect(store_url)) == rows_before + 6  # one day, 6 stations

    registry.down()
    done, seen = threading.Event(), []  # type: ignore[var-annotated]
    watcher = threading.Thread(
        target=_retry_train_once_registry_is_back, args=(meta, registry, done, seen), daemon=True
    )
    watcher.start()
    try:
        retrain = run([airflow, "dags", "test", RETRAIN], work, env, timeout=600)
    finally:
        done.set()
        watcher.join(timeout=10)
        registry.up()
    text = retrain.stdout + retrain.stderr
    assert retrain.returncode == 0, text[-6000:]
    assert seen == ["up_for_retry"], "train never failed: the registry outage did not bite"
    assert "nothing registered" in text, text[-6000:]  # try 1's own message, in the task log
    runs = _rows(meta, f"SELECT state FROM dag_run WHERE dag_id = '{RETRAIN}'")
    assert [r.state for r in runs] == ["success"], runs
    tis = _rows(
        meta,
        f"SELECT task_id, state, try_number FROM task_instance WHERE dag_id = '{RETRAIN}'",
    )
    states = {t.task_id: (t.state, t.try_number) for t in tis}
    assert {"due", "train", "promote"} <= set(states), states
    assert {s for s, _ in states.values()} == {"success"}, states
    assert states["train"][1] == 2, states  # Airflow's retry, not a second run
    history = _rows(
        meta,
        "SELECT state, try_number FROM task_instance_history "
        f"WHERE dag_id = '{RETRAIN}' AND task_id = 'train'",
    )
    assert [(h.state, h.try_number) for h in history] == [("failed", 1)], history  # try 1
    client = MlflowClient(tracking_uri=stack.mlflow.url, registry_uri=stack.mlflow.url)
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"]  # the failed try registered nothing
    assert alias_version(client, MODEL, "champion") == "1"
    meta.dispose()
