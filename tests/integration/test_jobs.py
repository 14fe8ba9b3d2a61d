"""Batch-job observability: span per step (in-memory exporter), JSON logs with the trace
id, and Pushgateway pushes against a real `prometheus-pushgateway` on loopback."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from raincast.monitoring import jobs
from tests.helpers import free_port, wait_until

EXPORTER = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(_provider)


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    binary = shutil.which("prometheus-pushgateway")
    if not binary:
        pytest.skip("prometheus-pushgateway not installed (make system-deps installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            "pushgateway", lambda: urllib.request.urlopen(url + "/-/ready").status == 200, 30
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _scrape(url: str) -> str:
    return urllib.request.urlopen(url + "/metrics").read().decode()


def test_metric_names_must_carry_the_prefix() -> None:
    with pytest.raises(ValueError, match="raincast_ prefix"):
        jobs.record("rows_accepted", 1)


def test_success_pushes_values_and_last_success(gateway: str) -> None:
    before = time.time()
    with jobs.job("validate", pushgateway_url=gateway):
        jobs.record("raincast_rows_accepted", 47)
        jobs.record("raincast_live_f1", 0.61, window="7d")
    text = _scrape(gateway)
    after = time.time()
    assert 'raincast_rows_accepted{instance="",job="validate"} 47' in text
    assert 'raincast_live_f1{instance="",job="validate",window="7d"} 0.61' in text
    stamp = next(
        ln
        for ln in text.splitlines()
        if ln.startswith('raincast_job_last_success_timestamp_seconds{instance="",job="validate"}')
    )
    # Bracketed by wall-clock reads around the push (this VM's clock can jump).
    assert before - 1 <= float(stamp.split()[-1]) <= after + 1


def test_failure_keeps_the_last_success_visible(gateway: str) -> None:
    with jobs.job("fetch", pushgateway_url=gateway):
        pass
    with pytest.raises(RuntimeError), jobs.job("fetch", pushgateway_url=gateway):
        raise RuntimeError("source down")
    text = _scrape(gateway)
    assert 'raincast_job_last_success_timestamp_seconds{instance="",job="fetch"}' in text
    assert 'raincast_job_last_failure_timestamp_seconds{instance="",job="fetch"}' in text


def test_unreachable_gateway_never_fails_the_job(caplog) -> None:  # type: ignore[no-untyped-def]
    unreachable = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING), jobs.job("process", pushgateway_url=unreachable):
        jobs.record("raincast_rows_fetched", 3)
    assert "not pushed" in caplog.text


def test_each_step_is_a_span_and_json_logs_carry_its_trace_id(capsys) -> None:  # type: ignore[no-untyped-def]
    jobs.configure_logging("INFO", "json")
    EXPORTER.clear()
    with jobs.job("train", run_id="manual__2026-01-01"):
        logging.getLogger("raincast.test").info("training")
    span = EXPORTER.get_finished_spans()[-1]
    assert span.name == "raincast.train"
    assert span.attributes["raincast.run_id"] == "manual__2026-01-01"
    assert span.attributes["raincast.ok"] is True
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["msg"] == "training"
    assert line["trace_id"] == format(span.context.trace_id, "032x")
    logging.getLogger().handlers.clear()
