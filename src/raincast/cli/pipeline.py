"""The pipeline commands: one per step (same names as the DVC stages and the Airflow task
ids), the daily batch (predict, score), the registry decisions the DAGs take (retrain-due,
promote, replay, rollback) and `run`, the one-shot daily cycle."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from raincast.cli._common import (
    DAILY_CYCLE,
    PIPELINE_STEPS,
    REGISTRY,
    SKIP_EXIT,
    DateOpt,
    data_errors,
    fail,
    observed,
    one_line,
    parse_date,
    record,
    setup,
)
from raincast.cli.backtest import backtest

if TYPE_CHECKING:
    from raincast.pipeline.replay import ReplayReport
    from raincast.settings import Settings
    from raincast.steps.outcome import PromotionOutcome

app = typer.Typer()

AllowMixedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-mixed-sources",
        envvar="RAINCAST_ALLOW_MIXED_SOURCES",
        help="Let real and synthetic rows share the store (refused by default).",
    ),
]


@app.command(rich_help_panel=PIPELINE_STEPS)
@observed("fetch")
def fetch(
    source: Annotated[
        str, typer.Option(help="openmeteo | synthetic | csv:<file> | replay:<file>")
    ] = "openmeteo",
    logical_date: DateOpt = None,
    start: Annotated[str | None, typer.Option(help="Fetch a range start..date (history).")] = None,
    history_if_empty: Annotated[
        bool,
        typer.Option(
            "--history-if-empty/--no-history-if-empty",
            help="On an empty store, fetch the history before the date too (csv/replay: "
            "every earlier row; openmeteo/synthetic: history.* days of params.yaml).",
        ),
    ] = False,
) -> None:
    """Fetch observations for the logical date into the landing area (no fallback)."""
    from raincast.data import store
    from raincast.sources import default_date, history_start
    from raincast.steps import fetch as step

    settings, params = setup()
    with data_errors(settings):
        src = step.make_source(source, settings)
        d = parse_date(logical_date) or default_date(src)
        first = parse_date(start)
        if history_if_empty and first is None:
            engine = store.connect(settings.raw_store_url)
            if store.count_rows(engine) == 0:
                first = min(history_start(src, d, params.history), d)
                typer.echo(f"the store is empty: fetching its history from {first}")
        res = step.run(settings, src, d, first)
    if res.unknown_columns:
        typer.secho(
            f"note: {len(res.unknown_columns)} column(s) outside the weatherAUS schema were "
            f"ignored: {', '.join(res.unknown_columns)}",
            fg="yellow",
            err=True,
        )
    record("raincast_rows_fetched", res.rows)
    typer.echo(f"fetched {res.rows} rows from {res.source} for {d} -> {res.path}")


@app.command(rich_help_panel=PIPELINE_STEPS)
@observed("validate")
def validate(
    logical_date: DateOpt = None,
    run_id: Annotated[
        str | None, typer.Option(envvar="RAINCAST_RUN_ID", help="Run id for quarantine/provenance.")
    ] = None,
    allow_mixed_sources: AllowMixedOpt = False,
) -> None:
    """Validate the landed batch: load good rows, quarantine bad ones, fail above the threshold.

    Holds the store lock while it writes; refuses a batch of the other kind of data
    (real / synthetic) than the store holds unless mixing is allowed."""
    from raincast.steps import validate as step

    settings, params = setup()
    d = parse_date(logical_date) or date.today()
    with data_errors(settings):
        out = step.run(
            settings,
            params.validate_,
            d,
            run_id,
            allow_mixed=allow_mixed_sources or None,
        )
    r, u = out.result, out.upsert
    record("raincast_rows_accepted", len(r.accepted))
    record("raincast_rows_quarantined", len(r.quarantined))
    n_refused = len(u.refused) if u is not None else 0
    refused = f" ({n_refused} refused by the store)" if n_refused else ""
    typer.echo(
        f"validated {r.rows_in} rows for {d}: {len(r.accepted)} accepted, "
        f"{len(r.quarantined)} quarantined{refused}; store: {u.inserted} inserted, "
        f"{u.updated} updated, {u.unchanged} unchanged, {u.labels_filled} labels filled"
        if u
        else "nothing loaded"
    )


@app.command(
    "dvc",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    rich_help_panel=PIPELINE_STEPS,
)
def dvc_command(ctx: typer.Context) -> None:
    """`dvc ARGS...` for pipeline tasks: first drops DVC run-locks a killed container left
    under this PID (every container command is PID 1), then becomes dvc (same PID)."""
    import os
    import shutil
    import sys

    from raincast.pipeline.dvc_locks import drop_stale_own_pid_locks

    settings, _ = setup()
    drop_stale_own_pid_locks(settings.project_dir / ".dvc" / "tmp")
    local = Path(sys.executable).parent / "dvc"
    binary = str(local) if local.exists() else shutil.which("dvc")
    if binary is None:
        raise fail("dvc is not installed in this environment")
    sys.stdout.flush()
    os.execv(binary, [binary, *ctx.args])


@app.command(rich_help_panel=PIPELINE_STEPS)
@observed("process")
def process() -> None:
    """Export labelled rows of the raw store to data/processed (DVC stage)."""
    from raincast.steps import process as step

    settings, params = setup()
    typer.echo(f"processed {step.run(settings, params)} labelled rows")


@app.command(rich_help_panel=PIPELINE_STEPS)
@observed("split")
def split() -> None:
    """Temporal train/validation/test split (DVC stage)."""
    from raincast.steps import split as step

    settings, params = setup()
    try:
        typer.echo(json.dumps(step.run(settings, params)))
    except ValueError as err:
        raise fail(str(err)) from err


@app.command(rich_help_panel=PIPELINE_STEPS)
@observed("drift")
def drift() -> None:
    """Evidently drift: champion's training window vs the last drift.window_days (DVC stage)."""
    from raincast.steps import drift as step

    settings, params = setup()
    try:
        out = step.run(settings, params)
    except (ValueError, FileNotFoundError) as err:
        raise fail(str(err)) from err
    record("raincast_drift_share", out["drift_share"])
    record("raincast_drift_detected", float(out["drift_detected"]))
    record("raincast_drift_columns", len(out["drifted_columns"]))
    verdict = "DRIFT" if out["drift_detected"] else "no drift"
    typer.echo(
        f"{verdict}: share {out['drift_share']:.2f} of {len(out['columns'])} columns "
        f"({', '.join(out['drifted_columns']) or 'none drifted'}); "
        f"reference {out['reference_window']} ({out['reference_source']}), "
        f"current {out['current_window']}"
    )


