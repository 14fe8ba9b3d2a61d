"""The replayed window: the champion re-predicts the newest days of the stored history that
it did not learn from, and those predictions are scored against the labels that followed.

It gives Monitor a recent track record right after `raincast run`, before any live
prediction has an outcome. Replayed rows live in their own tables (`replayed_predictions`,
`replayed_scores`, `replay_runs`) and never mix with the live `predictions` /
`live_scores`. The store holds one replayed window per model: the current champion's.
Re-running with the same champion on the same history writes nothing; a new champion (or
a newer labelled day) replaces the window.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from raincast import schema
from raincast.data import store
from raincast.params import ReplayParams
from raincast.settings import Settings
from raincast.steps import predict as predict_step
from raincast.steps import score as score_step

log = logging.getLogger(__name__)

LOCK_NAME = "raincast-replay"


@dataclass(frozen=True)
class ReplayWindow:
    """Observation days to replay and how they relate to the model's training data."""

    first: date
    last: date
    trained_through: date | None
    overlaps_training: bool
    note: str

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


@dataclass(frozen=True)
class ReplayReport:
    model_name: str
    model_version: str
    window: ReplayWindow
    written: bool
    n_predictions: int
    n_scored: int
    #: The newest score row per window length (as-of the last replayed target day).
    latest: dict[int, dict[str, Any]] = field(default_factory=dict)
    reason: str = ""


def trained_through(tags: dict[str, str]) -> date | None:
    """The last observation day a model learned from, from its run's lineage tags.

    Validation counts as learned from: early stopping and the threshold are tuned on it,
    and the refit (train.refit_rounds_factor) trains on it. None without lineage tags.
    """
    for key in ("validation_window", "train_window"):
        if value := tags.get(key):
            return date.fromisoformat(value.split("..")[-1])
    return None


def choose_window(newest_labelled: date, trained: date | None, days: int) -> ReplayWindow:
    """The newest ``days`` observation days up to ``newest_labelled``, starting after the
    model's training data when possible; said so plainly when it is not."""
    start = newest_labelled - timedelta(days=days - 1)
    if trained is None:
        return ReplayWindow(
            start,
            newest_labelled,
            None,
            True,
            "the champion's training window is unknown (no lineage tags): the newest "
            f"{days} days are replayed and may include rows it trained on",
        )
    if trained >= newest_labelled:
        return ReplayWindow(
            start,
            newest_labelled,
            trained,
            True,
            f"the champion trained on every labelled day (through {trained}): the newest "
            f"{days} days are replayed anyway and are NOT out-of-sample",
        )
    if start <= trained:
        start = trained + timedelta(days=1)
        return ReplayWindow(
            start,
            newest_labelled,
            trained,
            False,
            f"out-of-sample: only {(newest_labelled - trained).days} labelled days after the "
            f"champion's training data (through {trained})",
        )
    return ReplayWindow(
        start,
        newest_labelled,
        trained,
        False,
        f"out-of-sample: after the champion's training data (through {trained})",
    )


def replayed_rows(
    raw: pd.DataFrame,
    out: pd.DataFrame,
    outcomes: pd.DataFrame,
    model_name: str,
    model_version: str,
    run_id: str,
    replayed_at: datetime,
) -> pd.DataFrame:
    """Rows of `replayed_predictions`: the model's output for raw day-D rows, joined with
    the observed outcome of D+1 (missing when the store does not hold it)."""
    preds = pd.DataFrame(
        predict_step.prediction_rows(raw, out, model_name, model_version, run_id, replayed_at)
    )
    preds = preds.rename(columns={"predicted_at": "replayed_at"})
    preds["target_date"] = [d.isoformat() for d in preds["target_date"]]
    joined = preds.merge(outcomes, on=["target_date", schema.LOCATION], how="left")
    return joined.sort_values(["target_date", schema.LOCATION]).reset_index(drop=True)


