"""The Prometheus configuration as Prometheus itself reads it: `promtool check config`,
`promtool check rules` and the alert unit tests (`promtool test rules`), plus the scrape
jobs other parts of the stack rely on. Skips when promtool is not installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .promql import dashboard_exprs

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "observability"
#: Grafana's built-in interval variables, replaced by a plausible value before parsing.
GRAFANA_INTERVALS = re.compile(r"\$(?:__rate_interval|__interval|__range)\b|\$\{__\w+\}")
SEVERITIES = {"critical", "warning", "info"}


def promtool(*args: str, cwd: Path = OBS) -> subprocess.CompletedProcess[str]:
    """Run promtool from ``cwd`` (relative rule_files resolve against it)."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not installed (Debian package prometheus: `make system-deps`)")
    return subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def _load(name: str) -> Any:
    return yaml.safe_load((OBS / name).read_text())


def _jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def _targets(job: dict[str, Any]) -> list[str]:
    return [t for sc in job.get("static_configs", []) for t in sc["targets"]]


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load("alerts.yml")["groups"] for rule in group["rules"]]


# --- promtool ------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_promtool_accepts_the_config_and_finds_its_rule_file(config: str) -> None:
    done = promtool("check", "config", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr


def test_promtool_rejects_a_config_whose_rule_file_does_not_resolve(tmp_path: Path) -> None:
    (tmp_path / "prometheus.yml").write_text((OBS / "prometheus.yml").read_text())
    done = promtool("check", "config", "prometheus.yml", cwd=tmp_path)  # no alerts.yml here
    assert done.returncode != 0, done.stdout


def test_promtool_accepts_the_alert_rules() -> None:
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = {"groups": [{"name": "x", "rules": [{"alert": "Broken", "expr": "rate(up[5m]"}]}]}
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(broken))
    done = promtool("check", "rules", "alerts.yml", cwd=tmp_path)
    assert done.returncode != 0, done.stdout


def test_alert_unit_tests_pass() -> None:
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each dashboard target, as a recording rule, through Prometheus' own parser."""
    rules = [
        {"record": f"dashboard:{path.stem}:{i}", "expr": GRAFANA_INTERVALS.sub("5m", expr)}
        for path in sorted((ROOT / "dashboards").glob("*.json"))
        for i, (_, expr) in enumerate(dashboard_exprs(json.loads(path.read_text())))
    ]
    assert len(rules) > 40
    (tmp_path / "queries.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]})
    )
    done = promtool("check", "rules", "queries.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# --- what the rules and their tests must contain ---------------------------------------------


def test_every_alert_has_a_duration_severity_summary_and_description() -> None:
    for rule in _rules():
        assert "alert" in rule, f"recording rules belong in another file: {rule}"
        assert "for" in rule, rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    """promtool passes with untested alerts; this makes a missing test a failure."""
    fires: set[str] = set()
    silent: set[str] = set()
    for case in _load("alerts_test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in _rules()}
    assert alerts - fires == set(), "alerts never shown to fire"
    assert alerts - silent == set(), "alerts never shown to stay silent"


# --- the scrape jobs --------------------------------------------------------------------------


def test_compose_config_scrapes_every_service_by_its_compose_name() -> None:
    config = _load("prometheus.yml")
    jobs = _jobs(config)
    assert config["rule_files"] == ["alerts.yml"]
    assert {name: _targets(job) for name, job in jobs.items()} == {
        "raincast-api": ["api:3000"],
        "pushgateway": ["pushgateway:9091"],
        "airflow": ["statsd-exporter:9102"],
        "postgres": ["postgres-exporter:9187"],
        "minio": ["minio:9000"],
        "prometheus": ["localhost:9090"],
    }
    assert jobs["raincast-api"].get("metrics_path", "/metrics") == "/metrics"
    assert jobs["minio"]["metrics_path"] == "/minio/v2/metrics/cluster"
    # pushed series keep their job=<step> label instead of becoming job="pushgateway"
    assert jobs["pushgateway"]["honor_labels"] is True


def test_local_config_scrapes_the_api_and_pushgateway_on_loopback() -> None:
    config = _load("prometheus.local.yml")
    jobs = _jobs(config)
    assert config["rule_files"] == ["alerts.yml"]
    assert {name: _targets(job) for name, job in jobs.items()} == {
        "raincast-api": ["127.0.0.1:3000"],
        "pushgateway": ["127.0.0.1:9091"],
        "prometheus": ["127.0.0.1:9090"],
    }
    assert jobs["pushgateway"]["honor_labels"] is True