@app.command(rich_help_panel=PIPELINE_STEPS)
@observed("train")
def train() -> None:
    """Fit XGBoost, log the MLflow run and register the model as challenger (DVC stage)."""
    from mlflow.exceptions import MlflowException

    from raincast import catalog
    from raincast.steps import train as step

    settings, params = setup()
    try:
        out = step.run(settings, params)
    except MlflowException as err:  # e.g. tracking server down: one clear line, exit 1
        uri = settings.tracking_uri
        where = (
            " (uploading to the artifact store behind it, S3 in production)"
            if "mlflow-artifacts" in str(err)
            else ""
        )
        raise fail(f"MLflow at {uri}{where} failed, nothing registered: {err}") from err
    val = catalog.load_json(settings.project_dir, catalog.VALIDATION_METRICS)
    record("raincast_model_f1", val["f1"], slice="validation")
    record("raincast_model_roc_auc", val["roc_auc"], slice="validation")
    typer.echo(
        f"registered {out['model_name']} version {out['model_version']} (run {out['run_id']})"
    )


@app.command(rich_help_panel=PIPELINE_STEPS)
@observed("evaluate")
def evaluate() -> None:
    """Score the trained model on the test slice; write metrics and plots (DVC stage)."""
    from raincast.steps import evaluate as step

    settings, params = setup()
    m = step.run(settings, params)
    record("raincast_model_f1", m["f1"], slice="test")
    record("raincast_model_roc_auc", m["roc_auc"], slice="test")
    typer.echo(f"test F1 {m['f1']:.4f}  ROC AUC {m['roc_auc']:.4f}  PR AUC {m['pr_auc']:.4f}")


BatchDateOpt = Annotated[
    str | None,
    typer.Option(
        "--date",
        "-d",
        envvar="RAINCAST_DATE",
        show_envvar=False,  # the help names it already
        help="Observation date YYYY-MM-DD (default: $RAINCAST_DATE or the newest in the store).",
    ),
]
RunIdOpt = Annotated[
    str | None,
    typer.Option(
        envvar="RAINCAST_RUN_ID", help="Run id stored with the rows (default: cli:<time>)."
    ),
]


