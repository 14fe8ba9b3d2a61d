"""The `raincast` command line: one command per pipeline step (same names as DVC stages and
Airflow task ids), plus the registry tools and `run`, the one-shot daily cycle."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from raincast.params import Params
    from raincast.serving.auth import UserStore
    from raincast.settings import Settings

app = typer.Typer(
    help="raincast: keep a rain-tomorrow model fresh and serve it safely.", no_args_is_help=True
)
registry_app = typer.Typer(
    help="Inspect and move registry aliases (stage names map to aliases).", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")
users_app = typer.Typer(
    help="Manage API users in $RAINCAST_USERS_FILE (default var/users.json).",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")

log = logging.getLogger("raincast")

DateOpt = Annotated[
    str | None,
    typer.Option(
        "--date", "-d", help="Logical date YYYY-MM-DD (default: $RAINCAST_DATE or today)."
    ),
]


def _setup() -> tuple[Settings, Params]:
    from raincast.monitoring.jobs import configure_logging
    from raincast.params import load_params
    from raincast.settings import Settings

    configure_logging(os.environ.get("RAINCAST_LOG_LEVEL", "INFO"))
    for noisy in ("alembic", "mlflow", "urllib3", "botocore", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings()
    return settings, load_params(settings.project_dir / "params.yaml")


def _observed(step: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Run a pipeline step inside `monitoring.jobs.job`: span, JSON logs, Pushgateway."""

    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def wrapper(*args: object, **kwargs: object) -> None:
            from raincast.monitoring import jobs

            with jobs.job(step):
                fn(*args, **kwargs)

        return wrapper

    return deco


def _record(name: str, value: float | None, **labels: str) -> None:
    if value is not None:
        from raincast.monitoring import jobs

        jobs.record(name, value, **labels)


def _date(value: str | None) -> date | None:
    value = value or os.environ.get("RAINCAST_DATE")
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


#: Exit code that makes Airflow mark the task skipped (dags/raincast_tasks.SKIP_EXIT_CODE).
SKIP_EXIT = 99


def _fail(msg: str) -> typer.Exit:
    typer.secho(f"error: {msg}", fg="red", err=True)
    return typer.Exit(1)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


