"""What every `raincast` command shares: setup, the job wrapper of pipeline steps, date
parsing, the help panels, and errors as one red line on stderr with exit 1.

Heavy libraries (MLflow, scikit-learn, pandas' IO, BentoML) are imported inside the
commands, never here: `raincast --help` and the light steps stay fast.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from raincast.params import Params
    from raincast.settings import Settings

#: Help panels of `raincast --help`.
PIPELINE_STEPS = "Pipeline steps"
DAILY_CYCLE = "Daily cycle"
REGISTRY = "Registry"
USERS = "Users"
RUN_THE_SYSTEM = "Run the system"

#: Exit code that makes Airflow mark the task skipped (dags/raincast_tasks.SKIP_EXIT_CODE).
SKIP_EXIT = 99

DateOpt = Annotated[
    str | None,
    typer.Option(
        "--date",
        "-d",
        envvar="RAINCAST_DATE",
        show_envvar=False,  # the help names it already
        help="Logical date YYYY-MM-DD (default: $RAINCAST_DATE or today).",
    ),
]


def setup() -> tuple[Settings, Params]:
    """Settings (the environment and .env: the CLI is the edge that reads them), logging,
    and params.yaml, for one command."""
    from raincast.monitoring.jobs import configure_logging
    from raincast.params import load_params
    from raincast.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    for noisy in ("alembic", "mlflow", "urllib3", "botocore", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return settings, load_params(settings.project_dir / "params.yaml")


def observed(step: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Run a pipeline step inside `monitoring.jobs.job`: span, JSON logs, Pushgateway."""

    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def wrapper(*args: object, **kwargs: object) -> None:
            from raincast.monitoring import jobs
            from raincast.settings import Settings

            # Its own Settings: the span must open before the step's setup() runs.
            settings = Settings()
            with jobs.job(
                step,
                pushgateway_url=settings.pushgateway_url,
                otlp_endpoint=settings.otlp_endpoint,
                run_id=settings.run_id,
            ):
                fn(*args, **kwargs)

        return wrapper

    return deco


def record(name: str, value: float | None, **labels: str) -> None:
    """Add a gauge to the current step's Pushgateway push (None: nothing to record)."""
    if value is not None:
        from raincast.monitoring import jobs

        jobs.record(name, value, **labels)


def parse_date(value: str | None) -> date | None:
    """``--date`` (or its $RAINCAST_DATE) as a date; None when not given."""
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def fail(msg: str) -> typer.Exit:
    """One red ``error:`` line on stderr; raise the returned exit (code 1)."""
    typer.secho(f"error: {msg}", fg="red", err=True)
    return typer.Exit(1)


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


@contextmanager
def data_errors(settings: Settings) -> Iterator[None]:
    """fetch / validate / run: every expected failure of the data side (a source, a file,
    the store, its lock, a refused mix) becomes one line on stderr and exit 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from raincast.data.store import SourceMixError, StoreBusyError
    from raincast.sources import SourceUnavailableError
    from raincast.steps.validate import ValidationFailedError

    try:
        yield
    except (
        SourceUnavailableError,
        SourceMixError,
        StoreBusyError,
        ValidationFailedError,
        ValueError,
        OSError,
    ) as err:
        raise fail(one_line(err)) from err
    except SQLAlchemyError as err:
        from sqlalchemy.engine import make_url

        url = make_url(settings.raw_store_url).render_as_string(hide_password=True)
        detail = one_line(getattr(err, "orig", None) or err)[:300]
        raise fail(
            f"the store at {url} failed ({type(err).__name__}: {detail}); check "
            "RAINCAST_STORE_URL and that the database is up"
        ) from err