@app.command(rich_help_panel=DAILY_CYCLE)
@observed("predict")
def predict(logical_date: BatchDateOpt = None, run_id: RunIdOpt = None) -> None:
    """Predict rain tomorrow for every station observed on the date, with the champion."""
    from mlflow.exceptions import MlflowException

    from raincast.steps import predict as step

    settings, _ = setup()
    try:
        d = parse_date(logical_date) or step.latest_observation_date(settings)
        rep = step.run(settings, d, run_id)
    except step.NoChampionError as err:
        # A fresh deployment: the first retrain (triggered by the same Asset event) has not
        # promoted a model yet. Nothing to predict with is not a failure: Airflow skips.
        typer.echo(f"skipped: {err}")
        raise typer.Exit(SKIP_EXIT) from err
    except (LookupError, ValueError, MlflowException) as err:
        raise fail(str(err)) from err
    missing = ", ".join(rep.missing_stations[:10]) + (
        " ..." if len(rep.missing_stations) > 10 else ""
    )
    typer.echo(
        f"predicted {rep.target_date} from {rep.rows} observations of {rep.observation_date} with "
        f"{rep.model_name} v{rep.model_version}: {rep.written} rows written "
        f"({rep.inserted} new, {rep.updated} updated, {rep.unchanged} unchanged), "
        f"mean probability {rep.mean_probability:.3f}, "
        f"{len(rep.missing_stations)} stations missing{': ' + missing if missing else ''}"
    )


@app.command(rich_help_panel=DAILY_CYCLE)
@observed("score")
def score(
    logical_date: BatchDateOpt = None,
    windows: Annotated[
        str, typer.Option(help="Comma-separated window lengths in days, ending at the date.")
    ] = "7,30",
    run_id: RunIdOpt = None,
) -> None:
    """Score past predictions against observed outcomes (live F1, AUC, rates per window)."""
    from raincast.steps import score as step
    from raincast.steps.predict import latest_observation_date

    settings, _ = setup()
    try:
        days = step.parse_windows(windows)
        d = parse_date(logical_date) or latest_observation_date(settings)
        rows = step.run(settings, d, days, run_id)
        pending = step.count_pending(settings, d, max(days))
    except (LookupError, ValueError) as err:
        raise fail(str(err)) from err
    if not rows:
        typer.echo(f"nothing to score yet ({pending} predictions pending outcomes)")
        return

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    for r in rows:
        window = f"{r.window_days}d"
        record("raincast_live_f1", r.f1, window=window)
        record("raincast_live_roc_auc", r.roc_auc, window=window)
        record("raincast_live_base_rate", r.base_rate, window=window)
        record("raincast_live_calibration_error", r.calibration_error, window=window)
        record("raincast_live_scored_rows", r.n_scored, window=window)
        typer.echo(
            f"live {r.window_days}d to {r.as_of_date} {r.model_name} "
            f"(versions {r.model_versions or '-'}): n={r.n_scored} F1 {fmt(r.f1)} "
            f"precision {fmt(r.precision)} recall {fmt(r.recall)} ROC AUC {fmt(r.roc_auc)} | "
            f"base rate {fmt(r.base_rate)} predicted {fmt(r.predicted_positive_rate)} "
            f"mean p {fmt(r.mean_probability)} | {r.n_pending} pending in window"
        )
    typer.echo(f"{pending} predictions pending outcomes")


#: Exit code of `retrain-due` when no retrain is needed: Airflow marks the task skipped.
NOT_DUE_EXIT = SKIP_EXIT


