"""docker-compose.yml: parses with real variables, and keeps the house rules of the
production stack (healthchecks, ordering, profiles, limits, no secrets, one entry point)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    INTERPOLATION,
    REPO,
    env_example,
    environment,
    interpolations,
    is_oneshot,
    require_binary,
    walk_strings,
)

#: The whole observability stack: one profile, and nothing outside it depends on it.
OBSERVABILITY = {
    "prometheus",
    "pushgateway",
    "postgres-exporter",
    "grafana",
    "loki",
    "alloy",
    "docker-socket-proxy-logs",
    "tempo",
    "otel-collector",
}
AIRFLOW = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
#: Waiting for "started" instead of "healthy", on purpose: the API is healthy only once a
#: champion is loaded, and the UI and nginx must come up before the first model exists.
STARTED_IS_ENOUGH = {("nginx", "api"), ("streamlit", "api")}
#: Host paths a service may bind-mount besides files of this repository: the docker socket
#: (its proxies only) and the checkout the pipeline tasks run in (project-init only).
HOST_PATHS = {"/var/run/docker.sock", "${RAINCAST_HOST_PROJECT_DIR}"}
PUBLISHED_PORTS = {80, 443}
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|_KEY$|_KEY_ID$|_PASS$", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"://[^:/@\s]+:(?P<password>\$\{[^}]*\}|[^@\s]+)@")
REQUIRED_ONLY = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:?\?[^}]*\}$")


# --- the file parses -------------------------------------------------------------------


def env_file_for(compose: dict[str, Any], tmp_path: Path, drop: str | None = None) -> Path:
    """An --env-file as a user makes it from .env.example: its example values, plus a dummy
    for each variable compose requires (``:?``) that the example leaves empty."""
    values = {k: v for k, v in env_example().items() if v}
    for name, ops in interpolations(compose).items():
        if not values.get(name) and (":?" in ops or "?" in ops):
            values[name] = f"dummy-{name.lower().replace('_', '-')}"
    values.pop(drop or "", None)
    path = tmp_path / "compose.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in sorted(values.items())))
    return path


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    binary = require_binary("docker-compose", "the compose file parser")
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent)},  # no stray RAINCAST_*
    )


def test_compose_config_parses_with_the_documented_variables(compose, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = compose_config(env_file_for(compose, tmp_path))
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert set(resolved["services"]) == set(compose["services"])
    api = resolved["services"]["api"]
    assert api["environment"]["RAINCAST_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # Named after the compose project, so two stacks on one daemon do not share them.
    assert resolved["volumes"]["raincast-data"]["name"] == "raincast_data"
    assert resolved["networks"]["raincast"]["name"] == "raincast_raincast"
    scheduler = resolved["services"]["airflow-scheduler"]["environment"]
    assert scheduler["RAINCAST_DATA_VOLUME"] == "raincast_data"
    assert scheduler["RAINCAST_DOCKER_NETWORK"] == "raincast_raincast"


def test_compose_refuses_to_start_without_a_secret(compose, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = compose_config(env_file_for(compose, tmp_path, drop="POSTGRES_PASSWORD"))
    assert proc.returncode != 0
    assert "POSTGRES_PASSWORD" in proc.stderr and "set in .env" in proc.stderr


def test_every_compose_variable_is_documented_in_env_example(compose) -> None:  # type: ignore[no-untyped-def]
    documented = set(env_example())
    missing = sorted(set(interpolations(compose)) - documented)
    assert not missing, (
        f"variables used by docker-compose.yml but not in {ENV_EXAMPLE.name}: {missing}"
    )


# --- lifecycle: healthchecks, restarts, ordering, profiles, limits ---------------------


def test_every_long_running_service_has_a_healthcheck_and_restarts(services) -> None:  # type: ignore[no-untyped-def]
    for name, svc in services.items():
        if is_oneshot(svc):
            assert "healthcheck" not in svc, f"{name}: a one-shot job needs no healthcheck"
            continue
        assert svc.get("restart") == "unless-stopped", name
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_dependencies_wait_for_health_or_completion(services) -> None:  # type: ignore[no-untyped-def]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs the long form with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec["condition"]
            if is_oneshot(services[dep]):
                assert condition == "service_completed_successfully", (name, dep)
            elif (name, dep) in STARTED_IS_ENOUGH:
                assert condition == "service_started", (name, dep)
            else:
                assert condition == "service_healthy", (name, dep)
                assert "healthcheck" in services[dep], (name, dep)


def test_profiles_never_leave_a_dependency_disabled(services) -> None:  # type: ignore[no-untyped-def]
    for name, svc in services.items():
        own = set(svc.get("profiles") or [])
        for dep in svc.get("depends_on") or {}:
            theirs = set(services[dep].get("profiles") or [])
            assert not theirs or theirs <= own, f"{name} (profiles {own}) needs {dep} ({theirs})"
    profiled = {n for n, s in services.items() if s.get("profiles")}
    assert profiled == OBSERVABILITY
    assert all(services[n]["profiles"] == ["observability"] for n in OBSERVABILITY)


def test_every_service_has_cpu_and_memory_limits(services) -> None:  # type: ignore[no-untyped-def]
    for name, svc in services.items():
        limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        assert limits.get("cpus") and limits.get("memory"), f"{name} has no resource limits"


#: The only members of the internal networks that reach a docker socket proxy.
SOCKET_NETWORKS = {
    "docker-api": {"docker-socket-proxy", "airflow-scheduler"},
    "docker-logs": {"docker-socket-proxy-logs", "alloy"},
}


def test_only_the_scheduler_shares_a_network_with_the_docker_socket_proxy(
    compose, services
) -> None:  # type: ignore[no-untyped-def]
    """The socket proxy can create privileged containers: no service but the scheduler
    may reach it (a compromised UI or API must not), and the log proxy only Alloy."""
    assert compose["networks"]["raincast"]["name"] == "${COMPOSE_PROJECT_NAME:-raincast}_raincast"
    for network in SOCKET_NETWORKS:
        assert compose["networks"][network] == {"internal": True}, network
    members: dict[str, set[str]] = {}
    for name, svc in services.items():
        assert "network_mode" not in svc, name
        for network in svc.get("networks") or []:
            members.setdefault(network, set()).add(name)
    for network, allowed in SOCKET_NETWORKS.items():
        assert members[network] == allowed, network
    proxies = {"docker-socket-proxy", "docker-socket-proxy-logs"}
    assert not members["raincast"] & proxies
    assert members["raincast"] == set(services) - proxies


# --- files and volumes -----------------------------------------------------------------


def mounts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax; a source given as a
    variable (``${VAR:?msg}:/target``) comes back as ``${VAR}``."""
    out = []
    for entry in svc.get("volumes") or []:
        if isinstance(entry, dict):
            out.append((str(entry.get("source", "")), str(entry["target"])))
        elif entry.startswith("${"):
            var = INTERPOLATION.match(entry)
            assert var, entry
            out.append((f"${{{var['name']}}}", entry[var.end() :].split(":")[1]))
        else:
            source, target = ([*entry.split(":"), ""])[:2]
            out.append((source, target))
    return out


