"""drift: Evidently's comparison of the newest days with the champion's training window.

The champion lives in MLflow, outside DVC's view: the stage reruns when the processed data
or the drift params change (daily), not when only the alias moves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from raincast import catalog, schema
from raincast.data import store
from raincast.params import DriftParams, Params
from raincast.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftSamples:
    reference: pd.DataFrame
    current: pd.DataFrame
    #: The current window, first and last day (ISO).
    current_window: tuple[str, str]


def drift_samples(processed: pd.DataFrame, window: list[str], cfg: DriftParams) -> DriftSamples:
    """Reference rows (``window`` of the processed data; with ``cfg.seasonal`` only the
    current days of the year; at most ``cfg.reference_rows``) and the current rows (the
    last ``cfg.window_days`` days)."""
    reference = processed[
        (processed[schema.DATE] >= window[0]) & (processed[schema.DATE] <= window[1])
    ]
    last = date.fromisoformat(str(processed[schema.DATE].max()))
    start = (last - timedelta(days=cfg.window_days - 1)).isoformat()
    if cfg.seasonal:  # same days of the year only: winter is not drift from summer
        doy = pd.to_datetime(reference[schema.DATE]).dt.dayofyear
        lo, hi = date.fromisoformat(start).timetuple().tm_yday, last.timetuple().tm_yday
        same_season = reference[
            (doy >= lo) & (doy <= hi) if lo <= hi else (doy >= lo) | (doy <= hi)
        ]
        if same_season.empty:
            log.warning("reference window has none of the current days of the year; using all")
        else:
            reference = same_season
    if len(reference) > cfg.reference_rows:
        reference = reference.sample(cfg.reference_rows, random_state=cfg.seed)
    current = processed[processed[schema.DATE] >= start]
    return DriftSamples(reference, current, (start, last.isoformat()))


def champion_train_window(settings: Settings) -> list[str] | None:
    """The champion's training window from its MLflow run tags (None without a champion)."""
    from raincast.models import tracking
    from raincast.models.registry import CHAMPION

    try:
        client = tracking.configure(settings)
        mv = client.get_model_version_by_alias(settings.model_name, CHAMPION)
        window = client.get_run(str(mv.run_id)).data.tags["train_window"]
    except Exception as err:  # no registry, no champion, no tag: fall back to the split
        log.info("no champion training window (%s); using this split's train window", err)
        return None
    return str(window).split("..")


def run(settings: Settings, params: Params) -> dict[str, Any]:
    """Compare the champion's training window (or this split's) with the newest days;
    write the report and `catalog.DRIFT`, and record the result in the store."""
    from raincast.monitoring.drift import detect_drift

    root, cfg = settings.project_dir, params.drift
    processed = catalog.load_frame(root, catalog.PROCESSED)
    window = champion_train_window(settings)
    source = "champion" if window else "split"
    if window is None:
        window = catalog.load_json(root, catalog.WINDOWS)["windows"]["train"]
    samples = drift_samples(processed, window, cfg)
    result = detect_drift(
        samples.reference, samples.current, cfg.share_threshold, cfg.num_threshold
    )
    catalog.save_text(root, catalog.DRIFT_REPORT, result.html)
    body = {
        **result.summary(),
        "share_threshold": cfg.share_threshold,
        "mode": cfg.mode,
        "reference_window": "..".join(window),
        "seasonal": cfg.seasonal,
        "reference_source": source,
        "current_window": "..".join(samples.current_window),
    }
    catalog.save_json(root, catalog.DRIFT, body)
    log.info("drift share %.2f (%s drifted)", result.share, ", ".join(result.drifted) or "none")
    record_drift(settings, body)
    return body


def record_drift(settings: Settings, body: dict[str, Any]) -> dict[str, Any]:
    """Store this cycle's drift result in `drift_results` (Monitor's drift history).

    The cycle is the newest observation day in the raw store (the day the cycle brought
    in); the run is the orchestrator's (``settings.run_id``) or ``cycle:<day>``. Keyed by
    both: re-running a cycle replaces its row.
    """
    from raincast.monitoring.drift import result_row

    engine = store.connect(settings.raw_store_url)
    span = store.date_range(engine)
    if span is None:
        raise ValueError("the raw store is empty: no cycle to record drift for")
    cycle_date = span[1]
    run_id = settings.run_id or f"cycle:{cycle_date.isoformat()}"
    row = result_row(body, cycle_date, run_id, datetime.now(UTC))
    store.upsert_drift_result(engine, row)
    return row