@contextmanager
def _data_errors(settings: object) -> Iterator[None]:
    """fetch / validate / run: every expected failure of the data side (a source, a file,
    the store, its lock, a refused mix) becomes one line on stderr and exit 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from raincast.data.store import SourceMixError, StoreBusyError
    from raincast.pipeline.ingest import ValidationFailedError
    from raincast.sources import SourceUnavailableError

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
        raise _fail(_one_line(err)) from err
    except SQLAlchemyError as err:
        from sqlalchemy.engine import make_url

        url = make_url(settings.raw_store_url).render_as_string(hide_password=True)  # type: ignore[attr-defined]
        detail = _one_line(getattr(err, "orig", None) or err)[:300]
        raise _fail(
            f"the store at {url} failed ({type(err).__name__}: {detail}); check "
            "RAINCAST_STORE_URL and that the database is up"
        ) from err


AllowMixedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-mixed-sources",
        envvar="RAINCAST_ALLOW_MIXED_SOURCES",
        help="Let real and synthetic rows share the store (refused by default).",
    ),
]


@app.command()
@_observed("fetch")
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
    from raincast.pipeline import ingest
    from raincast.sources import default_date, history_start

    settings, params = _setup()
    with _data_errors(settings):
        src = ingest.make_source(source, settings)
        d = _date(logical_date) or default_date(src)
        first = _date(start)
        if history_if_empty and first is None:
            engine = store.connect(settings.raw_store_url)
            if store.count_rows(engine) == 0:
                first = min(history_start(src, d, params.history), d)
                typer.echo(f"the store is empty: fetching its history from {first}")
        res = ingest.fetch(settings, src, d, first)
    if res.unknown_columns:
        typer.secho(
            f"note: {len(res.unknown_columns)} column(s) outside the weatherAUS schema were "
            f"ignored: {', '.join(res.unknown_columns)}",
            fg="yellow",
            err=True,
        )
    _record("raincast_rows_fetched", res.rows)
    typer.echo(f"fetched {res.rows} rows from {res.source} for {d} -> {res.path}")


@app.command()
@_observed("validate")
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
    from raincast.pipeline import ingest

    settings, params = _setup()
    d = _date(logical_date) or date.today()
    with _data_errors(settings):
        out = ingest.validate(
            settings,
            params.validate_,
            d,
            run_id,
            allow_mixed=allow_mixed_sources or None,
        )
    r, u = out.result, out.upsert
    _record("raincast_rows_accepted", len(r.accepted))
    _record("raincast_rows_quarantined", len(r.quarantined))
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
)
def dvc_command(ctx: typer.Context) -> None:
    """`dvc ARGS...` for pipeline tasks: first drops DVC run-locks a killed container left
    under this PID (every container command is PID 1), then becomes dvc (same PID)."""
    import os
    import shutil
    import sys

    from raincast.pipeline.dvc_locks import drop_stale_own_pid_locks

    settings, _ = _setup()
    drop_stale_own_pid_locks(settings.project_dir / ".dvc" / "tmp")
    local = Path(sys.executable).parent / "dvc"
    binary = str(local) if local.exists() else shutil.which("dvc")
    if binary is None:
        raise _fail("dvc is not installed in this environment")
    sys.stdout.flush()
    os.execv(binary, [binary, *ctx.args])


@app.command()
@_observed("process")
def process() -> None:
    """Export labelled rows of the raw store to data/processed (DVC stage)."""
    from raincast.pipeline import stages

    settings, _ = _setup()
    typer.echo(f"processed {stages.process(settings)} labelled rows")


@app.command()
@_observed("split")
def split() -> None:
    """Temporal train/validation/test split (DVC stage)."""
    from raincast.pipeline import stages

    settings, params = _setup()
    try:
        typer.echo(json.dumps(stages.split(settings, params)))
    except ValueError as err:
        raise _fail(str(err)) from err


@app.command()
@_observed("drift")
def drift() -> None:
    """Evidently drift: champion's training window vs the last drift.window_days (DVC stage)."""
    from raincast.pipeline import stages

    settings, params = _setup()
    try:
        out = stages.drift(settings, params)
    except (ValueError, FileNotFoundError) as err:
        raise _fail(str(err)) from err
    _record("raincast_drift_share", out["drift_share"])
    _record("raincast_drift_detected", float(out["drift_detected"]))
    _record("raincast_drift_columns", len(out["drifted_columns"]))
    verdict = "DRIFT" if out["drift_detected"] else "no drift"
    typer.echo(
        f"{verdict}: share {out['drift_share']:.2f} of {len(out['columns'])} columns "
        f"({', '.join(out['drifted_columns']) or 'none drifted'}); "
        f"reference {out['reference_window']} ({out['reference_source']}), "
        f"current {out['current_window']}"
    )


@app.command()
@_observed("train")
def train() -> None:
    """Fit XGBoost, log the MLflow run and register the model as challenger (DVC stage)."""
    from raincast.pipeline import stages

    settings, params = _setup()
    from mlflow.exceptions import MlflowException

    try:
        out = stages.train(settings, params)
    except MlflowException as err:  # e.g. tracking server down: one clear line, exit 1
        uri = settings.tracking_uri
        where = (
            " (uploading to the artifact store behind it, S3 in production)"
            if "mlflow-artifacts" in str(err)
            else ""
        )
        raise _fail(f"MLflow at {uri}{where} failed, nothing registered: {err}") from err
    val = json.loads((settings.project_dir / stages.METRICS_DIR / "validation.json").read_text())
    _record("raincast_model_f1", val["f1"], slice="validation")
    _record("raincast_model_roc_auc", val["roc_auc"], slice="validation")
    typer.echo(
        f"registered {out['model_name']} version {out['model_version']} (run {out['run_id']})"
    )


@app.command()
@_observed("evaluate")
def evaluate() -> None:
    """Score the trained model on the test slice; write metrics and plots (DVC stage)."""
    from raincast.pipeline import stages

    settings, _ = _setup()
    m = stages.evaluate(settings)
    _record("raincast_model_f1", m["f1"], slice="test")
    _record("raincast_model_roc_auc", m["roc_auc"], slice="test")
    typer.echo(f"test F1 {m['f1']:.4f}  ROC AUC {m['roc_auc']:.4f}  PR AUC {m['pr_auc']:.4f}")


BatchDateOpt = Annotated[
    str | None,
    typer.Option(
        "--date",
        "-d",
        help="Observation date YYYY-MM-DD (default: $RAINCAST_DATE or the newest in the store).",
    ),
]
RunIdOpt = Annotated[
    str | None,
    typer.Option(
        envvar="RAINCAST_RUN_ID", help="Run id stored with the rows (default: cli:<time>)."
    ),
]


