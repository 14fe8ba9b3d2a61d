"""Docker mode: the same DAGs build DockerOperators (no Docker daemon needed to build them)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "dags"))

DOCKER_ENV = {
    "RAINCAST_TASK_RUNNER": "docker",
    "RAINCAST_HOST_PROJECT_DIR": "/srv/raincast",
    "RAINCAST_TRAINER_IMAGE": "registry.example/raincast-trainer:1.2.3",
    "RAINCAST_DOCKER_NETWORK": "raincast_net",
    "RAINCAST_DATA_VOLUME": "raincast_data",
    "RAINCAST_HOST_SOURCES_DIR": "/srv/weather-files",
    "RAINCAST_TASK_LABEL": "prod-eu",
    # The Airflow image has no checkout: nothing may depend on reading the project at parse time.
    "RAINCAST_PROJECT_DIR": "/nonexistent/raincast",
    "RAINCAST_SOURCE": "openmeteo",
    "RAINCAST_STORE_URL": "postgresql+psycopg2://raincast:s3cret@postgres/raincast",
    "AWS_SECRET_ACCESS_KEY": "minio-secret",
}


@pytest.fixture(scope="module")
def dagbag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    saved = os.environ.copy()
    os.environ.update(DOCKER_ENV)
    try:
        bag = DagBag(dag_folder=str(REPO / "dags"), safe_mode=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert bag.import_errors == {}
    return bag


def test_every_task_is_a_docker_operator_with_the_trainer_image(dagbag) -> None:  # type: ignore[no-untyped-def]
    from airflow.providers.docker.operators.docker import DockerOperator

    tasks = [t for d in dagbag.dags.values() for t in d.tasks]
    assert len(tasks) >= 10
    for t in tasks:
        assert isinstance(t, DockerOperator), t.task_id
        assert t.image == DOCKER_ENV["RAINCAST_TRAINER_IMAGE"]
        assert t.network_mode == "raincast_net"
        assert t.mount_tmp_dir is False
        assert t.auto_remove == "success"
        assert t.working_dir == "/app"
        mounts = {m["Target"]: (m["Source"], m["Type"], m["ReadOnly"]) for m in t.mounts}
        assert mounts == {
            "/app": ("/srv/raincast", "bind", False),
            "/app/data": ("raincast_data", "volume", False),
            "/srv/raincast/sources": ("/srv/weather-files", "bind", True),
        }
        assert t.environment["RAINCAST_RUN_ID"] == "{{ run_id }}"
        # A runaway step is stopped by its own limit, and a stack finds its own containers.
        assert t.mem_limit == "4g"
        assert t.labels == {"io.raincast.stack": "prod-eu", "io.raincast.task": t.task_id}


def test_retrain_builds_every_dvc_stage_without_reading_dvc_yaml(dagbag) -> None:  # type: ignore[no-untyped-def]
    """The DAG processor's image has no checkout (RAINCAST_PROJECT_DIR points nowhere): the
    retrain DAG must still have every stage, not silently fewer (a missing drift task made
    `train` fail on a missing drift.json)."""
    import yaml

    stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    ids = [t.task_id for t in dagbag.dags["weather_retrain"].topological_sort()]
    assert ids == ["due", *stages, "push", "promote"]


def test_same_task_ids_and_commands_as_local_mode(dagbag) -> None:  # type: ignore[no-untyped-def]
    update = dagbag.dags["weather_data_update"]
    fetch = update.get_task("fetch")
    assert fetch.command[:3] == ["raincast", "fetch", "--date"]
    assert "logical_date" in fetch.command[3]
    assert fetch.command[4:6] == ["--source", "openmeteo"]
    assert "params.load_history" in fetch.command[6]
    retrain = dagbag.dags["weather_retrain"]
    assert retrain.get_task("train").command == [
        "raincast", "dvc", "repro", "--single-item", "train"
    ]  # fmt: skip
    assert retrain.get_task("promote").command == ["raincast", "promote"]
    assert retrain.get_task("due").skip_on_exit_code == {99} or retrain.get_task(
        "due"
    ).skip_on_exit_code == [99]


def test_secrets_go_to_private_environment_only(dagbag) -> None:  # type: ignore[no-untyped-def]
    t = dagbag.dags["weather_retrain"].get_task("train")
    assert t._private_environment["RAINCAST_STORE_URL"].endswith("@postgres/raincast")
    assert t._private_environment["AWS_SECRET_ACCESS_KEY"] == "minio-secret"
    assert "RAINCAST_STORE_URL" not in t.environment
    assert "AWS_SECRET_ACCESS_KEY" not in t.environment
    assert "private_environment" not in t.template_fields