def test_bind_mounted_and_built_files_exist(services) -> None:  # type: ignore[no-untyped-def]
    missing = []
    for name, svc in services.items():
        for source, _ in mounts(svc):
            if source.startswith("."):
                if not (REPO / source).exists():
                    missing.append(f"{name}: {source}")
            elif source.startswith(("/", "$")):
                assert source in HOST_PATHS, f"{name} mounts host path {source}"
        build = svc.get("build")
        if build:
            dockerfile = REPO / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            if not dockerfile.exists():
                missing.append(f"{name}: {dockerfile.name}")
            elif "target" in build:
                stages = re.findall(r"^FROM \S+ AS (\S+)", dockerfile.read_text(), re.MULTILINE)
                assert build["target"] in stages, f"{name}: no stage {build['target']}"
    assert not missing, f"referenced files missing from the repo: {missing}"


def test_prometheus_gets_its_rule_files_next_to_its_config(services) -> None:  # type: ignore[no-untyped-def]
    config = yaml.safe_load((REPO / "observability" / "prometheus.yml").read_text())
    targets = {t for _, t in mounts(services["prometheus"])}
    assert "/etc/prometheus/prometheus.yml" in targets
    for rule_file in config.get("rule_files") or []:
        assert f"/etc/prometheus/{rule_file}" in targets, rule_file