@app.command()
@_observed("predict")
def predict(logical_date: BatchDateOpt = None, run_id: RunIdOpt = None) -> None:
    """Predict rain tomorrow for every station observed on the date, with the champion."""
    from mlflow.exceptions import MlflowException

    from raincast.pipeline import batch

    settings, _ = _setup()
    try:
        d = _date(logical_date) or batch.latest_observation_date(settings)
        rep = batch.predict_day(settings, d, run_id)
    except batch.NoChampionError as err:
        # A fresh deployment: the first retrain (triggered by the same Asset event) has not
        # promoted a model yet. Nothing to predict with is not a failure: Airflow skips.
        typer.echo(f"skipped: {err}")
        raise typer.Exit(SKIP_EXIT) from err
    except (LookupError, ValueError, MlflowException) as err:
        raise _fail(str(err)) from err
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


@app.command()
@_observed("score")
def score(
    logical_date: BatchDateOpt = None,
    windows: Annotated[
        str, typer.Option(help="Comma-separated window lengths in days, ending at the date.")
    ] = "7,30",
    run_id: RunIdOpt = None,
) -> None:
    """Score past predictions against observed outcomes (live F1, AUC, rates per window)."""
    from raincast.pipeline import batch

    settings, _ = _setup()
    try:
        days = batch.parse_windows(windows)
        d = _date(logical_date) or batch.latest_observation_date(settings)
        rows = batch.score_day(settings, d, days, run_id)
        pending = batch.count_pending(settings, d, max(days))
    except (LookupError, ValueError) as err:
        raise _fail(str(err)) from err
    if not rows:
        typer.echo(f"nothing to score yet ({pending} predictions pending outcomes)")
        return

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    for r in rows:
        window = f"{r.window_days}d"
        _record("raincast_live_f1", r.f1, window=window)
        _record("raincast_live_roc_auc", r.roc_auc, window=window)
        _record("raincast_live_base_rate", r.base_rate, window=window)
        _record("raincast_live_calibration_error", r.calibration_error, window=window)
        _record("raincast_live_scored_rows", r.n_scored, window=window)
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


@app.command("retrain-due")
def retrain_due(
    run_type: Annotated[
        str,
        typer.Option(help="Airflow dag_run.run_type: asset_triggered | scheduled | manual | ..."),
    ] = "manual",
) -> None:
    """Gate of the retrain DAG. New observations (asset_triggered) and manual runs always
    retrain; the daily time-based safety net retrains only when there is no champion or it
    is older than retrain.max_age_days. Exits 99 (Airflow: skipped) when not due."""
    from datetime import UTC, datetime

    from raincast.models import tracking
    from raincast.models.registry import CHAMPION

    settings, params = _setup()
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
    age = (datetime.now(UTC) - created).days
    limit = params.retrain.max_age_days
    if age >= limit:
        typer.echo(f"retrain due: champion version {champ.version} is {age} days old (>= {limit})")
        return
    typer.echo(f"not due: champion version {champ.version} is {age} days old (< {limit}); skipping")
    raise typer.Exit(NOT_DUE_EXIT)


@app.command()
@_observed("promote")
def promote(
    version: Annotated[
        str | None, typer.Option(help="Candidate version (default: the one just trained).")
    ] = None,
) -> None:
    """Champion vs challenger on the same test slice; move `champion` only if the rule passes."""
    from raincast.pipeline.promotion import promote as do_promote

    settings, params = _setup()
    out = do_promote(settings, params.promote, version, params.drift.mode)
    if out.decision is not None:
        _record("raincast_promotion_promoted", float(out.decision.promote))
    _record_champion(settings)
    _print_promotion(out)


def _record_champion(settings: object) -> None:
    from raincast.models import tracking
    from raincast.models.registry import CHAMPION

    try:
        client = tracking.configure(settings)  # type: ignore[arg-type]
        champ = client.get_model_version_by_alias(settings.model_name, CHAMPION)  # type: ignore[attr-defined]
    except Exception:  # no champion yet: nothing to report
        return
    _record("raincast_champion_version", float(champ.version))
    _record("raincast_champion_created_timestamp_seconds", champ.creation_timestamp / 1000)


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


