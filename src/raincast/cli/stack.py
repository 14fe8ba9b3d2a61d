"""Run the system on this machine: the API (`serve`), Airflow standalone (`airflow`), and
everything at once without Docker (`up` / `down`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from raincast.cli._common import RUN_THE_SYSTEM, fail, setup

app = typer.Typer()


@app.command(rich_help_panel=RUN_THE_SYSTEM)
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.")] = 3000,
) -> None:
    """Serve the registry champion with BentoML behind JWT auth (see README: API)."""
    import shutil
    import sys

    from raincast.serving.auth import AuthConfig, AuthConfigError

    settings, _ = setup()
    try:
        AuthConfig.from_settings(settings)  # refuse a missing or weak secret before BentoML
    except AuthConfigError as err:
        raise fail(str(err)) from err
    # `bentoml serve` empties $BENTOML_HOME/prometheus_multiproc_dir as it starts: a second
    # server sharing the home would wipe this one's metrics. One home per port. (Set in
    # this process's environment, which execvp hands on to BentoML.)
    os.environ.setdefault("BENTOML_HOME", str(settings.state_dir / "bentoml" / str(port)))
    bentoml = shutil.which("bentoml", path=str(Path(sys.executable).parent)) or "bentoml"
    cmd = [bentoml, "serve", "raincast.serving.service:RainService"]
    os.execvp(bentoml, [*cmd, "--host", host, "--port", str(port)])


@app.command(rich_help_panel=RUN_THE_SYSTEM)
def airflow(
    port: Annotated[int, typer.Option(help="Port of the Airflow UI / API server.")] = 8080,
) -> None:
    """Start Airflow standalone on 127.0.0.1 for the DAGs in dags/ (local task runner)."""
    from raincast import local_airflow

    settings, _ = setup()
    env = local_airflow.airflow_env(settings, port)
    try:
        pool = local_airflow.dvc_pool(Path(env["AIRFLOW__CORE__DAGS_FOLDER"]))
        typer.echo(f"preparing Airflow (metadata DB, pool {pool}) ...")
        local_airflow.prepare(env)
    except (RuntimeError, LookupError, OSError) as err:
        raise fail(str(err)) from err
    typer.secho(
        f"Airflow UI: http://127.0.0.1:{port}  user: {local_airflow.ADMIN_USER}  "
        f"password: {local_airflow.admin_password(settings)}  (Ctrl-C stops it)",
        fg="green",
        bold=True,
    )
    os.execvpe(local_airflow.airflow_bin(), [local_airflow.airflow_bin(), "standalone"], env)


@app.command(rich_help_panel=RUN_THE_SYSTEM)
def up(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every service.")] = 300,
) -> None:
    """Start MLflow, Airflow, the API, the UI (+ Prometheus/Pushgateway) without Docker."""
    from raincast import local_stack

    settings, _ = setup()
    ports = local_stack.Ports.from_settings(settings)
    try:
        urls = local_stack.up(settings, ports, timeout)
    except RuntimeError as err:
        raise fail(str(err)) from err
    env_file = settings.project_dir / ".env"
    typer.secho("raincast is up (logs: var/log/platform.log; stop with `make down`)", fg="green")
    pointers = local_stack.where_to_look(ports, urls, env_file)
    typer.secho("Where to look first:", bold=True)
    for i, p in enumerate(pointers, start=1):
        typer.echo(f"  {i}. {p.name:<11} {p.url:<36} {p.shows}")
    logins: dict[str, list[str]] = {}
    for p in pointers:
        logins.setdefault(p.login, []).append(p.name)
    typer.secho("Logins:", bold=True)
    for login, names in logins.items():
        typer.echo(f"  {', '.join(names)}: {login}")


@app.command(rich_help_panel=RUN_THE_SYSTEM)
def down() -> None:
    """Stop everything `raincast up` started."""
    from raincast import local_stack

    settings, _ = setup()
    stopped = local_stack.down(settings)
    typer.echo("stopped" if stopped else "nothing was running")
