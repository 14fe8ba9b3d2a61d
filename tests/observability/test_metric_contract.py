"""Dashboards and alerts only query metrics that exist: every metric name in a PromQL
expression of `dashboards/*.json` or `observability/alerts.yml` is either exported by
raincast (a ``raincast_*`` string literal in `src/raincast`) or comes from a known exporter.
A renamed metric in the code breaks this test instead of silently emptying a panel."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

from .promql import dashboard_exprs, metric_names

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "raincast"
DASHBOARDS = ROOT / "dashboards"
ALERTS = ROOT / "observability" / "alerts.yml"

RAINCAST_NAME = re.compile(r"raincast_[a-z0-9_]+")
#: Metrics of other exporters: BentoML, statsd-exporter (Airflow), postgres-exporter, MinIO,
#: Prometheus and client libraries, the Pushgateway.
EXPORTER_PREFIXES = ("bentoml_", "airflow_", "pg_", "minio_", "prometheus_", "process_", "go_")
EXPORTER_NAMES = frozenset({"up", "push_time_seconds", "push_failure_time_seconds"})
#: Series a histogram / summary exposes beside its name.
SERIES_SUFFIXES = {"Histogram": ("_bucket", "_sum", "_count"), "Summary": ("_sum", "_count")}


def _series_suffixes(node: ast.Call) -> tuple[str, tuple[str, ...]] | None:
    """(name, suffixes) when ``node`` declares a histogram or summary with a literal name."""
    func = node.func
    kind = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if kind not in SERIES_SUFFIXES:
        return None
    for arg in [kw.value for kw in node.keywords if kw.arg == "name"] + node.args[:1]:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value, SERIES_SUFFIXES[kind]
    return None


def exported_names(src: Path) -> set[str]:
    """``raincast_*`` names that appear as whole string literals in the package's code,
    plus the ``_bucket``/``_sum``/``_count`` series of those declared as histograms."""
    names: set[str] = set()
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if RAINCAST_NAME.fullmatch(node.value):
                    names.add(node.value)
            elif isinstance(node, ast.Call) and (declared := _series_suffixes(node)):
                name, suffixes = declared
                if RAINCAST_NAME.fullmatch(name):
                    names.update(name + suffix for suffix in suffixes)
    return names


def unknown_names(names: Iterable[str], exported: set[str]) -> set[str]:
    """The names neither exported by raincast nor owned by a known exporter."""
    return {
        name
        for name in names
        if name not in exported
        and name not in EXPORTER_NAMES
        and not name.startswith(EXPORTER_PREFIXES)
    }


def all_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert/recording rule and every dashboard target."""
    found = [
        (f"alerts.yml: {rule.get('alert') or rule.get('record')}", str(rule["expr"]))
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    ]
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        found += [(f"{path.name}: {title}", expr) for title, expr in dashboard_exprs(board)]
    return found


# --- the extractor itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="raincast-api"} == 0', {"up"}),
        (
            "histogram_quantile(0.99, sum by (le, endpoint) "
            '(rate(bentoml_service_request_duration_seconds_bucket{endpoint!~"/metrics"}[5m])))'
            " > 0.25",
            {"bentoml_service_request_duration_seconds_bucket"},
        ),
        (
            'time() - raincast_job_last_success_timestamp_seconds{job="validate"} > 26 * 3600',
            {"raincast_job_last_success_timestamp_seconds"},
        ),
        (
            'raincast_live_roc_auc{window="30d"} < 0.75 unless on (window) '
            'raincast_live_scored_rows{window="30d"} < 1e2',
            {"raincast_live_roc_auc", "raincast_live_scored_rows"},
        ),
        (  # label values and label names that look like metric names are not metrics
            'sum without(raincast_label) (rate(raincast_a_total{job="raincast_b_total"}'
            "[$__rate_interval])) / ignoring(instance) group_left(version) raincast_model_info",
            {"raincast_a_total", "raincast_model_info"},
        ),
        (
            "sum(raincast_rows_quarantined) by (job) / sum(raincast_rows_accepted) by (job)",
            {"raincast_rows_quarantined", "raincast_rows_accepted"},
        ),
        ('{__name__="raincast_by_name"} offset 5m', {"raincast_by_name"}),
        ("max(raincast_drift_share) or vector(0)", {"raincast_drift_share"}),
        ("time()", set()),
    ],
)
def test_metric_names_are_extracted_without_functions_labels_or_values(
    expr: str, names: set[str]
) -> None:
    assert metric_names(expr) == names


def test_exported_names_are_string_literals_of_the_code(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        '"""Docstring naming raincast_in_docstring."""\n'
        "# raincast_in_comment\n"
        'C = Counter("raincast_widgets_total", "Widgets")\n'
        'NAMES = {"g": "raincast_gadget_seconds"}\n'
        'PREFIX = "raincast_"\n'
        'H = metrics.Histogram(name="raincast_wait_seconds", documentation="Wait")\n'
        'S = Summary("raincast_size_bytes", "Size")\n'
    )
    assert exported_names(tmp_path) == {
        "raincast_widgets_total",
        "raincast_gadget_seconds",
        *(f"raincast_wait_seconds{s}" for s in ("", "_bucket", "_sum", "_count")),
        *(f"raincast_size_bytes{s}" for s in ("", "_sum", "_count")),
    }
    # and in the real package: the API's metrics (src/raincast/serving/metrics.py)
    assert {
        "raincast_predictions_total",
        "raincast_prediction_probability_bucket",
    } <= exported_names(SRC)


def test_the_checker_flags_unknown_names() -> None:
    exported = {
        "raincast_predictions_total",
        *(f"raincast_prediction_probability{s}" for s in ("", "_bucket", "_sum", "_count")),
    }
    names = {
        "raincast_predictions_total",
        "raincast_prediction_probability_bucket",  # histogram series of an exported name
        "bentoml_service_request_total",
        "up",
        "push_time_seconds",
        "raincast_made_up_total",  # a typo or a metric nobody exports
        "raincast_predictions_total_bucket",  # a counter has no buckets
        "node_cpu_seconds_total",  # an exporter we do not run
    }
    assert unknown_names(names, exported) == {
        "raincast_made_up_total",
        "raincast_predictions_total_bucket",
        "node_cpu_seconds_total",
    }
    board = {"panels": [{"type": "row", "panels": [
        {"title": "ghost", "targets": [{"refId": "A", "expr": "rate(raincast_ghost_total[5m])"}]},
        {"title": "logs", "datasource": {"type": "loki", "uid": "loki"},
         "targets": [{"refId": "A", "expr": '{job="raincast"} |= "error"'}]},
    ]}]}  # fmt: skip
    found = [name for _, expr in dashboard_exprs(board) for name in metric_names(expr)]
    assert unknown_names(found, exported) == {"raincast_ghost_total"}


# --- the contract ---------------------------------------------------------------------------


def test_alerts_and_dashboards_query_only_exported_metrics() -> None:
    exprs = all_exprs()
    assert len(exprs) > 40 and DASHBOARDS.is_dir()
    exported = exported_names(SRC)
    missing: dict[str, list[str]] = {}
    for where, expr in exprs:
        names = metric_names(expr)
        assert names, f"{where}: no metric name found in {expr!r}"
        for name in sorted(unknown_names(names, exported)):
            missing.setdefault(name, []).append(where)
    assert not missing, (
        "metrics queried by alerts/dashboards but exported nowhere in src/raincast "
        "(batch-job metrics belong in src/raincast/observability/push.py):\n"
        + "\n".join(f"  {name}: {', '.join(places)}" for name, places in sorted(missing.items()))
    )
