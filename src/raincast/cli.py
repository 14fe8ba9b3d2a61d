"""The `raincast` command line: one command per pipeline step (same names as DVC stages and
Airflow task ids), plus the registry tools and `run`, the one-shot daily cycle."""

from __future__ import annotations

import json
import logging
import os
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="raincast: keep a rain-tomorrow model fresh and serve it safely.", no_args_is_help=True
)
registry_app = typer.Typer(
    help="Inspect and move registry aliases (stage names map to aliases).", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")

log = logging.getLogger("raincast")

DateOpt = Annotated[
    str | None,
    typer.Option(
        "--date", "-d", help="Logical date YYYY-MM-DD (default: $RAINCAST_DATE or today)."
    ),
]


def _setup() -> tuple[object, object]:
    from raincast.params import load_params
    from raincast.settings import Settings

    logging.basicConfig(
        level=os.environ.get("RAINCAST_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "mlflow", "urllib3", "botocore", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings()
    return settings, load_params(settings.project_dir / "params.yaml")


def _date(value: str | None) -> date | None:
    value = value or os.environ.get("RAINCAST_DATE")
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _fail(msg: str) -> typer.Exit:
    typer.secho(f"error: {msg}", fg="red", err=True)
    return typer.Exit(1)


@app.command()
def fetch(
    source: Annotated[
        str, typer.Option(help="openmeteo | synthetic | csv:<file> | replay:<file>")
    ] = "openmeteo",
    logical_date: DateOpt = None,
    start: Annotated[str | None, typer.Option(help="Fetch a range start..date (history).")] = None,
) -> None:
    """Fetch observations for the logical date into the landing area (no fallback)."""
    from raincast.pipeline import ingest
    from raincast.pipeline.cycle import default_date
    from raincast.sources import SourceUnavailableError

    settings, _ = _setup()
    try:
        src = ingest.make_source(source, settings)  # type: ignore[arg-type]
        d = _date(logical_date) or default_date(src)
        res = ingest.fetch(settings, src, d, _date(start))  # type: ignore[arg-type]
    except (SourceUnavailableError, ValueError, FileNotFoundError) as err:
        raise _fail(str(err)) from err
    typer.echo(f"fetched {res.rows} rows from {res.source} for {d} -> {res.path}")


@app.command()
def validate(
    logical_date: DateOpt = None,
    run_id: Annotated[
        str | None, typer.Option(envvar="RAINCAST_RUN_ID", help="Run id for quarantine/provenance.")
    ] = None,
) -> None:
    """Validate the landed batch: load good rows, quarantine bad ones, fail above the threshold."""
    from raincast.pipeline import ingest

    settings, params = _setup()
    d = _date(logical_date) or date.today()
    try:
        out = ingest.validate(settings, params.validate_, d, run_id)  # type: ignore[arg-type, attr-defined]
    except (ingest.ValidationFailedError, FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from err
    r, u = out.result, out.upsert
    typer.echo(
        f"validated {r.rows_in} rows for {d}: {len(r.accepted)} accepted, {len(r.quarantined)} quarantined; "
        f"store: {u.inserted} inserted, {u.updated} updated, {u.unchanged} unchanged, {u.labels_filled} labels filled"
        if u
        else "nothing loaded"
    )


@app.command()
def process() -> None:
    """Export labelled rows of the raw store to data/processed (DVC stage)."""
    from raincast.pipeline import stages

    settings, _ = _setup()
    typer.echo(f"processed {stages.process(settings)} labelled rows")  # type: ignore[arg-type]


@app.command()
def split() -> None:
    """Temporal train/validation/test split (DVC stage)."""
    from raincast.pipeline import stages

    settings, params = _setup()
    try:
        typer.echo(json.dumps(stages.split(settings, params)))  # type: ignore[arg-type]
    except ValueError as err:
        raise _fail(str(err)) from err


@app.command()
def train() -> None:
    """Fit XGBoost, log the MLflow run and register the model as challenger (DVC stage)."""
    from raincast.pipeline import stages

    settings, params = _setup()
    out = stages.train(settings, params)  # type: ignore[arg-type]
    typer.echo(
        f"registered {out['model_name']} version {out['model_version']} (run {out['run_id']})"
    )


@app.command()
def evaluate() -> None:
    """Score the trained model on the test slice; write metrics and plots (DVC stage)."""
    from raincast.pipeline import stages

    settings, _ = _setup()
    m = stages.evaluate(settings)  # type: ignore[arg-type]
    typer.echo(f"test F1 {m['f1']:.4f}  ROC AUC {m['roc_auc']:.4f}  PR AUC {m['pr_auc']:.4f}")


@app.command()
def promote(
    version: Annotated[
        str | None, typer.Option(help="Candidate version (default: the one just trained).")
    ] = None,
) -> None:
    """Champion vs challenger on the same test slice; move `champion` only if the rule passes."""
    from raincast.pipeline.promotion import promote as do_promote

    settings, params = _setup()
    out = do_promote(settings, params.promote, version)  # type: ignore[arg-type, attr-defined]
    _print_promotion(out)


def _print_promotion(out: object) -> None:
    if out.skipped:  # type: ignore[attr-defined]
        typer.echo(f"no decision: {out.skipped}; champion is version {out.champion_version}")  # type: ignore[attr-defined]
        return
    d, c = out.decision, out.candidate  # type: ignore[attr-defined]
    typer.secho(
        f"decision: version {c.version} {d.label.upper()}",
        fg="green" if d.promote else "yellow",
        bold=True,
    )
    for r in d.reasons:
        typer.echo(f"  - {r}")
    typer.echo(f"champion: version {out.champion_version}")  # type: ignore[attr-defined]


@app.command()
def rollback(
    to: Annotated[
        str | None, typer.Option(help="Version to restore (default: previous champion).")
    ] = None,
) -> None:
    """Move the champion alias back to the previous champion (or --to VERSION)."""
    from mlflow.exceptions import MlflowException

    from raincast.pipeline.promotion import rollback as do_rollback

    settings, _ = _setup()
    try:
        before, after = do_rollback(settings, to)  # type: ignore[arg-type]
    except (LookupError, MlflowException) as err:
        raise _fail(str(err)) from err
    typer.echo(f"champion: version {before} -> {after}")


@registry_app.command("list")
def registry_list() -> None:
    """Versions with their aliases, decision and test scores."""
    from raincast.models import tracking

    settings, _ = _setup()
    client = tracking.configure(settings)  # type: ignore[arg-type]
    versions = client.search_model_versions(f"name='{settings.model_name}'")  # type: ignore[attr-defined]
    for v in sorted(versions, key=lambda v: int(v.version)):
        t = v.tags
        typer.echo(
            f"v{v.version:>4}  aliases={','.join(v.aliases) or '-':<22} decision={t.get('promotion.decision', '-'):<9} "
            f"f1={t.get('promotion.candidate_f1', '-')[:6]} auc={t.get('promotion.candidate_auc', '-')[:6]}"
        )


@registry_app.command("stage")
def registry_stage(
    version: Annotated[str, typer.Argument(help="Model version.")],
    stage: Annotated[
        str, typer.Argument(help="Production | Staging | Archived | None | a custom label.")
    ],
) -> None:
    """Stage-registry vocabulary: Production -> champion, Staging -> challenger, Archived -> no alias."""
    from mlflow.exceptions import MlflowException

    from raincast.pipeline.promotion import move_alias

    settings, _ = _setup()
    try:
        alias = move_alias(settings, version, stage)  # type: ignore[arg-type]
    except (ValueError, MlflowException) as err:
        raise _fail(str(err)) from err
    typer.echo(f"version {version}: {stage} -> alias {alias or '(none)'}")


@registry_app.command("history")
def registry_history() -> None:
    """Every recorded registry decision, oldest first."""
    from raincast.data import store

    settings, _ = _setup()
    df = store.read_history(store.connect(settings.raw_store_url), settings.model_name)  # type: ignore[attr-defined]
    cols = [
        "decided_at",
        "action",
        "decision",
        "candidate_version",
        "champion_before",
        "champion_after",
        "candidate_f1",
        "champion_f1",
        "reasons",
    ]
    typer.echo(df[cols].to_string(index=False) if not df.empty else "no decisions recorded")


@app.command()
def run(
    source: Annotated[
        str,
        typer.Option(
            envvar="RAINCAST_SOURCE", help="openmeteo | synthetic | csv:<file> | replay:<file>"
        ),
    ] = "openmeteo",
    logical_date: DateOpt = None,
) -> None:
    """One full daily cycle: history if the store is empty, fetch, validate, dvc repro, promote.

    Only this command falls back to the synthetic source when Open-Meteo is unreachable.
    """
    from raincast.pipeline import cycle, ingest
    from raincast.sources import SourceUnavailableError

    settings, params = _setup()
    try:
        src = ingest.make_source(source, settings)  # type: ignore[arg-type]
        d = _date(logical_date) or cycle.default_date(src)
        fallback = ingest.make_source("synthetic", settings) if source == "openmeteo" else None  # type: ignore[arg-type]
        rep = cycle.run_cycle(settings, params, src, d, fallback)  # type: ignore[arg-type]
    except (
        ingest.ValidationFailedError,
        SourceUnavailableError,
        ValueError,
        FileNotFoundError,
        RuntimeError,
    ) as err:
        raise _fail(str(err)) from err
    if rep.fell_back:
        typer.secho(
            "WARNING: Open-Meteo was unreachable; this cycle ran on SYNTHETIC data "
            "(MLflow tag data_source=synthetic).",
            fg="red",
            bold=True,
            err=True,
        )
    typer.echo(
        f"cycle for {rep.logical_date} on {rep.source}: {rep.history_rows} history rows, {rep.day_rows} rows for the day"
    )
    _print_promotion(rep.promotion)
    metrics_file = Path("data/metrics/test.json")
    if metrics_file.exists():
        m = json.loads(metrics_file.read_text())
        typer.echo(
            "latest model test metrics: "
            + "  ".join(
                f"{k}={m[k]:.4f}"
                for k in ("f1", "roc_auc", "pr_auc", "accuracy", "precision", "recall")
                if k in m
            )
        )


if __name__ == "__main__":
    app()
