"""The stack test's own stand-ins (deploy/standins), run outside Docker: the S3 server's
persistence across a kill, the statsd_exporter replacement's mapping, the nginx 1.22 config
variant. `make test-stack` runs them inside the compose stack; these pin their behaviour."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from testbed.stack.engine import nginx_conf_for_debian

from tests.helpers import free_port, wait_until
from tests.observability.promql import dashboard_exprs, metric_names

REPO = Path(__file__).resolve().parents[2]
STANDINS = REPO / "deploy" / "standins"


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- S3 (moto + a replayed request log) ---------------------------------------------------


def _start_s3(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, str(STANDINS / "s3-server.py"), "--port", str(port), "--data", str(data)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_until("the S3 stand-in", lambda: "listening" in log.read_text(), timeout=60, log=log)
    return proc


def _client(port: int):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    )


@pytest.mark.slow
def test_s3_standin_keeps_buckets_and_objects_across_a_kill(tmp_path: Path) -> None:
    """What `docker compose down`/`up` and a killed MinIO container need: a multipart
    upload (MLflow and DVC send large files that way) survives SIGKILL byte for byte."""
    port = free_port()
    big = os.urandom(9 * 1024 * 1024)  # above boto3's 8 MiB multipart threshold
    (tmp_path / "big.bin").write_bytes(big)
    proc = _start_s3(tmp_path / "data", port, tmp_path / "first.log")
    try:
        s3 = _client(port)
        s3.create_bucket(Bucket="mlflow")
        s3.put_object(Bucket="mlflow", Key="runs/1/MLmodel", Body=b"flavors: {}\n")
        s3.upload_file(str(tmp_path / "big.bin"), "mlflow", "runs/1/model.ubj")
        s3.delete_object(Bucket="mlflow", Key="runs/1/MLmodel")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    proc = _start_s3(tmp_path / "data", port, tmp_path / "second.log")
    try:
        assert "replayed 7 requests" in (tmp_path / "second.log").read_text()
        s3 = _client(port)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow").get("Contents", [])]
        assert keys == ["runs/1/model.ubj"]  # the delete was replayed too
        assert s3.get_object(Bucket="mlflow", Key="runs/1/model.ubj")["Body"].read() == big
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_s3_standin_starts_empty_without_a_log(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "s3.log"
    proc = _start_s3(tmp_path / "data", port, log)
    try:
        assert _client(port).list_buckets()["Buckets"] == []
        assert "replayed" not in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


# --- statsd_exporter ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def statsd():  # type: ignore[no-untyped-def]
    from prometheus_client import CollectorRegistry

    module = _module("statsd_standin", STANDINS / "statsd-exporter.py")
    registry = CollectorRegistry()
    mappings = module.load_mappings(str(REPO / "observability" / "statsd-mapping.yml"))
    return module.Exporter(mappings, registry), registry


def test_statsd_standin_maps_airflow_names_the_dashboards_query(statsd) -> None:  # type: ignore[no-untyped-def]
    import json

    from prometheus_client import generate_latest

    exporter, registry = statsd
    for line in (
        "airflow.dagrun.duration.success.weather_retrain:120000|ms",
        "airflow.ti.finish.weather_retrain.train.success:1|c",
        "airflow.dag_processing.import_errors:0|g",
        "airflow.serde.load_serializers:3|ms",  # unmapped, no labels
        "airflow.pool.open_slots.raincast_dvc:1|g",
        "not a statsd line",
    ):
        exporter.handle(line)
    text = generate_latest(registry).decode()
    assert (
        'airflow_dagrun_duration_seconds_sum{dag_id="weather_retrain",status="success"} 120.0'
        in text
    )
    assert (
        'airflow_ti_finish_total{dag_id="weather_retrain",state="success",task_id="train"}' in text
    )
    assert 'airflow_pool_open_slots{pool="raincast_dvc"} 1.0' in text
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    wanted = {
        name
        for board in (REPO / "dashboards").glob("*.json")
        for _, expr in dashboard_exprs(json.loads(board.read_text()))
        for name in metric_names(expr)
        if name.startswith("airflow_")
    }
    assert wanted and wanted <= exported


def test_statsd_standin_drops_a_type_clash_instead_of_dying(statsd) -> None:  # type: ignore[no-untyped-def]
    exporter, _ = statsd
    exporter.handle("airflow.clash:1|c")
    with pytest.raises(ValueError):  # main() logs and drops it; the exporter stays up
        exporter.handle("airflow.clash:1|ms")


# --- nginx 1.22 -------------------------------------------------------------------------------


def test_nginx_variant_drops_resolve_and_parks_the_absent_grafana() -> None:
    original = (REPO / "nginx.conf").read_text()
    assert " resolve;" in original  # the production file keeps runtime re-resolution
    variant = nginx_conf_for_debian(original)
    assert " resolve;" not in variant
    assert "server 127.0.0.1:9 down;" in variant and "grafana:3000" not in variant
    assert variant.count("server api:3000;") == 1