def test_named_volumes_are_declared_and_used(compose, services) -> None:  # type: ignore[no-untyped-def]
    declared = set(compose["volumes"])
    used = {s for svc in services.values() for s, _ in mounts(svc) if s and s[0] not in "./$"}
    assert used == declared
    assert all(t for svc in services.values() for _, t in mounts(svc)), "anonymous volume"


# --- secrets and exposure --------------------------------------------------------------


def literal_secrets(compose: dict[str, Any]) -> list[str]:
    """Secrets written into the compose file instead of coming from ``${VAR:?...}``."""
    problems = []
    for name, svc in (compose.get("services") or {}).items():
        for key, value in environment(svc).items():
            is_secret = SECRET_NAME.search(key) and not key.endswith(("_FILE", "_PATH"))
            if is_secret and not REQUIRED_ONLY.match(value):
                problems.append(f"{name}: {key}")
    for text in walk_strings(compose):
        for m in URL_CREDENTIALS.finditer(text):
            if not REQUIRED_ONLY.match(m["password"]):
                problems.append(f"password in URL: {text}")
    return problems


def test_no_literal_secrets(compose) -> None:  # type: ignore[no-untyped-def]
    assert literal_secrets(compose) == []


def test_literal_secrets_are_caught() -> None:
    leaky = {
        "services": {
            "db": {"environment": {"DB_PASSWORD": "hunter2", "TOKEN": "${TOKEN:-default}"}},
            "app": {"environment": ["URL=postgresql://app:hunter2@db/app", "X_KEY=${X_KEY:?}"]},
            "job": {"command": ["sh", "-c", "curl https://u:pw@example.com"]},
        }
    }
    assert len(literal_secrets(leaky)) == 4  # default-valued TOKEN counts: no fallback secret


def published_ports(svc: dict[str, Any]) -> set[int]:
    """Host ports, with ``${VAR:-default}`` taken at its default."""
    ports = set()
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["published"]))
        else:
            entry = INTERPOLATION.sub(lambda m: m["arg"], str(entry))
            parts = entry.split("/")[0].split(":")
            ports.add(int(parts[-2] if len(parts) > 1 else parts[-1]))
    return ports


def test_nginx_is_the_only_published_entry_point(services) -> None:  # type: ignore[no-untyped-def]
    published = {name: published_ports(svc) for name, svc in services.items()}
    assert {name for name, ports in published.items() if ports} == {"nginx"}
    assert published["nginx"] <= PUBLISHED_PORTS
    assert 80 in published["nginx"]
    for svc in services.values():
        assert not svc.get("privileged")


def test_published_port_parser() -> None:
    svc = {"ports": ["80:80", "127.0.0.1:5432:5432", {"target": 443, "published": 8443}, "9000"]}
    assert published_ports(svc) == {80, 5432, 8443, 9000}
    assert published_ports({"ports": ["${BIND:-0.0.0.0}:${PORT:-8080}:80"]}) == {8080}


# --- Airflow's docker task runner ------------------------------------------------------


