"""Promotion rules compared on the real history (issue 19): the monthly policy replayed over
2016-01-01..2017-06-24 of the Kaggle weatherAUS file under four named promotion rules, on
the same fits, through `raincast.pipeline.backtest` -> bench/results/gates_summary.json and
gates_rolling.png.

The rules differ only in the promote keys (the committed params.yaml otherwise, the gate
enforced):

- ``point``: the point estimates decide (F1 gain >= f1_margin, ROC AUC within
  auc_tolerance); significance none, station guard off;
- ``significance``: point + paired bootstrap (the F1 gain's interval above 0, no
  significant AUC loss); station guard off;
- ``station``: point + the station guard (params.yaml's station_auc_drop and
  station_min_rows);
- ``both``: point + bootstrap + station guard.

Each month's retrain is fitted once and shared by the four rules; only the decisions, and
so the champions served afterwards, differ. Per rule the summary gives the retrains, the
promotions, the rejections and the checks that blocked them, the live ROC AUC and F1 of the
champions served (every scored row of the range), the mean rolling 30-day scores and the
champion versions in the order served. A real fit takes ~30 s on the shared 2-core host
(83k-108k train rows, early stopping, the refit); the run makes 1 + 18 of them (the first
champion at the end of 2015-12-31, then the 1st of each month), and the 541 days of four
lanes add ~0.4 s a day on a quiet host (predict, live and rolling scores), the retrains a
few seconds each (champion scoring, two bootstraps): ~15-20 min in all.

    uv run --locked python -m bench.gates                 # the full run (~15-20 min)
    uv run --locked python -m bench.gates --tiny --end 2016-02-03 --out bench/work/gates
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

from bench.backtest import bench_params, load_window, plan, run_meta
from raincast.catalog import replace_atomically
from raincast.cli.backtest import ProgressLine
from raincast.params import PromoteParams
from raincast.pipeline import backtest as bt

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "weatherAUS.csv.gz"
RESULTS = REPO / "bench" / "results"
SUMMARY = "gates_summary.json"
#: Every day of every lane (git-ignored, like backtest.json).
FULL = "gates.json"
PLOT = "gates_rolling.png"
#: The rules compared, as overrides of params.yaml's promote section.
RULES: dict[str, dict[str, Any]] = {
    "point": {"significance": "none", "station_auc_drop": None},
    "significance": {"significance": "bootstrap", "station_auc_drop": None},
    "station": {"significance": "none"},
    "both": {"significance": "bootstrap"},
}


def rule_variants(promote: PromoteParams, names: Sequence[str] = ()) -> dict[str, PromoteParams]:
    """The named rules (all of `RULES` when ``names`` is empty): ``promote`` with each one's
    overrides and the gate enforced. The station rules keep ``promote``'s station_auc_drop
    and station_min_rows, so they need one: a ValueError when it is null."""
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise ValueError(f"unknown rule {', '.join(unknown)}: use {', '.join(RULES)}")
    chosen = names or tuple(RULES)
    guarded = [n for n in chosen if "station_auc_drop" not in RULES[n]]
    if guarded and promote.station_auc_drop is None:
        raise ValueError(
            f"promote.station_auc_drop is null: rule {', '.join(guarded)} needs a threshold"
        )
    return {name: promote.model_copy(update={**RULES[name], "gate": "enforce"}) for name in chosen}


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gates", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA, help="weatherAUS CSV (default: Kaggle)")
    p.add_argument("--start", type=date.fromisoformat, default=date(2016, 1, 1))
    p.add_argument("--end", type=date.fromisoformat, default=date(2017, 6, 24))
    p.add_argument("--policy", action="append", default=[], help="repeatable (default: monthly)")
    p.add_argument("--rule", action="append", default=[], help=f"repeatable: {', '.join(RULES)}")
    p.add_argument("--params", type=Path, default=REPO / "params.yaml")
    p.add_argument("--n-jobs", type=int, default=None, help="override train.xgb.n_jobs")
    p.add_argument("--tiny", action="store_true", help="tiny XGBoost model: a smoke run")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def rule_table(result: bt.BacktestResult) -> str:
    """Per lane: what its rule allowed and what the champions it served scored live, as a
    Markdown table (the README's comparison table)."""
    lines = [
        "| policy / rule | retrains | promotions | rejections (blocking checks) | "
        "live ROC AUC | live F1 | mean 30-day F1 | champions served |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for lane in result.policies:
        s = result.summaries[lane]
        checks = ", ".join(f"{check} {n}" for check, n in s.blocked_by.items())
        lines.append(
            f"| {lane} | {s.retrains} | {s.promotions} | {s.rejections}"
            f"{f' ({checks})' if checks else ''} | {fmt(s.roc_auc)} | {fmt(s.f1)} | "
            f"{fmt(s.mean_rolling_f1)} | {len(s.champion_versions)} |"
        )
    return "\n".join(lines)


def _plot(result: bt.BacktestResult, path: Path) -> Path:
    """Rolling live F1 and ROC AUC per lane, promotions dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame([asdict(d) for d in result.days])
    frame["day"] = pd.to_datetime(frame["date"])
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for lane, part in frame.groupby("policy", sort=False):
        for ax, col in zip(axes, ("rolling_f1", "rolling_roc_auc"), strict=True):
            (line,) = ax.plot(part["day"], part[col].astype(float), label=str(lane), lw=1.1)
            done = part[part["promoted"] == True]  # noqa: E712 (None means no retrain)
            ax.scatter(done["day"], done[col].astype(float), s=14, color=line.get_color())
    axes[0].set(
        ylabel=f"F1 ({bt.ROLLING_DAYS} d)",
        title="Rolling live scores of the champion each rule serves (dots: promotions)",
    )
    axes[1].set(ylabel=f"ROC AUC ({bt.ROLLING_DAYS} d)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", fontsize=8, ncols=len(labels))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return path


def _write(path: Path, body: dict[str, Any]) -> Path:
    text = json.dumps(body, indent=2, default=str) + "\n"
    replace_atomically(path, lambda tmp: tmp.write_text(text))
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _args(argv)
    params = bench_params(args)
    policies = bt.parse_policies(args.policy or ["monthly"])
    try:
        rules = rule_variants(params.promote, args.rule)
    except ValueError as err:
        sys.exit(f"error: {err}")
    bt.check_range(args.start, args.end)
    load_before = [round(x, 2) for x in os.getloadavg()]
    observations, data = load_window(args.data, args.start, args.end)
    planned = plan(args.start, args.end, {}, policies) | {"lanes": len(policies) * len(rules)}
    print(f"data: {data}\nplan: {planned}", flush=True)

    result = bt.run_backtest(
        observations, args.start, args.end, params, policies, None, ProgressLine(), rules
    )
    result.meta = run_meta(result, args, params, data, planned, load_before)
    args.out.mkdir(parents=True, exist_ok=True)
    body = result.as_dict()
    paths = [_write(args.out / FULL, body)]
    body["days"] = f"{len(result.days)} per-day rows, left out of this summary ({FULL} has them)"
    paths += [_write(args.out / SUMMARY, body), _plot(result, args.out / PLOT)]
    print(rule_table(result))
    print(f"\n{result.distinct_fits} distinct fits, wall {result.wall_seconds / 60:.1f} min")
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return body


if __name__ == "__main__":
    main()