@app.command("retrain-due", rich_help_panel=DAILY_CYCLE)
def retrain_due(
    run_type: Annotated[
        str,
        typer.Option(help="Airflow dag_run.run_type: asset_triggered | scheduled | manual | ..."),
    ] = "manual",
) -> None:
    """Gate of the retrain DAG. New observations (asset_triggered) and manual runs always
    retrain; the daily time-based safety net retrains only when there is no champion, it
    is older than retrain.max_age_days, or its live F1 / ROC AUC fell below
    retrain.live_floor in retrain.breaches_needed of its last retrain.of_last scored
    windows. Exits 99 (Airflow: skipped) when not due."""
    from datetime import UTC, datetime

    from raincast.data import store
    from raincast.models import tracking
    from raincast.models.registry import CHAMPION
    from raincast.steps.retrain_due import age_verdict, live_verdict

    settings, params = setup()
    if run_type != "scheduled":
        typer.echo(f"retrain due: {run_type} run")
        return
    client = tracking.configure(settings)
    try:
        champ = client.get_model_version_by_alias(settings.model_name, CHAMPION)
    except Exception:
        typer.echo("retrain due: no champion yet")
        return
    created = datetime.fromtimestamp(champ.creation_timestamp / 1000, UTC)
    age = age_verdict(str(champ.version), (datetime.now(UTC) - created).days, params.retrain)
    with data_errors(settings):
        scores = store.read_live_scores(store.connect(settings.raw_store_url), settings.model_name)
    live = live_verdict(scores, str(champ.version), params.retrain)
    if age.due or live.due:
        for rule in (age, live):
            typer.echo(f"retrain due: {rule.reason}" if rule.due else rule.reason)
        return
    typer.echo(f"not due: {age.reason}; {live.reason}; skipping")
    raise typer.Exit(NOT_DUE_EXIT)


@app.command(rich_help_panel=DAILY_CYCLE)
@observed("promote")
def promote(
    version: Annotated[
        str | None, typer.Option(help="Candidate version (default: the one just trained).")
    ] = None,
) -> None:
    """Champion vs challenger on the same test slice; move `champion` only if the rule passes."""
    from raincast.steps.promote import run as do_promote

    settings, params = setup()
    out = do_promote(settings, params.promote, version, params.drift.mode)
    if out.decision is not None:
        record("raincast_promotion_promoted", float(out.decision.promote))
    _record_champion(settings)
    _print_promotion(out)


def _record_champion(settings: Settings) -> None:
    from raincast.models import tracking
    from raincast.models.registry import CHAMPION

    try:
        client = tracking.configure(settings)
        champ = client.get_model_version_by_alias(settings.model_name, CHAMPION)
    except Exception:  # no champion yet: nothing to report
        return
    record("raincast_champion_version", float(champ.version))
    record("raincast_champion_created_timestamp_seconds", champ.creation_timestamp / 1000)


def _print_promotion(out: PromotionOutcome) -> None:
    d, c = out.decision, out.candidate
    if out.skipped or d is None or c is None:
        typer.echo(f"no decision: {out.skipped}; champion is version {out.champion_version}")
        return
    typer.secho(
        f"decision: version {c.version} {d.label.upper()}",
        fg="green" if d.promote else "yellow",
        bold=True,
    )
    for r in d.reasons:
        typer.echo(f"  - {r}")
    typer.echo(f"champion: version {out.champion_version}")


def _print_replay(rep: ReplayReport | None, skipped: str) -> None:
    if rep is None:
        typer.echo(f"replay skipped: {skipped}")
        return
    w = rep.window
    head = (
        f"replayed window (not live): {rep.model_name} v{rep.model_version} on {w.first}..{w.last}"
    )
    if not rep.written:
        typer.echo(f"{head}: {rep.reason}")
        return
    typer.echo(f"{head}: {rep.n_predictions} predictions, {rep.n_scored} scored; {w.note}")
    for days, s in sorted(rep.latest.items()):
        auc = "n/a" if s["roc_auc"] is None else f"{s['roc_auc']:.4f}"
        f1 = "n/a" if s["f1"] is None else f"{s['f1']:.4f}"
        typer.echo(
            f"  replayed {days}d to {s['as_of_date']}: n={s['n_scored']} F1 {f1} ROC AUC {auc}"
        )


@app.command(rich_help_panel=DAILY_CYCLE)
@observed("replay")
def replay(run_id: RunIdOpt = None) -> None:
    """The champion re-predicts the newest replay.days it did not train on and scores them
    (replayed window for Monitor, apart from live scores). Exits 99 without a champion."""
    from raincast.pipeline.replay import replay as do_replay
    from raincast.steps.predict import NoChampionError

    settings, params = setup()
    try:
        rep = do_replay(settings, params.replay, run_id)
    except NoChampionError as err:
        typer.echo(f"skipped: {err}")
        raise typer.Exit(SKIP_EXIT) from err
    except (LookupError, ValueError) as err:
        raise fail(str(err)) from err
    _print_replay(rep, "")