def score_replayed(
    preds: pd.DataFrame,
    window: ReplayWindow,
    windows: tuple[int, ...],
    scored_at: datetime,
    run_id: str,
) -> list[dict[str, Any]]:
    """Rolling scores of replayed predictions: for every target day of the window, each
    window length ending on it (clipped to the replayed days; ``n_scored`` says how many
    predictions it holds). Reuses the live scoring (`score_step.score_windows`)."""
    first_target = window.first + timedelta(days=1)
    rows: list[dict[str, Any]] = []
    day = first_target
    while day <= window.last + timedelta(days=1):
        for r in score_step.score_windows(preds, day, windows, scored_at, run_id):
            row = asdict(r)
            row["window_start"] = max(r.window_start, first_target)
            row["model_version"] = row.pop("model_versions")
            row.pop("n_pending")
            rows.append(row)
        day += timedelta(days=1)
    version = str(preds["model_version"].iloc[0]) if len(preds) else ""
    for row in rows:  # a window without an outcome has no versions: it is still this one's
        row["model_version"] = row["model_version"] or version
    return rows


def _unchanged(
    last: dict[str, Any] | None, version: str, window: ReplayWindow, cfg: ReplayParams
) -> bool:
    return (
        last is not None
        and str(last["model_version"]) == version
        and store.as_date(last["first_observation_date"]) == window.first
        and store.as_date(last["last_observation_date"]) == window.last
        and last["windows"] == ",".join(map(str, cfg.windows))
    )


def replay(settings: Settings, cfg: ReplayParams, run_id: str | None = None) -> ReplayReport:
    """Re-predict the champion's replayed window and store it with its rolling scores.

    Raises NoChampionError without a champion and NoObservationsError (both of the predict
    step) when the store holds no labelled day. Writes nothing when the stored window is
    already this champion's on the same days.
    """
    import mlflow.pyfunc

    from raincast.models import tracking
    from raincast.models.registry import CHAMPION, alias_version, model_uri

    engine = store.connect(settings.raw_store_url)
    newest = store.newest_labelled_date(engine)
    if newest is None:
        raise predict_step.NoObservationsError(
            "no labelled day in the raw store: nothing to replay"
        )
    name = settings.model_name
    client = tracking.configure(settings)
    version = alias_version(client, name, CHAMPION)
    if version is None:
        raise predict_step.NoChampionError(
            "no champion: run `raincast run` or promote a model first"
        )
    # The resolved version, not the alias: a promotion in between cannot mislabel rows.
    mv = client.get_model_version(name, version)
    tags = dict(client.get_run(str(mv.run_id)).data.tags) if mv.run_id else {}
    window = choose_window(newest, trained_through(tags), cfg.days)

    with store.exclusive_lock(engine, LOCK_NAME, settings.lock_dir):
        if _unchanged(store.latest_replay_run(engine, name), version, window, cfg):
            return ReplayReport(
                name,
                version,
                window,
                False,
                0,
                0,
                reason="unchanged: this champion's window "
                f"{window.first}..{window.last} is already stored",
            )
        obs = store.read_observations(engine, window.first, window.last + timedelta(days=1))
        outcomes = score_step.observed_outcomes(obs)
        in_window = obs[obs[schema.DATE] <= window.last.isoformat()].reset_index(drop=True)
        raw = in_window[list(schema.INPUT_COLUMNS)]
        model = mlflow.pyfunc.load_model(model_uri(name, version))
        now = datetime.now(UTC)
        run_id = run_id or f"replay:{name}:v{version}:{now.isoformat(timespec='microseconds')}"
        preds = replayed_rows(raw, model.predict(raw), outcomes, name, version, run_id, now)
        scores = score_replayed(preds, window, cfg.windows, now, run_id)
        n_scored = int(preds["outcome"].notna().sum())
        records = preds.astype(object).where(preds.notna(), None).to_dict("records")
        for r in records:
            r["target_date"] = date.fromisoformat(r["target_date"])
        run = {
            "run_id": run_id,
            "model_name": name,
            "model_version": version,
            "replayed_at": now,
            "first_observation_date": window.first,
            "last_observation_date": window.last,
            "days": window.days,
            "windows": ",".join(map(str, cfg.windows)),
            "n_predictions": len(records),
            "n_scored": n_scored,
            "trained_through": window.trained_through,
            "overlaps_training": window.overlaps_training,
            "note": window.note,
        }
        store.replace_replayed_window(engine, run, records, scores)
    last_target = window.last + timedelta(days=1)
    latest = {int(s["window_days"]): s for s in scores if s["as_of_date"] == last_target}
    report = ReplayReport(name, version, window, True, len(records), n_scored, latest)
    log.info(
        "replayed %s v%s on %s..%s: %d predictions, %d scored (%s)",
        name,
        version,
        window.first,
        window.last,
        len(records),
        n_scored,
        window.note,
    )
    return report
