"""Logs, traces and Airflow metrics configuration (Loki, Promtail, Tempo, the OpenTelemetry
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
#: Go reference-time layout tokens used in promtail.yml -> strptime.
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


def _stages(job: dict[str, Any], kind: str) -> list[Any]:
    return [stage[kind] for stage in job["pipeline_stages"] if kind in stage]


# --- promtail / loki ------------------------------------------------------------------------


def test_promtail_ships_raincast_files_to_loki_with_few_labels() -> None:
    config = _load("promtail.yml")
    assert [c["url"] for c in config["clients"]] == ["http://loki:3100/loki/api/v1/push"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (static,) = jobs["raincast-files"]["static_configs"]
    assert static["labels"] == {"job": "raincast", "__path__": "/var/log/raincast/*.log"}
    for job in jobs.values():
        labels = set(static["labels"]) if job is jobs["raincast-files"] else set()
        labels |= {r["target_label"] for r in job.get("relabel_configs", [])}
        for stage in _stages(job, "labels"):
            labels |= set(stage)
        assert labels - {"__path__"} <= {"job", "service", "level"}, job["job_name"]


def test_promtail_parses_the_pipelines_json_log_line() -> None:
    """A real line from raincast's JsonFormatter goes through the json, timestamp, labels
    and structured_metadata stages: level becomes a label, trace_id does not."""
    from raincast.monitoring.jobs import JsonFormatter

    record = logging.LogRecord("raincast.cli", logging.WARNING, __file__, 1, "hi", None, None)
    line = json.loads(JsonFormatter().format(record))
    jobs = {job["job_name"]: job for job in _load("promtail.yml")["scrape_configs"]}
    for job in jobs.values():
        (fields,) = _stages(job, "json")
        extracted = {name: line[key] for name, key in fields["expressions"].items()}
        assert extracted["level"] == "WARNING" and "trace_id" in extracted
        (stamp,) = _stages(job, "timestamp")
        layout = stamp["format"]
        for go, py in GO_LAYOUT.items():
            layout = layout.replace(go, py)
        datetime.strptime(extracted[stamp["source"]], layout)  # raises if the layout drifts
        labelled = {name for stage in _stages(job, "labels") for name in stage}
        assert "level" in labelled and "trace_id" not in labelled, job["job_name"]
        assert [list(s) for s in _stages(job, "structured_metadata")] == [["trace_id"]]


def test_promtail_names_the_service_after_the_log_file() -> None:
    jobs = {job["job_name"]: job for job in _load("promtail.yml")["scrape_configs"]}
    (regex,) = _stages(jobs["raincast-files"], "regex")
    match = re.search(regex["expression"], "/var/log/raincast/api.log")
    assert match and match["service"] == "api"
    assert not re.search(regex["expression"], "/var/log/other/api.log")


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
