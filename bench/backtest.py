"""Backtest benchmark: the five retrain policies replayed over a year of the rattle 5.6.2
file (2017-06-25..2018-06-24, after the Kaggle cut-off) with the committed params.yaml,
through `raincast.pipeline.backtest` -> bench/results/backtest.json and backtest_*.png.

A real fit here takes 28-37 s (n_jobs 1 on the shared 2-core host; ~117k train rows,
~290 rounds + the refit), so a year of daily retrains alone would take about three hours:
``--daily-days`` gives daily a shorter window (30 days by default), and every policy is
also summarised over that window, so daily is compared on the same days. The first
champion, and every fit of a day on which several policies retrain, is made once and
shared. The history is every row before the start: 2007-11-01..2017-06-24 in the rattle
file, which has no rows 2016-02..2017-02, so retrains at the end of 2018-01-25..2018-03-01
fail their split (empty validation slice) and keep the champion. The plan and an estimate
of the wall time (from the first fits measured) are printed before the long part; the
progress line shows the ETA.

    uv run --locked python -m bench.backtest --n-jobs 1     # the full run (~1-1.5 h)
    uv run --locked python -m bench.backtest --tiny --end 2017-06-29 --out bench/work/bt
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from raincast import schema
from raincast.cli.backtest import ProgressLine, save_result, summary_table
from raincast.params import Params, load_params
from raincast.pipeline import backtest as bt

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "weatherAUS_rattle-5.6.2_2007-2026.csv.gz"
RESULTS = REPO / "bench" / "results"
#: Seconds of one drift check (Evidently, ~10k reference rows vs ~1.4k current rows),
#: measured at 2.8-5.2 s on this 2-core host under load; only used for the estimate.
DRIFT_CHECK_S = 3.5
#: Seconds of one policy's day without retraining (predict ~47 rows, live + rolling scores).
DAY_S = 0.1
#: The tiny model of `--tiny` (a smoke run: the numbers mean nothing).
TINY: dict[str, Any] = {
    "train": {
        "early_stopping_rounds": 5,
        "refit_rounds_factor": 0.0,
        "xgb": {"n_estimators": 20, "max_depth": 3, "n_jobs": 1},
    }
}


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.backtest", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA, help="weatherAUS CSV (default: rattle)")
    p.add_argument("--start", type=date.fromisoformat, default=date(2017, 6, 25))
    p.add_argument("--end", type=date.fromisoformat, default=date(2018, 6, 24))
    p.add_argument(
        "--daily-days", type=int, default=30, help="days of the daily policy (0: the whole range)"
    )
    p.add_argument("--policy", action="append", default=[], help="repeatable (default: all)")
    p.add_argument("--params", type=Path, default=REPO / "params.yaml")
    p.add_argument("--n-jobs", type=int, default=None, help="override train.xgb.n_jobs")
    p.add_argument("--tiny", action="store_true", help="tiny XGBoost model: a smoke run")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def bench_params(args: argparse.Namespace) -> Params:
    """``--params`` with ``--tiny`` and ``--n-jobs`` applied (this driver's and bench.gates')."""
    params = load_params(args.params)
    if args.tiny:
        from testbed.params_file import merged

        params = Params.model_validate(merged(params.model_dump(by_alias=True), TINY))
    if args.n_jobs:
        xgb = params.train.xgb.model_copy(update={"n_jobs": args.n_jobs})
        params = params.model_copy(update={"train": params.train.model_copy(update={"xgb": xgb})})
    return params


def missing_months(dates: pd.Series) -> list[str]:
    """Runs of calendar months without a row between the first and the last date, as
    ``YYYY-MM`` or ``YYYY-MM..YYYY-MM``."""
    have = set(pd.to_datetime(dates).dt.to_period("M"))
    months = pd.period_range(min(have), max(have), freq="M")
    runs: list[list[pd.Period]] = []
    for m in months:
        if m in have:
            continue
        if runs and runs[-1][-1] + 1 == m:
            runs[-1].append(m)
        else:
            runs.append([m])
    return [str(r[0]) if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs]


def plan(start: date, end: date, last_days: dict[str, date], policies: Sequence[str]) -> dict:
    """Retrains each time-based policy will make, the distinct fits they need (shared per
    day), and the bounds for on-drift (at most one retrain per 7 days, a check a day)."""
    n = (end - start).days + 1
    days = [start + timedelta(days=i) for i in range(n)]
    scheduled = {
        p: [d for i, d in enumerate(days) if d <= last_days.get(p, end) and bt.retrain_due(p, d, i)]
        for p in policies
        if p != "on-drift"
    }
    union = set().union(*scheduled.values()) if scheduled else set()
    on_drift = "on-drift" in policies
    return {
        "days": n,
        "retrains": {p: len(v) for p, v in scheduled.items()},
        "distinct_fits": 1 + len(union),  # + the first champion
        "on_drift_max_retrains": math.ceil(n / bt.DRIFT_RETRAIN_GAP_DAYS) if on_drift else 0,
        "on_drift_max_checks": n if on_drift else 0,
    }


def estimate(planned: dict, fit_s: float, policies: Sequence[str]) -> dict[str, Any]:
    """Wall-time estimate in minutes, [low, high], per policy as if run alone and for this
    run (fits shared): on-drift lies between "no drift ever" (a check every day, no fit)
    and "drift every week" (a check and a fit every 7 days). Failed splits count as fits."""
    on_drift = sorted(
        (
            planned["on_drift_max_checks"] * DRIFT_CHECK_S,
            planned["on_drift_max_retrains"] * (fit_s + DRIFT_CHECK_S),
        )
    )

    def minutes(*seconds: float) -> list[float]:
        return [round(x / 60, 1) for x in seconds]

    alone: dict[str, list[float]] = {}
    for p in policies:
        if p == "on-drift":
            base = planned["days"] * DAY_S
            alone[p] = minutes(base + on_drift[0], base + on_drift[1])
        else:
            days = planned["retrains"][p] if p == "daily" else planned["days"]
            alone[p] = minutes(days * DAY_S + planned["retrains"][p] * fit_s)
    shared = planned["distinct_fits"] * fit_s + planned["days"] * len(policies) * DAY_S
    return {
        "fit_seconds": round(fit_s, 1),
        "minutes_alone": alone,
        "minutes_this_run": minutes(shared + on_drift[0], shared + on_drift[1]),
    }


class _Progress:
    """The progress line, and the estimate once the first fits have been timed."""

    def __init__(self, planned: dict, policies: Sequence[str]) -> None:
        self.line = ProgressLine()
        self.planned, self.policies = planned, policies
        self.estimate: dict[str, Any] | None = None

    def __call__(self, p: bt.BacktestProgress) -> None:
        if self.estimate is None and p.fits:
            self.estimate = estimate(self.planned, p.fit_seconds / p.fits, self.policies)
            print(f"\nestimate: {self.estimate}", file=sys.stderr, flush=True)
        self.line(p)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _args(argv)
    params = bench_params(args)
    policies = bt.parse_policies(args.policy)
    bt.check_range(args.start, args.end)
    load_before = [round(x, 2) for x in os.getloadavg()]
    observations, data = load_window(args.data, args.start, args.end)
    print(f"data: {data}", flush=True)
    last_days = {}
    if args.daily_days and "daily" in policies:
        last_days["daily"] = min(args.end, args.start + timedelta(days=args.daily_days - 1))
    planned = plan(args.start, args.end, last_days, policies)
    print(f"plan: {planned}", flush=True)

    progress = _Progress(planned, policies)
    result = bt.run_backtest(
        observations, args.start, args.end, params, policies, last_days, progress
    )
    same_window = {}
    if "daily" in last_days:
        same_window = {
            p: asdict(bt.summarise(result, p, args.start, last_days["daily"])) for p in policies
        }
    result.meta = run_meta(result, args, params, data, planned, load_before) | {
        "estimate": progress.estimate,
        "summary_on_daily_window": same_window,
    }
    paths = save_result(result, args.out)
    print(summary_table(list(result.summaries.values())))
    if same_window:
        print(f"\nover daily's window ({args.start}..{last_days['daily']}):")
        print(summary_table([bt.PolicySummary(**s) for s in same_window.values()]))
    print(f"\n{result.distinct_fits} distinct fits, wall {result.wall_seconds / 60:.1f} min")
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return result.as_dict()


def load_window(path: Path, start: date, end: date) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The validated rows of ``path`` and what they hold before and inside start..end; exits
    with a message when the window has no row."""
    t0 = time.perf_counter()
    observations, quarantined = bt.load_observations(path)
    dates = observations[schema.DATE]
    history = dates[dates < start.isoformat()]
    in_window = dates[(dates >= start.isoformat()) & (dates <= end.isoformat())]
    if in_window.empty:
        sys.exit(f"no rows of {path.name} between {start} and {end}")
    return observations, {
        "file": path.name,
        "rows": len(observations),
        "quarantined_rows": quarantined,
        "load_seconds": round(time.perf_counter() - t0, 1),
        "history": f"{history.min()}..{history.max()} ({len(history)} rows)",
        "history_months_without_rows": missing_months(history),
        "window_days_with_rows": f"{in_window.nunique()} of {(end - start).days + 1}",
        "window_rows": len(in_window),
    }


def run_meta(
    result: bt.BacktestResult,
    args: argparse.Namespace,
    params: Params,
    data: dict[str, Any],
    planned: dict[str, Any],
    load_before: list[float],
) -> dict[str, Any]:
    """The host, the data, the plan and the mean fit time of a finished run."""
    fits = [result.initial, *(r for r in result.retrains if not r.fit_shared and not r.error)]
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg_1_5_15": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "tiny_model": args.tiny,
        "n_jobs": params.train.xgb.n_jobs,
        "data": data,
        "plan": planned,
        "fit_seconds_mean": round(sum(r.fit_seconds for r in fits) / len(fits), 1),
    }


if __name__ == "__main__":
    main()