@app.command(rich_help_panel=REGISTRY)
def reproduce(
    version: Annotated[str, typer.Argument(help="Registered version to rebuild.")],
    allow_dirty: Annotated[
        bool,
        typer.Option(
            "--allow-dirty",
            help="Go on when the code cannot be shown to be the version's git commit "
            "(another HEAD, uncommitted changes, no git).",
        ),
    ] = False,
) -> None:
    """Rebuild a registered version from its lineage (git commit, DVC data, params hash,
    split windows) and compare it with the registry's booster. Exit 1 on a mismatch or a
    refusal."""
    import os

    from raincast.pipeline.reproduce import ReproduceError
    from raincast.pipeline.reproduce import reproduce as reproduce_version

    # The artifact download's progress bar would interleave with the one-line verdict.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    settings, _ = setup()
    try:
        report = reproduce_version(settings, version, allow_dirty=allow_dirty)
    except ReproduceError as err:
        raise fail(one_line(err)) from err
    if not report.ok:
        raise fail(report.summary())
    typer.echo(report.summary())


@app.command(rich_help_panel=REGISTRY)
def rollback(
    to: Annotated[
        str | None, typer.Option(help="Version to restore (default: previous champion).")
    ] = None,
) -> None:
    """Move the champion alias back to the previous champion (or --to VERSION)."""
    from mlflow.exceptions import MlflowException

    from raincast.pipeline.aliases import rollback as do_rollback

    settings, _ = setup()
    try:
        before, after = do_rollback(settings, to)
    except (LookupError, MlflowException) as err:
        raise fail(str(err)) from err
    typer.echo(f"champion: version {before} -> {after}")


@app.command(rich_help_panel=DAILY_CYCLE)
def run(
    source: Annotated[
        str,
        typer.Option(
            envvar="RAINCAST_SOURCE", help="openmeteo | synthetic | csv:<file> | replay:<file>"
        ),
    ] = "openmeteo",
    logical_date: DateOpt = None,
    allow_mixed_sources: AllowMixedOpt = False,
) -> None:
    """One full daily cycle: history if the store is empty, fetch, validate, dvc repro, promote.

    Only this command falls back to the synthetic source when Open-Meteo is unreachable,
    and only into a store that holds no real rows. Holds the store lock for the cycle.
    """
    from raincast.pipeline import cycle
    from raincast.steps.fetch import make_source

    settings, params = setup()
    if allow_mixed_sources:
        settings = settings.model_copy(update={"allow_mixed_sources": True})
    try:
        with data_errors(settings):
            src = make_source(source, settings)
            d = parse_date(logical_date) or cycle.default_date(src)
            fallback = make_source("synthetic", settings) if source == "openmeteo" else None
            progress = cycle.Progress(lambda line: typer.echo(line, err=True))
            rep = cycle.run_cycle(settings, params, src, d, fallback, progress)
    except typer.Exit:
        raise
    except RuntimeError as err:  # a DVC stage failed: its own output follows
        raise fail(str(err)) from err
    if rep.fell_back:
        typer.secho(
            "WARNING: Open-Meteo was unreachable; this cycle ran on SYNTHETIC data "
            "(MLflow tag data_source=synthetic).",
            fg="red",
            bold=True,
            err=True,
        )
    typer.echo(
        f"cycle for {rep.logical_date} on {rep.source}: {rep.history_rows} history rows, "
        f"{rep.day_rows} rows for the day"
    )
    _print_promotion(rep.promotion)
    _print_replay(rep.replay, rep.replay_skipped)
    from raincast import catalog

    if catalog.TEST_METRICS.at(settings.project_dir).exists():
        m = catalog.load_json(settings.project_dir, catalog.TEST_METRICS)
        typer.echo(
            "latest model test metrics: "
            + "  ".join(
                f"{k}={m[k]:.4f}"
                for k in ("f1", "roc_auc", "pr_auc", "accuracy", "precision", "recall")
                if k in m
            )
        )


# `raincast backtest`: the retrain policies replayed over a date range (its own module).
app.command(rich_help_panel=DAILY_CYCLE)(backtest)
