"""Prometheus sees what raincast exports: a real Prometheus scrapes the real API (`api`
fixture) and a real Pushgateway every second, with the real alert rules loaded, and its
query API returns the prediction counter after a prediction and a batch job's pushed
success timestamp after a push."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port, http_status, wait_until

from .conftest import Api, start, stop

pytestmark = pytest.mark.slow

ALERTS = Path(__file__).resolve().parents[2] / "observability" / "alerts.yml"
PUSHGATEWAY_BIN = "prometheus-pushgateway"
PROMETHEUS_BIN = "prometheus"
#: BentoML's own request metrics that alerts.yml and dashboards/serving.json rely on.
BENTOML_FAMILIES = {
    "bentoml_service_request_duration_seconds",
    "bentoml_service_request_total",
    "bentoml_service_request_in_progress",
}
ROW = {"Date": "2021-03-03", "Location": "Sydney", "Rainfall": 6.2, "RainToday": "Yes"}


@dataclass
class Monitoring:
    prometheus: str
    pushgateway: str
    pushgateway_address: str


def _binaries() -> tuple[str, str]:
    found = shutil.which(PROMETHEUS_BIN), shutil.which(PUSHGATEWAY_BIN)
    if not all(found):
        pytest.skip(
            f"needs the `{PROMETHEUS_BIN}` and `{PUSHGATEWAY_BIN}` binaries "
            "(Debian packages prometheus, prometheus-pushgateway: `make system-deps`)"
        )
    return found  # type: ignore[return-value]


@pytest.fixture(scope="module")
def monitoring(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    """A Pushgateway and a Prometheus (1 s scrapes of the API and the Pushgateway, 1 s rule
    evaluation of observability/alerts.yml) on free loopback ports; both stopped after."""
    prometheus_bin, pushgateway_bin = _binaries()
    tmp_path = tmp_path_factory.mktemp("monitoring")
    api_address = urllib.parse.urlparse(api.url).netloc
    push_port, prom_port = free_port(), free_port()
    push_address = f"127.0.0.1:{push_port}"
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": "raincast-api", "static_configs": [{"targets": [api_address]}]},
            {
                "job_name": "pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [push_address]}],
            },
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    procs = []
    try:
        procs.append(
            start(
                [pushgateway_bin, f"--web.listen-address={push_address}"],
                api.env,
                tmp_path,
                tmp_path / "pushgateway.log",
            )
        )
        procs.append(
            start(
                [
                    prometheus_bin,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                api.env,
                tmp_path,
                tmp_path / "prometheus.log",
            )
        )
        push_url, prom_url = f"http://{push_address}", f"http://127.0.0.1:{prom_port}"
        wait_until(
            "the Pushgateway",
            lambda: http_status(push_url + "/-/ready") == 200,
            30,
            tmp_path / "pushgateway.log",
        )
        wait_until(
            "Prometheus",
            lambda: http_status(prom_url + "/-/ready") == 200,
            60,
            tmp_path / "prometheus.log",
        )
        yield Monitoring(prom_url, push_url, push_address)
    finally:
        for proc in reversed(procs):
            stop(proc)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    body = _get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _poll(prom: str, expr: str, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = _query(prom, expr)
        if result:
            return result
        time.sleep(0.5)
    targets = _get(f"{prom}/api/v1/targets")["data"]["activeTargets"]
    health = [(t["labels"].get("job"), t["health"], t["lastError"]) for t in targets]
    raise AssertionError(f"no samples for {expr!r} after {timeout:.0f} s; targets: {health}")


def _api_predictions(api: Api) -> dict[str, float]:
    """raincast_predictions_total by label, straight from the API's /metrics."""
    status, _, text = api.call("GET", "/metrics")
    assert status == 200
    return {
        sample.labels["label"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "raincast_predictions_total"
    }


def test_api_metrics_use_the_bentoml_names_the_rules_rely_on(api: Api) -> None:
    status, _, text = api.call("GET", "/metrics")
    assert status == 200
    families = {f.name for f in text_string_to_metric_families(text)}
    print("metric families on the API's /metrics:", sorted(families))
    # prometheus_client reports counters without their _total suffix.
    assert families >= {n.removesuffix("_total") for n in BENTOML_FAMILIES}, sorted(families)


def test_prometheus_scrapes_predictions_and_pushed_job_metrics(
    api: Api, monitoring: Monitoring
) -> None:
    prom = monitoring.prometheus
    token = api.token("bob-user")
    before = _api_predictions(api)
    status, _, body = api.call("POST", "/predict", {"rows": [ROW, ROW]}, token)
    assert status == 200, body
    label = body["predictions"][0]["label"]
    expected = before.get(label, 0) + 2

    pushed_at = time.time()
    registry = CollectorRegistry()
    Gauge(
        "raincast_job_last_success_timestamp_seconds",
        "Unix time of the last successful run",
        registry=registry,
    ).set(pushed_at)
    push_to_gateway(monitoring.pushgateway_address, job="validate", registry=registry)

    # Earlier tests may have predicted too: wait for a scrape that includes these two rows.
    counted = f'raincast_predictions_total{{job="raincast-api", label="{label}"}} >= {expected}'
    assert _poll(prom, counted), _api_predictions(api)

    pushed = _poll(prom, 'raincast_job_last_success_timestamp_seconds{job="validate"}')
    assert len(pushed) == 1, pushed  # honor_labels kept job="validate", not "pushgateway"
    assert float(pushed[0]["value"][1]) == pytest.approx(pushed_at, abs=1e-3)

    # The selectors alerts.yml and the serving dashboard use return data.
    assert _poll(
        prom,
        'bentoml_service_request_total{job="raincast-api", endpoint="/predict", '
        'http_response_code="200"}',
    )
    assert _poll(prom, 'bentoml_service_request_duration_seconds_bucket{job="raincast-api"}')
    up = {s["metric"]["job"]: s["value"][1] for s in _query(prom, "up")}
    assert up == {"raincast-api": "1", "pushgateway": "1"}, up


def test_a_pipeline_push_lands_with_the_labels_the_alerts_select(
    monitoring: Monitoring, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline's own push (`raincast.monitoring.jobs`), not a hand-made one."""
    from raincast.monitoring import jobs

    monkeypatch.setattr(jobs, "_values", [])  # this test's values only, none left behind
    jobs.record("raincast_live_roc_auc", 0.81, window="30d")
    jobs.record("raincast_live_scored_rows", 420, window="30d")
    assert jobs.push("score", 1.5, ok=True, url=monitoring.pushgateway)

    auc = _poll(monitoring.prometheus, 'raincast_live_roc_auc{job="score", window="30d"}')
    assert [float(s["value"][1]) for s in auc] == [0.81]
    rows = _poll(monitoring.prometheus, 'raincast_live_scored_rows{job="score", window="30d"}')
    assert [float(s["value"][1]) for s in rows] == [420]
    assert _poll(monitoring.prometheus, 'raincast_job_last_success_timestamp_seconds{job="score"}')


def test_alert_rules_evaluate_cleanly_against_live_data(monitoring: Monitoring) -> None:
    """Loaded into a real Prometheus that holds the data of the test above, every rule of
    alerts.yml evaluates without an error (e.g. no many-to-many matching on real labels)."""

    def rules() -> list[dict[str, Any]]:
        groups = _get(f"{monitoring.prometheus}/api/v1/rules")["data"]["groups"]
        return [r for g in groups for r in g["rules"]]

    wait_until(
        "every rule to be evaluated",
        lambda: bool(rules()) and all(r["health"] != "unknown" for r in rules()),
        30,
    )
    loaded = rules()
    expected = yaml.safe_load(ALERTS.read_text())["groups"]
    assert {r["name"] for r in loaded} == {r["alert"] for g in expected for r in g["rules"]}
    assert [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"] == []