def dag_constant(name: str) -> Any:
    """A module-level constant of dags/raincast_tasks.py, read without importing Airflow."""
    tree = ast.parse((REPO / "dags" / "raincast_tasks.py").read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(node.value)  # type: ignore[union-attr,arg-type]
    raise LookupError(name)


def default_of(value: str) -> str:
    m = INTERPOLATION.fullmatch(value)
    assert m and m["op"] in (":-", "-"), value
    return m["arg"]


def test_airflow_containers_carry_the_docker_runner_environment(compose, services) -> None:  # type: ignore[no-untyped-def]
    assert set(services) >= AIRFLOW
    for name in AIRFLOW:
        env = environment(services[name])
        assert env["RAINCAST_TASK_RUNNER"] == "docker", name
        assert env["RAINCAST_DOCKER_NETWORK"] == compose["networks"]["raincast"]["name"]
        assert env["RAINCAST_DOCKER_URL"] == "tcp://docker-socket-proxy:2375"
        assert env["RAINCAST_DATA_VOLUME"] == compose["volumes"]["raincast-data"]["name"]
        assert env["RAINCAST_TASK_LABEL"] == "${COMPOSE_PROJECT_NAME:-raincast}"
        assert env["RAINCAST_TRAINER_IMAGE"] == services["trainer"]["image"]
        assert REQUIRED_ONLY.match(env["RAINCAST_HOST_PROJECT_DIR"]), "host path must be set"
        assert env["RAINCAST_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["RAINCAST_STORE_URL"].startswith("postgresql+psycopg2://raincast:")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith("postgresql+asyncpg://")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(
            "http://airflow-apiserver:8080/"
        )
        assert env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter"
        assert env["AIRFLOW__METRICS__STATSD_PORT"] == "9125"
        # Every secret the DockerOperator forwards privately is there to forward.
        assert set(dag_constant("SECRET_ENV")) <= set(env), name
    statsd = " ".join(services["statsd-exporter"]["command"])
    assert "--statsd.listen-udp=:9125" in statsd


def test_the_api_reads_the_store_with_the_read_only_role(services) -> None:  # type: ignore[no-untyped-def]
    """Monitor (GET /monitor/*) reads the raw store through the API, never as its writer."""
    api = environment(services["api"])
    assert api["RAINCAST_STORE_URL"].startswith("postgresql+psycopg2://raincast_reader:")
    assert "${RAINCAST_READER_DB_PASSWORD:?" in api["RAINCAST_STORE_URL"]


def test_the_ui_gets_the_api_and_nothing_else(services) -> None:  # type: ignore[no-untyped-def]
    """The UI talks to the API only: no store URL, no registry, no secret, no database."""
    ui = services["streamlit"]
    assert environment(ui) == {"RAINCAST_API_URL": "http://api:3000"}
    assert set(ui["depends_on"]) == {"api"}


def test_airflow_init_creates_the_dvc_pool_of_the_dags(services) -> None:  # type: ignore[no-untyped-def]
    script = " ".join(services["airflow-init"]["command"])
    assert f"airflow pools set {dag_constant('DVC_POOL')} 1" in script
    assert "airflow db migrate" in script


def test_statsd_is_only_switched_on_when_its_client_is_locked(services) -> None:  # type: ignore[no-untyped-def]
    setting = environment(services["airflow-scheduler"])["AIRFLOW__METRICS__STATSD_ON"]
    value = default_of(setting) if setting.startswith("${") else setting
    locked = re.search(r'^name = "statsd"$', (REPO / "uv.lock").read_text(), re.MULTILINE)
    if value.lower() in ("true", "1"):
        assert locked, "AIRFLOW__METRICS__STATSD_ON=True needs the `statsd` package in uv.lock"


def test_socket_proxy_allows_only_what_docker_operator_needs(services) -> None:  # type: ignore[no-untyped-def]
    env = environment(services["docker-socket-proxy"])
    allowed = {k for k, v in env.items() if v == "1"}
    assert allowed == {"CONTAINERS", "IMAGES", "POST"}
    logs = environment(services["docker-socket-proxy-logs"])
    assert {k for k, v in logs.items() if v == "1"} == {"CONTAINERS", "EVENTS"}
    assert logs["POST"] == "0"  # read-only: list, inspect, logs
    holders = [n for n, s in services.items() for src, _ in mounts(s) if "docker.sock" in src]
    assert set(holders) == {"docker-socket-proxy", "docker-socket-proxy-logs"}
    for name in holders:
        assert all(
            entry.endswith(":ro") for entry in services[name]["volumes"] if "docker.sock" in entry
        )


def test_images_are_pinned(services) -> None:  # type: ignore[no-untyped-def]
    for name, svc in services.items():
        image = svc["image"]
        if "build" in svc:
            continue
        tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", f"{name}: pin {image}"


@pytest.mark.parametrize(("service", "shell"), [("volume-init", "sh"), ("minio-setup", "sh")])
def test_inline_init_scripts_are_valid_shell(services, service: str, shell: str) -> None:  # type: ignore[no-untyped-def]
    script = services[service]["command"][-1].replace("$$", "$")  # compose's escape
    proc = subprocess.run([shell, "-n", "-c", script], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr


def test_airflow_init_script_is_valid_bash(services) -> None:  # type: ignore[no-untyped-def]
    command = services["airflow-init"]["command"]
    assert command[:2] == ["bash", "-ec"]
    proc = subprocess.run(["bash", "-n", "-c", command[2]], capture_output=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    broken = command[2].replace("\nfi\n", "\n")
    assert subprocess.run(["bash", "-n", "-c", broken], capture_output=True).returncode != 0


def test_configs_only_name_services_that_exist(services) -> None:  # type: ignore[no-untyped-def]
    """Host names in the other configs (Prometheus targets, Grafana datasources, nginx
    upstreams, OTLP / Pushgateway URLs) are compose services."""
    prometheus = yaml.safe_load((REPO / "observability" / "prometheus.yml").read_text())
    hosts = {
        target.split(":")[0]
        for job in prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    } - {"localhost"}
    provisioning = REPO / "observability" / "grafana" / "provisioning" / "datasources"
    for path in provisioning.glob("*.y*ml"):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            hosts.add(re.match(r"https?://([^:/]+)", source["url"])[1])  # type: ignore[index]
    nginx = (REPO / "nginx.conf").read_text().split("# BEGIN TLS")[0]
    hosts |= set(re.findall(r"^\s*server ([a-z-]+):\d+", nginx, re.MULTILINE))
    for text in walk_strings(services):
        hosts |= set(re.findall(r"https?://([a-z][a-z-]+):\d+", text))
    assert hosts - {"localhost"} <= set(services)
    assert {"api", "prometheus", "loki", "tempo", "pushgateway"} <= hosts


def test_postgres_urls_name_the_driver_the_images_ship(services) -> None:  # type: ignore[no-untyped-def]
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which the MLflow image does not
    install (it ships psycopg2): the MLflow server crashed at start on such a URL."""
    urls = [u for text in walk_strings(services) for u in re.findall(r"postgres\S*://", text)]
    assert urls and set(urls) <= {"postgresql+psycopg2://", "postgresql+asyncpg://"}, urls
    mlflow_image = (REPO / "Dockerfile.mlflow").read_text()
    assert '"psycopg2-binary==' in mlflow_image and '"psycopg[' not in mlflow_image


def test_nothing_exports_to_the_observability_profile_unless_asked(services) -> None:  # type: ignore[no-untyped-def]
    """Without the observability profile, pushgateway and otel-collector do not run: the
    tasks and the API must not spend retries on them (~7 s per task)."""
    for name, svc in services.items():
        env = environment(svc)
        for var in ("RAINCAST_PUSHGATEWAY_URL", "RAINCAST_OTLP_ENDPOINT"):
            if var in env:
                assert env[var] == f"${{{var}:-}}", (name, env[var])


def test_dvc_lock_is_not_git_ignored() -> None:
    """DVC refuses to write a git-ignored dvc.lock ("'dvc.lock' is git-ignored", exit 255):
    ignoring it failed every retrain stage of the stack run. project-init writes a valid
    empty one where a checkout has none."""
    require_binary("git", "reads .gitignore")
    probe = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", "dvc.lock"], cwd=REPO, check=False
    )
    assert probe.returncode == 1, "dvc.lock matches a .gitignore pattern"
