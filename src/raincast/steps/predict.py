"""predict: rain tomorrow for every station observed on a day, by the champion, stored.

A prediction made from the observations of day D is for target D+1; `raincast score`
judges it once D+1's outcome is in the raw store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from raincast import schema
from raincast.data import store
from raincast.settings import Settings

log = logging.getLogger(__name__)

LOCK_NAME = "raincast-predictions"
#: A station that reported within this many days before D but not on D counts as missing.
MISSING_LOOKBACK_DAYS = 7


class NoChampionError(LookupError):
    """The registry has no `champion` alias for the model."""


class NoObservationsError(LookupError):
    """The raw store holds no observation rows for the requested day."""


@dataclass(frozen=True)
class PredictReport:
    observation_date: date
    target_date: date
    model_name: str
    model_version: str
    rows: int
    inserted: int
    updated: int
    unchanged: int
    mean_probability: float
    missing_stations: tuple[str, ...]

    @property
    def written(self) -> int:
        return self.inserted + self.updated


def default_run_id() -> str:
    return f"cli:{datetime.now(UTC).isoformat(timespec='seconds')}"


def latest_observation_date(settings: Settings) -> date:
    """Newest observation date in the raw store (the default day of predict and score)."""
    span = store.date_range(store.connect(settings.raw_store_url))
    if span is None:
        raise NoObservationsError("the raw store is empty: fetch and validate data first")
    return span[1]


def missing_stations(obs: pd.DataFrame, day: date) -> tuple[str, ...]:
    """Stations with rows in ``obs`` before ``day`` but none on ``day``."""
    on_day = obs[schema.DATE] == day.isoformat()
    before = set(obs.loc[obs[schema.DATE] < day.isoformat(), schema.LOCATION])
    return tuple(sorted(before - set(obs.loc[on_day, schema.LOCATION])))


def prediction_rows(
    raw: pd.DataFrame,
    out: pd.DataFrame,
    model_name: str,
    model_version: str,
    run_id: str,
    predicted_at: datetime,
) -> list[dict[str, object]]:
    """Rows of the `predictions` table from raw day-D rows and the model's output for them."""
    days = [date.fromisoformat(d) for d in raw[schema.DATE]]
    threshold = out["threshold"] if "threshold" in out.columns else pd.Series(np.nan, out.index)
    return [
        {
            "target_date": d + timedelta(days=1),
            schema.LOCATION: loc,
            "model_name": model_name,
            "model_version": model_version,
            "observation_date": d,
            "probability": float(p),
            "label": str(label),
            "threshold": None if pd.isna(t) else float(t),
            "predicted_at": predicted_at,
            "run_id": run_id,
        }
        for d, loc, p, label, t in zip(
            days, raw[schema.LOCATION], out["probability"], out["label"], threshold, strict=True
        )
    ]


def run(settings: Settings, day: date, run_id: str | None = None) -> PredictReport:
    """Predict rain on ``day`` + 1 for every station observed on ``day`` with the champion,
    and upsert the predictions (a rerun with the same champion writes nothing)."""
    import mlflow.pyfunc

    from raincast.models import tracking
    from raincast.models.registry import CHAMPION, alias_version, model_uri

    engine = store.connect(settings.raw_store_url)
    obs = store.read_observations(engine, day - timedelta(days=MISSING_LOOKBACK_DAYS), day)
    today = obs[obs[schema.DATE] == day.isoformat()].reset_index(drop=True)
    if today.empty:
        raise NoObservationsError(f"no observations on {day} in the raw store")

    name = settings.model_name
    client = tracking.configure(settings)
    version = alias_version(client, name, CHAMPION)
    if version is None:
        raise NoChampionError("no champion: run `raincast run` or promote a model first")
    # Load the resolved version, not the alias: a promotion in between cannot mislabel rows.
    model = mlflow.pyfunc.load_model(model_uri(name, version))
    raw = today[list(schema.INPUT_COLUMNS)]
    out = model.predict(raw)

    rows = prediction_rows(raw, out, name, version, run_id or default_run_id(), datetime.now(UTC))
    with store.exclusive_lock(engine, LOCK_NAME, settings.lock_dir):
        res = store.upsert_predictions(engine, rows)
    report = PredictReport(
        observation_date=day,
        target_date=day + timedelta(days=1),
        model_name=name,
        model_version=version,
        rows=len(rows),
        inserted=res.inserted,
        updated=res.updated,
        unchanged=res.unchanged,
        mean_probability=float(out["probability"].mean()),
        missing_stations=missing_stations(obs, day),
    )
    log.info("predictions for %s: %s", report.target_date, report)
    return report
