"""retrain-due: whether a time-triggered run of the retrain DAG goes on.

New observations (the Asset) and manual runs always retrain; the daily safety net retrains
when there is no champion, when the champion is older than ``retrain.max_age_days``, or
when the live trigger fires: ``breaches_needed`` of the champion's last ``of_last`` scored
``live_window_days``-day windows fell below ``live_floor``. Pure: the CLI reads the
registry and the `live_scores` table and passes what it found in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from raincast.params import RetrainParams

#: How a floored metric is named in a reason.
METRIC_LABELS: dict[str, str] = {"f1": "F1", "roc_auc": "ROC AUC"}


@dataclass(frozen=True)
class Verdict:
    """One rule's answer: whether a retrain is due, and why (printed in the task log)."""

    due: bool
    reason: str


def age_verdict(version: str, age_days: int, params: RetrainParams) -> Verdict:
    """Due when the champion is at least ``max_age_days`` old."""
    limit = params.max_age_days
    if age_days >= limit:
        return Verdict(True, f"champion version {version} is {age_days} days old (>= {limit})")
    return Verdict(False, f"champion version {version} is {age_days} days old (< {limit})")


def _number(value: object) -> float | None:
    """A stored metric as a float; None for a missing or NaN one."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else number


def _floor_text(floors: dict[str, float]) -> str:
    return ", ".join(f"{METRIC_LABELS[m]} {v:.2f}" for m, v in floors.items())


def live_verdict(scores: pd.DataFrame, version: str, params: RetrainParams) -> Verdict:
    """Whether ``breaches_needed`` of the champion's last ``of_last`` scored windows breach
    the live floor.

    ``scores`` are `live_scores` rows of the model (``store.read_live_scores``). Only
    windows of ``live_window_days`` scored on the champion ``version`` alone count: a
    window holding a previous champion's predictions (``model_versions`` "3,4") is left
    out. A window with one observed class (no ROC AUC, F1 meaningless) or a missing
    floored metric takes its place among the last ``of_last`` but cannot breach. With
    fewer windows than ``of_last`` scored yet, ``breaches_needed`` breaches among them are
    still required. The reason names each breached window's date and values.
    """
    floors = {m: v for m, v in params.live_floor.model_dump().items() if v is not None}
    if not floors:
        return Verdict(False, "live trigger off (retrain.live_floor sets no metric)")
    days, needed, last_n = params.live_window_days, params.breaches_needed, params.of_last
    of_window = scores[scores["window_days"].astype(int) == days]
    own = of_window[of_window["model_versions"].astype(str) == str(version)]
    left_out = len(of_window) - len(own)
    what = f"{days}-day windows of version {version}"
    if own.empty:
        note = f" ({left_out} of other versions or mixed with them left out)" if left_out else ""
        return Verdict(False, f"live trigger: no {what} scored yet{note}")

    recent = own.sort_values("as_of_date").tail(last_n)
    breaches: list[str] = []
    skipped: list[str] = []
    for row in recent.to_dict("records"):
        day = str(row["as_of_date"])[:10]
        base_rate = _number(row.get("base_rate"))
        values = {m: _number(row.get(m)) for m in floors}
        if base_rate is None or base_rate in (0.0, 1.0):
            skipped.append(f"{day} (one class)")
            continue
        if missing := [METRIC_LABELS[m] for m, v in values.items() if v is None]:
            skipped.append(f"{day} ({', '.join(missing)} n/a)")
            continue
        below = [
            f"{METRIC_LABELS[m]} {v:.3f}"
            for m, v in values.items()
            if v is not None and v < floors[m]
        ]
        if below:
            breaches.append(f"{day} {' '.join(below)}")

    scope = (
        f"the last {last_n} {what}"
        if len(recent) == last_n
        else f"only {len(recent)} {what} scored yet (of the last {last_n} counted)"
    )
    reason = (
        f"live trigger: {len(breaches)} of {scope} below the floor ({_floor_text(floors)}); "
        f"{needed} needed"
    )
    if breaches:
        reason += ": " + "; ".join(breaches)
    if skipped:
        reason += f"; skipped: {', '.join(skipped)}"
    if left_out:
        reason += f"; {left_out} windows of other versions or mixed with them left out"
    return Verdict(len(breaches) >= needed, reason)
