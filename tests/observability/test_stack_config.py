"""Logs, traces and Airflow metrics configuration (Loki, Alloy, Tempo, the OpenTelemetry
collector, statsd-exporter). None of these binaries runs here, so the tests check the
wiring between the files and against what raincast really emits: the JSON log line of
`raincast.monitoring.jobs`, the airflow_* names the dashboards query."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from .promql import dashboard_exprs, metric_names

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "observability"
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: Go reference-time layout tokens used in alloy.alloy -> strptime.
GO_LAYOUT = {
    "2006": "%Y",
    "01": "%m",
    "02": "%d",
    "15": "%H",
    "04": "%M",
    "05": "%S",
    "-0700": "%z",
}


def _load(name: str) -> Any:
    return yaml.safe_load((OBS / name).read_text())


# --- alloy / loki ---------------------------------------------------------------------------

ALLOY = OBS / "alloy.alloy"
#: `attribute = "value"` inside an Alloy (River) block.
ALLOY_ATTR = re.compile(r'^\s*(?P<key>[a-z_]+)\s*=\s*"(?P<value>[^"]*)"', re.MULTILINE)
#: `key = "value",` entries of an Alloy map literal ({ level = "level", ... }).
ALLOY_MAP_ENTRY = re.compile(r'(?P<key>[a-z_]+)\s*=\s*"(?P<value>[^"]*)"')


def _alloy_blocks(text: str) -> list[tuple[str, str]]:
    """(header, body) of every block, nested ones included: `loki.process "json"` ->
    its body; `stage.json` -> its body; a map literal `values = {...}` -> `values`.
    Braces inside strings do not occur in our file."""
    text = re.sub(r"^\s*//[^\n]*", "", text, flags=re.MULTILINE)
    blocks: list[tuple[str, str]] = []
    stack: list[tuple[str, int]] = []
    for m in re.finditer(r'([A-Za-z_.]+(?:\s+"[^"]*")?)\s*=?\s*\{|\}', text):
        if m.group(0) == "}":
            header, start = stack.pop()
            blocks.append((header, text[start : m.start()]))
        else:
            stack.append((" ".join(m.group(1).split()), m.end()))
    assert not stack, "unbalanced braces in alloy.alloy"
    return blocks


def _alloy(header: str) -> list[str]:
    return [body for head, body in _alloy_blocks(ALLOY.read_text()) if head == header]


def test_alloy_reads_logs_through_the_read_only_proxy_and_ships_to_loki() -> None:
    for header in ('discovery.docker "compose"', 'loki.source.docker "compose"'):
        (body,) = _alloy(header)
        attrs = {m["key"]: m["value"] for m in ALLOY_ATTR.finditer(body)}
        assert attrs["host"] == "tcp://docker-socket-proxy-logs:2375", header
    (write,) = _alloy("endpoint")
    assert {m["key"]: m["value"] for m in ALLOY_ATTR.finditer(write)} == {
        "url": "http://loki:3100/loki/api/v1/push"
    }
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    alloy, proxy = services["alloy"], services["docker-socket-proxy-logs"]
    assert not any("docker.sock" in v for v in alloy.get("volumes", []))
    assert str(proxy["environment"]["POST"]) == "0" and "docker-logs" in proxy["networks"]
    assert set(alloy["networks"]) == {"raincast", "docker-logs"}


def test_alloy_labels_stay_few() -> None:
    labels = {dict(ALLOY_ATTR.findall(body))["target_label"] for body in _alloy("rule")}
    (stage,) = _alloy("stage.labels")
    labels |= {m["key"] for m in ALLOY_MAP_ENTRY.finditer(stage)}
    assert labels == {"job", "service", "level"}


def test_alloy_parses_the_pipelines_json_log_line() -> None:
    """A real line from raincast's JsonFormatter goes through the json, timestamp, labels
    and structured_metadata stages: level becomes a label, trace_id does not."""
    from raincast.monitoring.jobs import JsonFormatter

    record = logging.LogRecord("raincast.cli", logging.WARNING, __file__, 1, "hi", None, None)
    line = json.loads(JsonFormatter().format(record))
    blocks = _alloy_blocks(ALLOY.read_text())
    values = [b for h, b in blocks if h in {"expressions", "values"}]
    fields = {m["key"]: m["value"] for m in ALLOY_MAP_ENTRY.finditer(values[0])}
    extracted = {name: line[key] for name, key in fields.items()}
    assert extracted["level"] == "WARNING" and "trace_id" in extracted
    (stamp,) = _alloy("stage.timestamp")
    attrs = {m["key"]: m["value"] for m in ALLOY_ATTR.finditer(stamp)}
    layout = attrs["format"]
    for go, py in GO_LAYOUT.items():
        layout = layout.replace(go, py)
    datetime.strptime(extracted[attrs["source"]], layout)  # raises if the layout drifts
    labelled = {m["key"] for m in ALLOY_MAP_ENTRY.finditer(values[1])}
    metadata = {m["key"] for m in ALLOY_MAP_ENTRY.finditer(values[2])}
    assert labelled == {"level"} and metadata == {"trace_id"}


def test_loki_keeps_structured_metadata_for_trace_ids() -> None:
    config = _load("loki.yml")
    assert config["server"]["http_listen_port"] == 3100
    assert config["limits_config"]["allow_structured_metadata"] is True
    (schema,) = config["schema_config"]["configs"]
    assert (schema["store"], schema["schema"]) == ("tsdb", "v13")  # needed for metadata


# --- traces ---------------------------------------------------------------------------------


def test_tempo_receives_otlp_and_serves_grafana_on_3200() -> None:
    config = _load("tempo.yml")
    assert config["server"]["http_listen_port"] == 3200
    protocols = config["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_otel_collector_batches_otlp_into_tempo() -> None:
    config = _load("otel-collector.yml")
    protocols = config["receivers"]["otlp"]["protocols"]
    assert set(protocols) == {"grpc", "http"}
    (pipeline,) = config["service"]["pipelines"].values()
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind]), f"undefined {kind}"
    assert pipeline["processors"][-1] == "batch"
    (exporter,) = pipeline["exporters"]
    assert exporter.split("/")[0] == "otlp"
    assert config["exporters"][exporter]["endpoint"] == "tempo:4317"
    assert set(config["service"].get("extensions", [])) <= set(config.get("extensions", {}))


# --- statsd-exporter (Airflow) -----------------------------------------------------------


def _statsd_map(metric: str, mappings: list[dict[str, Any]]) -> tuple[str, dict[str, str]]:
    """What statsd-exporter's glob matching makes of a dotted StatsD name (first match)."""
    for mapping in mappings:
        pattern = "^" + re.escape(mapping["match"]).replace(r"\*", "([^.]+)") + "$"
        if found := re.match(pattern, metric):
            labels = {
                k: re.sub(r"\$(\d+)", lambda m: found.group(int(m.group(1))), v)
                for k, v in mapping.get("labels", {}).items()
            }
            return mapping["name"], labels
    return "", {}


