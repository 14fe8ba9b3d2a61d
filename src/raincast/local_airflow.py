"""Local Airflow for newcomers (`make airflow`): environment, one-time setup, standalone.

Airflow is configured entirely through ``AIRFLOW__*`` variables derived here, so the same
settings serve `make airflow`, `airflow dags test` in the tests and the real-scheduler
test. Nothing here imports Airflow: it runs the `airflow` CLI of this environment.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raincast.settings import Settings

ADMIN_USER = "admin"
#: The DAGs' module of shared constants. Its ``DVC_POOL`` is the pool's one definition: the
#: DAGs never import raincast (tests/dags), so this side reads it from there.
DAG_CONSTANTS = "raincast_tasks.py"


def airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def _secret_file(path: Path) -> str:
    """A random secret kept in ``path`` so it survives restarts (never committed: var/)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def admin_password(settings: Settings) -> str:
    """`RAINCAST_AIRFLOW_PASSWORD` (e.g. from .env); else one generated once under var/."""
    given = settings.airflow_password.get_secret_value() if settings.airflow_password else ""
    return given or _secret_file(settings.state_dir / "airflow" / "admin-password")


def airflow_env(settings: Settings, port: int = 8080, host: str = "127.0.0.1") -> dict[str, str]:
    """Environment for every Airflow process of the local deployment (2-core sizing)."""
    home = settings.state_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({ADMIN_USER: admin_password(settings)}))
    passwords.chmod(0o600)
    project = settings.project_dir.resolve()
    # The Airflow processes' environment: this process's (building a child's environment is
    # this edge's job), Airflow's log level kept when set, and the local wiring on top.
    return {
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "AIRFLOW_HOME": str(home),
        "RAINCAST_PROJECT_DIR": str(project),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{host}:{port}/execution/",
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://{host}:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret_file(home / "jwt-secret"),
        "AIRFLOW__API__SECRET_KEY": _secret_file(home / "api-secret"),
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
    }


def dvc_pool(dags_folder: Path) -> str:
    """The pool every DVC task of the DAGs runs in (``DVC_POOL`` of dags/raincast_tasks.py),
    read from the source: neither Airflow nor the DAG file is imported."""
    path = dags_folder / DAG_CONSTANTS
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "DVC_POOL" for t in targets):
                return str(ast.literal_eval(node.value))
    raise LookupError(f"no DVC_POOL constant in {path}")


def prepare(env: dict[str, str]) -> None:
    """Migrate the metadata DB and create the one-slot DVC pool (idempotent)."""
    pool = dvc_pool(Path(env["AIRFLOW__CORE__DAGS_FOLDER"]))
    for cmd in (
        ["db", "migrate"],
        ["pools", "set", pool, "1", "One DVC/registry writer at a time"],
    ):
        proc = subprocess.run([airflow_bin(), *cmd], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"`airflow {' '.join(cmd)}` failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
