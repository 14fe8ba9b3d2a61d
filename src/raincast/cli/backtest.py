"""`raincast backtest`: replay a date range of a weatherAUS file day by day under retrain
policies (`raincast.pipeline.backtest`), and write the result as JSON and plots.

The command is exported here and registered beside the pipeline commands; the writers
(`save_result`) and the progress line (`ProgressLine`) are shared with `bench/backtest.py`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from raincast.cli._common import fail, one_line, setup

if TYPE_CHECKING:
    from raincast.pipeline.backtest import BacktestProgress, BacktestResult, PolicySummary


def backtest(
    data: Annotated[
        Path, typer.Option("--data", help="weatherAUS CSV (.csv or .csv.gz) to replay.")
    ],
    start: Annotated[str, typer.Option(help="First day to predict (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option(help="Last day to predict (YYYY-MM-DD).")],
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help="Retrain policy: daily, weekly, monthly, on-drift or never; repeat the "
            "option for several (default: all five).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for backtest.json and the plots (default: RAINCAST_BACKTEST_DIR, "
            "else <home>/backtest; the API's GET /backtest reads that folder).",
        ),
    ] = None,
) -> None:
    """Replay START..END of a weatherAUS file day by day: each day's champion predicts the
    day's rows and is scored on the next day's rain; each policy retrains (split, fit,
    promotion rule) on the data known at the end of the day. The history is every row
    before START. Exit 1 on a bad range, an unknown policy or a file without rows there."""
    from raincast.pipeline import backtest as bt

    try:
        first, last = _day("--start", start), _day("--end", end)
        bt.check_range(first, last)
        policies = bt.parse_policies(policy or [])
    except ValueError as err:
        raise fail(one_line(err)) from err
    settings, params = setup()
    try:
        observations, quarantined = bt.load_observations(data)
        result = bt.run_backtest(
            observations, first, last, params, policies, on_progress=ProgressLine()
        )
    except (ValueError, OSError) as err:  # BacktestError and SourceFileError are ValueErrors
        raise fail(one_line(err)) from err
    result.meta |= {"data": data.name, "quarantined_rows": quarantined}
    paths = save_result(result, out or settings.backtest_results_dir)
    typer.echo(summary_table(list(result.summaries.values())))
    typer.echo(f"wrote {', '.join(str(p) for p in paths)}")


def _day(option: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{option} {value!r} is not a date (YYYY-MM-DD)") from None


class ProgressLine:
    """A backtest's progress on stderr: one line rewritten in place on a terminal, else a
    line every tenth of the way (logs stay short)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._tty = self.stream.isatty()
        self._shown = -1

    def __call__(self, progress: BacktestProgress) -> None:
        step = max(1, progress.total // 10)
        last = progress.done == progress.total
        if self._tty:
            self.stream.write("\r" + progress.line() + ("\n" if last else ""))
        elif progress.done // step != self._shown or last:
            self._shown = progress.done // step
            self.stream.write(progress.line() + "\n")
        self.stream.flush()


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(summaries: list[PolicySummary]) -> str:
    """The per-policy summary as a Markdown table (the README's results table)."""
    lines = [
        "| policy | days | live ROC AUC | live F1 | mean 30-day AUC | mean 30-day F1 | "
        "retrains (failed) | promotions | compute s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.policy} | {s.days} | {_fmt(s.roc_auc)} | {_fmt(s.f1)} | "
            f"{_fmt(s.mean_rolling_roc_auc)} | {_fmt(s.mean_rolling_f1)} | "
            f"{s.retrains} ({s.failed_retrains}) | {s.promotions} | {s.compute_seconds:.0f} |"
        )
    return "\n".join(lines)


def save_result(result: BacktestResult, out_dir: Path) -> list[Path]:
    """Write ``backtest.json`` and the plots ``backtest_rolling.png`` (rolling live AUC and
    F1 per policy), ``backtest_retrains.png`` and ``backtest_compute.png`` to ``out_dir``.
    Each file is replaced whole: the API may be reading the folder meanwhile."""
    from raincast.catalog import BACKTEST_RESULT, replace_atomically

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / BACKTEST_RESULT
    text = json.dumps(result.as_dict(), indent=2, default=str) + "\n"
    replace_atomically(path, lambda tmp: tmp.write_text(text))
    return [path, *_plots(result, out_dir)]


def _plots(result: BacktestResult, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from raincast.catalog import BACKTEST_PLOTS, replace_atomically
    from raincast.pipeline.backtest import ROLLING_DAYS

    def date_axis(ax: Any) -> None:
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))

    frame = pd.DataFrame([asdict(d) for d in result.days])
    frame["day"] = pd.to_datetime(frame["date"])
    paths = []
    rolling_png, retrains_png, compute_png = BACKTEST_PLOTS

    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for policy, part in frame.groupby("policy", sort=False):
        for ax, col in zip(axes, ("rolling_roc_auc", "rolling_f1"), strict=True):
            (line,) = ax.plot(part["day"], part[col].astype(float), label=str(policy), lw=1.2)
            done = part[part["promoted"] == True]  # noqa: E712 (None means no retrain)
            ax.scatter(done["day"], done[col].astype(float), s=12, color=line.get_color())
    axes[0].set(
        ylabel=f"ROC AUC ({ROLLING_DAYS} d)", title="Rolling live scores (dots: promotions)"
    )
    axes[1].set(ylabel=f"F1 ({ROLLING_DAYS} d)")
    date_axis(axes[1])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", fontsize=8, ncols=len(labels))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    paths.append(out / rolling_png)
    replace_atomically(paths[-1], lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 0.6 * len(result.policies) + 1.2))
    marks = {"promoted": ("o", "tab:green"), "blocked": ("x", "tab:red"), "failed": ("s", "grey")}
    for y, policy in enumerate(result.policies):
        part = frame[(frame["policy"] == policy) & frame["retrained"]]
        kinds = {
            "failed": part["retrain_failed"],
            "promoted": ~part["retrain_failed"] & (part["promoted"] == True),  # noqa: E712
            "blocked": ~part["retrain_failed"] & (part["promoted"] == False),  # noqa: E712
        }
        for kind, mask in kinds.items():
            marker, color = marks[kind]
            ax.scatter(part.loc[mask, "day"], [y] * int(mask.sum()), marker=marker, color=color,
                       s=18, label=kind if y == 0 else None)  # fmt: skip
    ax.set_yticks(range(len(result.policies)), list(result.policies))
    ax.set(title="Retrains at the end of each day", ylim=(-0.7, len(result.policies) - 0.3))
    ax.legend(loc="upper right", fontsize=8, ncols=3)
    date_axis(ax)
    fig.tight_layout()
    paths.append(out / retrains_png)
    replace_atomically(paths[-1], lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for policy, part in frame.groupby("policy", sort=False):
        left.plot(part["day"], part["compute_seconds"].cumsum() / 60, label=str(policy))
    left.set(title="Cumulative compute", ylabel="minutes")
    left.legend(fontsize=8)
    date_axis(left)
    sums = [result.summaries[p] for p in result.policies]
    names = list(result.policies)
    fit_m = [s.fit_seconds / 60 for s in sums]
    drift_m = [s.drift_seconds / 60 for s in sums]
    rest_m = [(s.compute_seconds - s.fit_seconds - s.drift_seconds) / 60 for s in sums]
    right.bar(names, fit_m, label="fit + split + scoring")
    right.bar(names, drift_m, bottom=fit_m, label="drift checks")
    right.bar(names, rest_m, bottom=np.add(fit_m, drift_m), label="predict + scores")
    right.set(title="Compute per policy", ylabel="minutes")
    right.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / compute_png)
    replace_atomically(paths[-1], lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return paths
