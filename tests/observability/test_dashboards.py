"""Grafana provisioning and dashboards: datasources with pinned uids, the file provider, and
dashboards/*.json that Grafana can load (schema, grid, targets) and that show what the
issue asks for. Metric names themselves are checked in test_metric_contract.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from .promql import dashboard_exprs, metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
PROVISIONING = ROOT / "observability" / "grafana" / "provisioning"
BOARDS = sorted(DASHBOARDS.glob("*.json"))
PANEL_TYPES = {"row", "stat", "timeseries", "bargauge", "heatmap", "state-timeline", "table"}

#: Metrics each dashboard must show (the issue's list, as metric names).
REQUIRED = {
    "serving.json": {
        "bentoml_service_request_total",  # request rate, error rate
        "bentoml_service_request_duration_seconds_bucket",  # p50/p95/p99
        "raincast_predictions_total",  # predictions by label
        "raincast_prediction_probability_bucket",  # probability histogram
        "raincast_model_info",  # model version
        "raincast_auth_failures_total",  # auth failures by reason
    },
    "pipeline.json": {
        "raincast_job_last_success_timestamp_seconds",
        "raincast_job_duration_seconds",
        "raincast_rows_fetched",
        "raincast_rows_accepted",
        "raincast_rows_quarantined",
    },
    "model.json": {
        "raincast_model_f1",
        "raincast_model_roc_auc",
        "raincast_live_f1",
        "raincast_live_roc_auc",
        "raincast_live_base_rate",
        "raincast_live_calibration_error",
        "raincast_drift_share",
        "raincast_promotion_promoted",
        "raincast_champion_version",
        "raincast_champion_created_timestamp_seconds",
    },
}


def _datasources() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yml").read_text())
    return {ds["uid"]: ds for ds in doc["datasources"]}


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels of a collapsed row
    return out


def _overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


# --- provisioning ---------------------------------------------------------------------------


def test_datasources_have_pinned_uids_compose_urls_and_trace_log_links() -> None:
    sources = _datasources()
    assert {uid: (ds["type"], ds["url"]) for uid, ds in sources.items()} == {
        "prometheus": ("prometheus", "http://prometheus:9090"),
        "loki": ("loki", "http://loki:3100"),
        "tempo": ("tempo", "http://tempo:3200"),
    }
    assert [uid for uid, ds in sources.items() if ds.get("isDefault")] == ["prometheus"]
    trace_to_logs = sources["tempo"]["jsonData"]["tracesToLogsV2"]
    assert trace_to_logs["datasourceUid"] == "loki"
    assert "${__trace.traceId}" in trace_to_logs["query"].replace("$$", "$")
    derived = sources["loki"]["jsonData"]["derivedFields"]
    assert [f["datasourceUid"] for f in derived] == ["tempo"]


def test_dashboard_provider_reads_the_mounted_dashboards_folder() -> None:
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# --- dashboards -----------------------------------------------------------------------------


def test_the_three_dashboards_exist_with_unique_uids() -> None:
    assert {p.name for p in BOARDS} == set(REQUIRED)
    uids = [json.loads(p.read_text())["uid"] for p in BOARDS]
    assert len(set(uids)) == len(uids) and all(uids)


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_dashboard_is_loadable_grafana_json(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["title"] and 36 <= board["schemaVersion"] <= 41
    uids = set(_datasources())
    panels = _panels(board)
    assert len({p["id"] for p in panels}) == len(panels), "duplicate panel ids"
    placed: list[tuple[str, dict[str, int]]] = []
    for panel in panels:
        title, grid = panel["title"], panel["gridPos"]
        assert panel["type"] in PANEL_TYPES, title
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in "hwxy"), title
        assert grid["w"] >= 1 and grid["x"] + grid["w"] <= 24, title
        for other, other_grid in placed:
            assert not _overlaps(grid, other_grid), f"{title!r} overlaps {other!r}"
        placed.append((title, grid))
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, title
        targets = panel["targets"]
        assert targets, f"{title!r} has no query"
        assert len({t["refId"] for t in targets}) == len(targets), title
        for target in targets:
            assert target["datasource"]["uid"] in uids, title
            assert target["expr"].strip(), title


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_dashboard_shows_what_the_issue_asks_for(name: str) -> None:
    board = json.loads((DASHBOARDS / name).read_text())
    shown = {m for _, expr in dashboard_exprs(board) for m in metric_names(expr)}
    assert REQUIRED[name] - shown == set()