def _print_replay(rep: object, skipped: str) -> None:
    if rep is None:
        typer.echo(f"replay skipped: {skipped}")
        return
    w = rep.window  # type: ignore[attr-defined]
    head = (
        f"replayed window (not live): {rep.model_name} v{rep.model_version} on "  # type: ignore[attr-defined]
        f"{w.first}..{w.last}"
    )
    if not rep.written:  # type: ignore[attr-defined]
        typer.echo(f"{head}: {rep.reason}")  # type: ignore[attr-defined]
        return
    typer.echo(f"{head}: {rep.n_predictions} predictions, {rep.n_scored} scored; {w.note}")  # type: ignore[attr-defined]
    for days, s in sorted(rep.latest.items()):  # type: ignore[attr-defined]
        auc = "n/a" if s["roc_auc"] is None else f"{s['roc_auc']:.4f}"
        f1 = "n/a" if s["f1"] is None else f"{s['f1']:.4f}"
        typer.echo(
            f"  replayed {days}d to {s['as_of_date']}: n={s['n_scored']} F1 {f1} ROC AUC {auc}"
        )


@app.command()
@_observed("replay")
def replay(run_id: RunIdOpt = None) -> None:
    """The champion re-predicts the newest replay.days it did not train on and scores them
    (replayed window for Monitor, apart from live scores). Exits 99 without a champion."""
    from raincast.pipeline import batch
    from raincast.pipeline.replay import replay as do_replay

    settings, params = _setup()
    try:
        rep = do_replay(settings, params.replay, run_id)
    except batch.NoChampionError as err:
        typer.echo(f"skipped: {err}")
        raise typer.Exit(SKIP_EXIT) from err
    except (LookupError, ValueError) as err:
        raise _fail(str(err)) from err
    _print_replay(rep, "")


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
        before, after = do_rollback(settings, to)
    except (LookupError, MlflowException) as err:
        raise _fail(str(err)) from err
    typer.echo(f"champion: version {before} -> {after}")


@registry_app.command("list")
def registry_list() -> None:
    """Versions with their aliases, decision and test scores."""
    from raincast.models import tracking

    settings, _ = _setup()
    client = tracking.configure(settings)
    versions = client.search_model_versions(f"name='{settings.model_name}'")
    for v in sorted(versions, key=lambda v: int(v.version)):
        t = v.tags
        typer.echo(
            f"v{v.version:>4}  aliases={','.join(v.aliases) or '-':<22} "
            f"decision={t.get('promotion.decision', '-'):<9} "
            f"f1={t.get('promotion.candidate_f1', '-')[:6]} "
            f"auc={t.get('promotion.candidate_auc', '-')[:6]}"
        )


@registry_app.command("stage")
def registry_stage(
    version: Annotated[str, typer.Argument(help="Model version.")],
    stage: Annotated[
        str, typer.Argument(help="Production | Staging | Archived | None | a custom label.")
    ],
) -> None:
    """Stage vocabulary: Production -> champion, Staging -> challenger, Archived -> no alias."""
    from mlflow.exceptions import MlflowException

    from raincast.pipeline.promotion import move_alias

    settings, _ = _setup()
    try:
        alias = move_alias(settings, version, stage)
    except (ValueError, MlflowException) as err:
        raise _fail(str(err)) from err
    typer.echo(f"version {version}: {stage} -> alias {alias or '(none)'}")


@registry_app.command("history")
def registry_history() -> None:
    """Every recorded registry decision, oldest first."""
    from raincast.data import store

    settings, _ = _setup()
    df = store.read_history(store.connect(settings.raw_store_url), settings.model_name)
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


def _user_store() -> UserStore:
    try:
        from raincast.serving.auth import UserStore, users_file_from_env
    except ImportError as err:
        raise _fail(f"{err}; install the serve extra: pip install 'raincast[serve]'") from err
    return UserStore(users_file_from_env())


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name: 3-64 of a-z 0-9 _ . -")],
    role: Annotated[str, typer.Option(help="user | admin (admin may call /admin/*).")] = "user",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin (scripts).")
    ] = False,
) -> None:
    """Add a user; the password (12+ characters) is stored only as an argon2id hash."""
    import sys

    from raincast.serving.auth import UserStoreError, check_user

    store = _user_store()
    try:
        check_user(name, role)  # before asking for a password
    except UserStoreError as err:
        raise _fail(str(err)) from err
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        store.add(name, password, role)
    except UserStoreError as err:
        raise _fail(str(err)) from err
    typer.echo(f"added {role} {name} to {store.path}")


