"""The `raincast` command line: one command per pipeline step (same names as DVC stages and
Airflow task ids), the registry and user tools, `run` (the one-shot daily cycle) and the
commands that run the system on this machine.

One module per room: `pipeline` (the steps and the daily cycle), `registry`, `users`,
`stack` (serve, airflow, up, down); `_common` holds what they share.
"""

from __future__ import annotations

import typer

from raincast.cli import pipeline, registry, stack, users
from raincast.cli._common import REGISTRY, USERS

__all__ = ["app"]

app = typer.Typer(
    help="raincast: keep a rain-tomorrow model fresh and serve it safely.", no_args_is_help=True
)
app.add_typer(pipeline.app)  # no name: its commands are top-level (`raincast fetch`, ...)
app.add_typer(registry.app, name="registry", rich_help_panel=REGISTRY)
app.add_typer(users.app, name="users", rich_help_panel=USERS)
app.add_typer(stack.app)