def test_statsd_mappings_are_well_formed() -> None:
    config = _load("statsd-mapping.yml")
    assert config["defaults"]["observer_type"] == "histogram"
    matches = [m["match"] for m in config["mappings"]]
    assert len(set(matches)) == len(matches)
    for mapping in config["mappings"]:
        assert METRIC_NAME.fullmatch(mapping["name"]) and mapping["name"].startswith("airflow_")
        wildcards = mapping["match"].count("*")
        for label, value in mapping.get("labels", {}).items():
            assert LABEL_NAME.fullmatch(label), mapping
            assert all(int(n) <= wildcards for n in re.findall(r"\$(\d+)", str(value))), mapping


def test_statsd_mapping_gives_airflow_metrics_dag_and_task_labels() -> None:
    mappings = _load("statsd-mapping.yml")["mappings"]
    assert _statsd_map("airflow.dagrun.duration.success.raincast_update", mappings) == (
        "airflow_dagrun_duration_seconds",
        {"dag_id": "raincast_update", "status": "success"},
    )
    assert _statsd_map("airflow.dagrun.duration.failed.raincast_retrain", mappings) == (
        "airflow_dagrun_duration_seconds",
        {"dag_id": "raincast_retrain", "status": "failed"},
    )
    assert _statsd_map("airflow.dag.raincast_update.validate.duration", mappings) == (
        "airflow_task_duration_seconds",
        {"dag_id": "raincast_update", "task_id": "validate"},
    )
    assert _statsd_map("airflow.ti.finish.raincast_update.fetch.failed", mappings) == (
        "airflow_ti_finish_total",
        {"dag_id": "raincast_update", "task_id": "fetch", "state": "failed"},
    )
    assert _statsd_map("airflow.something.unmapped", mappings) == ("", {})


def test_dashboards_query_only_airflow_metrics_the_mapping_produces() -> None:
    names = {m["name"] for m in _load("statsd-mapping.yml")["mappings"]}
    produced = names | {n + s for n in names for s in ("_bucket", "_sum", "_count")}
    queried = set()
    for path in (ROOT / "dashboards").glob("*.json"):
        for _, expr in dashboard_exprs(json.loads(path.read_text())):
            queried |= {m for m in metric_names(expr) if m.startswith("airflow_")}
    assert queried and queried <= produced, queried - produced
