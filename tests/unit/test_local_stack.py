"""`make up`'s pure parts: the UI command it runs and the "where to look first" list."""

from __future__ import annotations

import shlex
from pathlib import Path

from raincast import local_stack
from raincast.settings import Settings

PORTS = local_stack.Ports.from_settings(
    Settings(mlflow_port=5100, airflow_port=8180, api_port=3100, ui_port=8601)
)


def test_the_ui_runs_for_viewers_without_a_deploy_button(tmp_path: Path) -> None:
    text, _ = local_stack.procfile(Settings(project_dir=tmp_path, home=tmp_path / "var"), PORTS)
    (ui,) = [line for line in text.splitlines() if line.startswith("ui: ")]
    args = shlex.split(ui.removeprefix("ui: "))
    assert args[1:3] == ["run", "src/raincast/ui/app.py"]
    flags = dict(zip(args[3::2], args[4::2], strict=True))
    assert flags["--client.toolbarMode"] == "viewer"  # no Deploy button, no developer menu
    assert flags["--server.port"] == "8601" and flags["--server.address"] == "127.0.0.1"
    assert flags["--browser.gatherUsageStats"] == "false"


def test_where_to_look_starts_with_the_monitor_page_and_names_each_login(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    values = local_stack.ensure_secrets(env_file)
    pointers = local_stack.where_to_look(PORTS, {}, env_file)
    assert [(p.name, p.url) for p in pointers] == [
        ("Monitor", "http://127.0.0.1:8601/?page=Monitor"),
        ("UI", "http://127.0.0.1:8601"),
        ("API docs", "http://127.0.0.1:3100/api/docs"),
        ("MLflow", "http://127.0.0.1:5100"),
        ("Airflow", "http://127.0.0.1:8180"),
    ]
    logins = {p.name: p.login for p in pointers}
    assert logins["Monitor"] == f"admin / RAINCAST_API_ADMIN_PASSWORD in {env_file}"
    assert logins["Airflow"] == f"admin / RAINCAST_AIRFLOW_PASSWORD in {env_file}"
    printed = " ".join(f"{p.url} {p.shows} {p.login}" for p in pointers)
    assert not [k for k in local_stack.SECRETS if values[k] in printed]  # where, never what


def test_where_to_look_lists_prometheus_only_when_it_runs() -> None:
    urls = {"prometheus": "http://127.0.0.1:9190/-/ready", "api": "http://127.0.0.1:3100/livez"}
    pointers = local_stack.where_to_look(PORTS, urls, Path(".env"))
    assert [p.name for p in pointers][-2:] == ["Airflow", "Prometheus"]
    assert pointers[-1].url == "http://127.0.0.1:9190"
    assert [p.name for p in local_stack.where_to_look(PORTS, {}, Path(".env"))][-1] == "Airflow"


def test_ports_come_from_the_settings() -> None:
    ports = local_stack.Ports.from_settings(Settings(api_port=3100, pushgateway_port=9191))
    assert (ports.api, ports.pushgateway, ports.mlflow) == (3100, 9191, 5000)
