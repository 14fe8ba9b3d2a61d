"""The one task factory of the raincast DAGs, and the defaults every DAG shares.

`raincast_task("fetch", ["raincast", "fetch", ...])` returns

* in local mode (default, `RAINCAST_TASK_RUNNER=local`): a BashOperator running the
  command in the project directory with the project's environment on PATH;
* in docker mode (`RAINCAST_TASK_RUNNER=docker`, the compose deployment): a DockerOperator
  running the same command in the trainer image, with the project checkout and the data
  volume mounted, on the compose network, secrets passed as `private_environment`, a
  memory limit, and a label naming the stack (so a stack's leftovers can be found).

Same task ids, same commands in both modes. Only light imports here: this module is
imported every time the DAG processor parses the folder.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from airflow.sdk import BaseOperator

log = logging.getLogger("raincast.dags")

#: Tags a raincast DAG may carry (checked by tests/dags).
APPROVED_TAGS = frozenset({"raincast", "data", "training", "prediction", "monitoring"})
OWNER = "raincast"
#: Timezone of the schedules: the stations' observation days follow Australian local time.
TIMEZONE = "Australia/Sydney"
#: Start of every DAG: the first weatherAUS day, so old logical dates can be replayed or
#: backfilled (catch-up stays off: unpausing never schedules the years in between).
START_DATE = datetime(2007, 11, 1, tzinfo=ZoneInfo(TIMEZONE))
#: Pool serialising every task that runs DVC (size 1). Its one definition: `raincast airflow`
#: (raincast.local_airflow) reads it from here, and tests/deploy holds docker-compose's
#: airflow-init to it.
DVC_POOL = "raincast_dvc"
#: The run's observation day D (YYYY-MM-DD) in the stations' timezone. `ds` would be the
#: UTC date, one day early for a run that starts at midnight in Sydney. (Double quotes
#: only: the local runner single-quotes each argument for bash.)
OBSERVATION_DAY = (
    '{{ (logical_date or dag_run.run_after).in_timezone("' + TIMEZONE + '").strftime("%Y-%m-%d") }}'
)
#: Exit code with which a command asks Airflow to mark its task skipped.
SKIP_EXIT_CODE = 99
#: Where docker tasks see RAINCAST_HOST_SOURCES_DIR (read-only): csv/replay source files,
#: e.g. RAINCAST_SOURCE=replay:/srv/raincast/sources/weatherAUS.csv.gz.
SOURCES_MOUNT = "/srv/raincast/sources"
#: Label on every docker task container: the stack (compose project) that started it.
STACK_LABEL = "io.raincast.stack"

PROJECT_DIR = Path(os.environ.get("RAINCAST_PROJECT_DIR") or Path(__file__).resolve().parents[1])

#: Forwarded into docker tasks as plain environment (visible in the UI).
PUBLIC_ENV = (
    "RAINCAST_SOURCE",
    "RAINCAST_MODEL_NAME",
    "RAINCAST_EXPERIMENT",
    "RAINCAST_OPENMETEO_URL",
    "RAINCAST_OPENMETEO_ARCHIVE_URL",
    "RAINCAST_HTTP_TIMEOUT_S",
    "RAINCAST_HTTP_RETRIES",
    "RAINCAST_LOG_LEVEL",
    "RAINCAST_LOG_FORMAT",
    "RAINCAST_PUSHGATEWAY_URL",
    "RAINCAST_OTLP_ENDPOINT",
    "RAINCAST_TRACE_SAMPLE_RATE",
    "MLFLOW_S3_ENDPOINT_URL",
)
#: Forwarded into docker tasks as `private_environment` (never templated nor shown).
SECRET_ENV = (
    "RAINCAST_STORE_URL",
    "RAINCAST_MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


def log_failure(context: dict[str, Any]) -> None:
    """on_failure_callback: one structured log line (no chat token needed to be useful)."""
    ti = context.get("task_instance") or context.get("ti")
    log.error(
        "raincast task failed: dag=%s task=%s run=%s try=%s error=%s",
        getattr(ti, "dag_id", "?"),
        getattr(ti, "task_id", "?"),
        context.get("run_id"),
        getattr(ti, "try_number", "?"),
        context.get("exception"),
    )


def schedule_setting(variable: str, default: str) -> str | None:
    """A schedule from the environment; "none" turns the time-based schedule off."""
    value = os.environ.get(variable, default).strip()
    return None if value.lower() in ("", "none", "off") else value


DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": int(os.environ.get("RAINCAST_TASK_RETRIES", "2")),
    # 5 min by default; RAINCAST_TASK_RETRY_DELAY_S shortens it (e.g. the stack test).
    "retry_delay": timedelta(seconds=int(os.environ.get("RAINCAST_TASK_RETRY_DELAY_S", "300"))),
    # A multiplier in Airflow 3 (True would mean x1, a flat delay): 5 min, 10 min, ...
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(hours=1),
    "execution_timeout": timedelta(minutes=30),
    "on_failure_callback": log_failure,
}


def runner() -> str:
    mode = os.environ.get("RAINCAST_TASK_RUNNER", "local").strip().lower()
    if mode not in ("local", "docker"):
        raise ValueError(f"RAINCAST_TASK_RUNNER must be 'local' or 'docker', not {mode!r}")
    return mode


def raincast_task(task_id: str, command: Sequence[str], **kwargs: Any) -> BaseOperator:
    """The task ``task_id`` running ``command`` (a `raincast ...` or `dvc ...` argv; Jinja
    allowed in its items). ``kwargs`` go to the operator (pool, outlets, timeouts...)."""
    env = {"RAINCAST_RUN_ID": "{{ run_id }}"}
    if runner() == "docker":
        return _docker_task(task_id, list(command), env, **kwargs)
    from airflow.providers.standard.operators.bash import BashOperator

    bindir = os.environ.get("RAINCAST_BIN_DIR") or str(Path(sys.executable).parent)
    return BashOperator(
        task_id=task_id,
        bash_command=" ".join(shlex.quote(part) for part in command),
        cwd=str(PROJECT_DIR),
        env={**env, "PATH": bindir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")},
        append_env=True,
        skip_on_exit_code=SKIP_EXIT_CODE,
        **kwargs,
    )


def _docker_task(
    task_id: str, command: list[str], env: dict[str, str], **kwargs: Any
) -> BaseOperator:
    from airflow.providers.docker.operators.docker import DockerOperator
    from docker.types import Mount

    host_project = os.environ.get("RAINCAST_HOST_PROJECT_DIR")
    if not host_project:
        raise ValueError(
            "RAINCAST_TASK_RUNNER=docker needs RAINCAST_HOST_PROJECT_DIR: the docker host's "
            "path of the project checkout (dvc.yaml, params.yaml, dvc.lock), mounted at /app"
        )
    public = {k: os.environ[k] for k in PUBLIC_ENV if os.environ.get(k)}
    secret = {k: os.environ[k] for k in SECRET_ENV if os.environ.get(k)}
    mounts = [
        Mount(target="/app", source=host_project, type="bind"),
        Mount(
            target="/app/data",
            source=os.environ.get("RAINCAST_DATA_VOLUME", "raincast_data"),
            type="volume",
        ),
    ]
    if sources := os.environ.get("RAINCAST_HOST_SOURCES_DIR"):
        mounts.append(Mount(target=SOURCES_MOUNT, source=sources, type="bind", read_only=True))
    return DockerOperator(
        task_id=task_id,
        image=os.environ.get("RAINCAST_TRAINER_IMAGE", "raincast-trainer:latest"),
        command=command,
        working_dir="/app",
        mounts=mounts,
        network_mode=os.environ.get("RAINCAST_DOCKER_NETWORK", "raincast_raincast"),
        docker_url=os.environ.get("RAINCAST_DOCKER_URL", "unix://var/run/docker.sock"),
        environment={**public, **env},
        private_environment=secret,
        # A runaway step is killed by the kernel, not the host: 4 GiB fits a 145k-row
        # retrain several times over (peak RSS ~0.7 GiB).
        mem_limit=os.environ.get("RAINCAST_TASK_MEMORY", "4g"),
        labels={
            STACK_LABEL: os.environ.get("RAINCAST_TASK_LABEL", "raincast"),
            "io.raincast.task": task_id,
        },
        mount_tmp_dir=False,
        auto_remove="success",
        skip_on_exit_code=SKIP_EXIT_CODE,
        **kwargs,
    )
