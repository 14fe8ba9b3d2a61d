"""How often the live retrain trigger fires on a healthy champion (the committed
``retrain.live_floor`` was chosen from this).

Fits the champion the committed params would (weatherAUS, temporal split, refit), then
scores it as the daily batch would: rolling ``retrain.live_window_days`` windows over all
stations, on its never-seen test year and on rattle's later rows (2017-06-26 onwards, one
class-balanced model kept for 8.5 years). For each floor it counts the days on which
`raincast.steps.retrain_due.live_verdict` says due.

    uv run --locked python -m bench.live_floor ../shared/data
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from raincast import schema
from raincast.features import label_vector
from raincast.models.train import fit, predict_proba
from raincast.params import LiveFloor, RetrainParams, load_params
from raincast.sources.csvfile import read_raw_csv
from raincast.steps.retrain_due import live_verdict
from raincast.steps.score import ScoreRow, live_metrics
from raincast.steps.split import split_by_time

RESULTS = Path(__file__).parent / "results" / "live_floor.json"
#: Floors compared with the committed one: (F1, ROC AUC).
CANDIDATES = ((0.55, 0.85), (0.5, 0.85), (0.5, 0.8), (0.45, 0.8), (0.4, 0.8), (0.35, 0.78))


def labelled(path: Path) -> pd.DataFrame:
    raw, _ = read_raw_csv(path)
    return raw[raw[schema.RAIN_TOMORROW].isin(schema.YES_NO)].reset_index(drop=True)


def windows(rows: pd.DataFrame, p: np.ndarray, threshold: float, days: int) -> pd.DataFrame:
    """Live-score rows of one model version, one per target day (target = Date + 1)."""
    y = label_vector(rows)
    target = (pd.to_datetime(rows[schema.DATE]).dt.date + timedelta(days=1)).to_numpy()
    out = []
    for end in sorted(set(target)):
        mask = (target > end - timedelta(days=days)) & (target <= end)
        metrics = live_metrics(y[mask], (p[mask] >= threshold).astype(int), p[mask])
        row = ScoreRow(end, days, "rain-tomorrow", end - timedelta(days=days - 1), "1",
                       int(mask.sum()), 0, scored_at=datetime.now(UTC), run_id="bench",
                       **metrics)  # fmt: skip
        out.append({**asdict(row), "as_of_date": end.isoformat()})
    return pd.DataFrame(out)


def fires(scores: pd.DataFrame, rule: RetrainParams) -> list[str]:
    """The days on which the live trigger says due, given the windows scored up to then."""
    ends, m = scores["as_of_date"].tolist(), rule.of_last
    # Only the last of_last windows can decide: pass those (all are version 1's).
    last = (scores.iloc[max(0, i + 1 - m) : i + 1] for i in range(len(ends)))
    return [d for d, recent in zip(ends, last, strict=True) if live_verdict(recent, "1", rule).due]


def summary(scores: pd.DataFrame, committed: RetrainParams) -> dict[str, object]:
    full = scores[scores["n_scored"] >= 0.9 * scores["n_scored"].median()]
    q = full[["f1", "roc_auc"]].quantile([0.01, 0.02, 0.05, 0.1, 0.5]).round(3)
    out: dict[str, object] = {
        "windows": len(scores),
        "first": scores["as_of_date"].iloc[0],
        "last": scores["as_of_date"].iloc[-1],
        "quantiles": {str(k): v for k, v in q.to_dict("index").items()},
    }
    floor = committed.live_floor
    for f1, auc in dict.fromkeys([*CANDIDATES, (floor.f1, floor.roc_auc)]):
        rule = committed.model_copy(update={"live_floor": LiveFloor(f1=f1, roc_auc=auc)})
        days = fires(scores, rule)
        out[f"f1<{f1} or auc<{auc}"] = {"due_days": len(days), "first_due": days[:5]}
    return out


def main(data: str = "../shared/data", params_file: str = "params.yaml") -> dict[str, object]:
    params = load_params(Path(params_file))
    rule, days = params.retrain, params.retrain.live_window_days
    train, val, test, _ = split_by_time(labelled(Path(data) / "weatherAUS.csv.gz"), params.split)
    model = fit(train, val, params.train)
    later = labelled(Path(data) / "weatherAUS_rattle-5.6.2_2007-2026.csv.gz")
    later = later[later[schema.DATE] > str(test[schema.DATE].max())].reset_index(drop=True)
    result: dict[str, object] = {"measured": date.today().isoformat(), "retrain": rule.model_dump()}
    for name, rows in (("test_year", test), ("rattle_later", later)):
        scores = windows(rows, predict_proba(model.booster, rows), model.threshold, days)
        result[name] = summary(scores, rule)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:]), indent=2))