@users_app.command("remove")
def users_remove(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Remove a user; tokens already issued stay valid until they expire."""
    from raincast.serving.auth import UserStoreError

    store = _user_store()
    try:
        store.remove(name)
    except (LookupError, UserStoreError) as err:
        raise _fail(str(err)) from err
    typer.echo(f"removed {name} from {store.path}")


@users_app.command("list")
def users_list() -> None:
    """User names and roles (never the hashes)."""
    from raincast.serving.auth import UserStoreError

    store = _user_store()
    try:
        users = store.list()
    except UserStoreError as err:
        raise _fail(str(err)) from err
    if not users:
        typer.echo(f"no users in {store.path}")
    for u in users:
        typer.echo(f"{u.name:<24} {u.role:<6} {u.created_at}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.")] = 3000,
) -> None:
    """Serve the registry champion with BentoML behind JWT auth (see README: API)."""
    import shutil
    import sys

    from raincast.serving.auth import AuthConfig, AuthConfigError

    settings, _ = _setup()
    try:
        AuthConfig.from_env()  # refuse to start without a strong secret, before BentoML
    except AuthConfigError as err:
        raise _fail(str(err)) from err
    # `bentoml serve` empties $BENTOML_HOME/prometheus_multiproc_dir as it starts: a second
    # server sharing the home would wipe this one's metrics. One home per port.
    os.environ.setdefault("BENTOML_HOME", str(settings.state_dir / "bentoml" / str(port)))
    bentoml = shutil.which("bentoml", path=str(Path(sys.executable).parent)) or "bentoml"
    cmd = [bentoml, "serve", "raincast.serving.service:RainService"]
    os.execvp(bentoml, [*cmd, "--host", host, "--port", str(port)])


@app.command()
def airflow(
    port: Annotated[int, typer.Option(help="Port of the Airflow UI / API server.")] = 8080,
) -> None:
    """Start Airflow standalone on 127.0.0.1 for the DAGs in dags/ (local task runner)."""
    from raincast import local_airflow

    settings, _ = _setup()
    env = local_airflow.airflow_env(settings, port)
    typer.echo("preparing Airflow (metadata DB, pool raincast_dvc) ...")
    try:
        local_airflow.prepare(env)
    except RuntimeError as err:
        raise _fail(str(err)) from err
    typer.secho(
        f"Airflow UI: http://127.0.0.1:{port}  user: {local_airflow.ADMIN_USER}  "
        f"password: {local_airflow.admin_password(settings)}  (Ctrl-C stops it)",
        fg="green",
        bold=True,
    )
    os.execvpe(local_airflow.airflow_bin(), [local_airflow.airflow_bin(), "standalone"], env)


@app.command()
def up(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every service.")] = 300,
) -> None:
    """Start MLflow, Airflow, the API, the UI (+ Prometheus/Pushgateway) without Docker."""
    from raincast import local_stack

    settings, _ = _setup()
    ports = local_stack.Ports.from_env()
    try:
        urls = local_stack.up(settings, ports, timeout)
    except RuntimeError as err:
        raise _fail(str(err)) from err
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


@app.command()
def down() -> None:
    """Stop everything `raincast up` started."""
    from raincast import local_stack

    settings, _ = _setup()
    stopped = local_stack.down(settings)
    typer.echo("stopped" if stopped else "nothing was running")


@app.command()
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
    from raincast.pipeline import cycle, ingest

    settings, params = _setup()
    if allow_mixed_sources:
        settings = settings.model_copy(update={"allow_mixed_sources": True})
    try:
        with _data_errors(settings):
            src = ingest.make_source(source, settings)
            d = _date(logical_date) or cycle.default_date(src)
            fallback = ingest.make_source("synthetic", settings) if source == "openmeteo" else None
            progress = cycle.Progress(lambda line: typer.echo(line, err=True))
            rep = cycle.run_cycle(settings, params, src, d, fallback, progress)
    except typer.Exit:
        raise
    except RuntimeError as err:  # a DVC stage failed: its own output follows
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
        f"cycle for {rep.logical_date} on {rep.source}: {rep.history_rows} history rows, "
        f"{rep.day_rows} rows for the day"
    )
    _print_promotion(rep.promotion)
    _print_replay(rep.replay, rep.replay_skipped)
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
