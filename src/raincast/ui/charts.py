"""The Monitor and Backtest pages' tables and plots, built from the API's ``/monitor/*`` and
``/backtest`` answers.

Pure functions: an answer body in, a table or an Altair chart out (``None`` when there is
nothing to draw, so the page can show its empty state instead).
"""

from __future__ import annotations

from typing import Any, Literal

import altair as alt
import pandas as pd

Kind = Literal["live", "replayed"]

#: Series of `/monitor/scores` drawn over time, with the names shown on the plot.
SCORE_METRICS = {"f1": "F1", "roc_auc": "ROC AUC", "calibration_error": "Calibration error"}
METRIC_COLOURS = ["#1f77b4", "#2ca02c", "#d62728"]


def score_rows(body: dict[str, Any]) -> pd.DataFrame:
    """`/monitor/scores` rows as a table (``as_of_date`` a date); empty when there are none."""
    return _dated_rows(body.get("rows"), "as_of_date")


def _dated_rows(rows: list[dict[str, Any]] | None, date_column: str) -> pd.DataFrame:
    """``rows`` as a table with ``date_column`` parsed to dates; empty when there are none."""
    frame = pd.DataFrame(rows or [])
    if frame.empty:
        return frame
    frame[date_column] = pd.to_datetime(frame[date_column])
    return frame


def kinds_present(scores: pd.DataFrame) -> list[Kind]:
    """The kinds with rows, live first: live scores are the ones to look at when they exist."""
    if scores.empty:
        return []
    present = set(scores["kind"])
    return [k for k in ("live", "replayed") if k in present]


def scores_chart(scores: pd.DataFrame, kind: Kind) -> alt.Chart | None:
    """F1, ROC AUC and calibration error over time for one ``kind`` (never both: a
    replayed window is not live performance), one dash style per window length."""
    rows = scores[scores["kind"] == kind] if not scores.empty else scores
    if rows.empty:
        return None
    long = rows.melt(
        id_vars=["as_of_date", "window_days", "n_scored", "model_versions"],
        value_vars=list(SCORE_METRICS),
        var_name="series",
        value_name="value",
    ).dropna(subset=["value"])
    if long.empty:
        return None
    long["metric"] = long["series"].map(SCORE_METRICS)
    long["window"] = long["window_days"].map(lambda d: f"{int(d)}-day")
    windows = sorted(long["window_days"].unique())
    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("as_of_date:T", title="as of"),
            y=alt.Y("value:Q", title="score", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(
                "metric:N",
                sort=list(SCORE_METRICS.values()),
                scale=alt.Scale(domain=list(SCORE_METRICS.values()), range=METRIC_COLOURS),
                title=None,
            ),
            strokeDash=alt.StrokeDash(
                "window:N",
                sort=[f"{int(d)}-day" for d in windows],
                title="window",
                legend=alt.Legend(
                    symbolType="stroke", symbolStrokeColor="gray", symbolStrokeWidth=2
                ),
            ),
            tooltip=[
                alt.Tooltip("as_of_date:T", title="as of"),
                "window:N",
                "metric:N",
                alt.Tooltip("value:Q", format=".3f"),
                alt.Tooltip("n_scored:Q", title="predictions scored"),
                alt.Tooltip("model_versions:N", title="model versions"),
            ],
        )
    )


def reliability_chart(body: dict[str, Any]) -> alt.LayerChart | None:
    """Observed rain frequency against mean predicted probability per bin, over the
    diagonal a perfectly calibrated model would follow."""
    bins = pd.DataFrame(body.get("bins") or [])
    if bins.empty or not int(bins["n"].sum()):
        return None
    diagonal = (
        alt.Chart(pd.DataFrame({"p": [0.0, 1.0]}))
        .mark_line(strokeDash=[4, 4], color="gray")
        .encode(x="p:Q", y="p:Q")
    )
    axis = alt.Scale(domain=[0, 1])
    base = alt.Chart(bins).encode(
        x=alt.X("mean_probability:Q", title="predicted probability of rain", scale=axis),
        y=alt.Y("observed_frequency:Q", title="observed rain frequency", scale=axis),
    )
    line = base.mark_line(color="#1f77b4")
    points = base.mark_circle(color="#1f77b4", opacity=0.9).encode(
        size=alt.Size("n:Q", title="predictions", scale=alt.Scale(range=[30, 400])),
        tooltip=[
            alt.Tooltip("lower:Q", format=".2f", title="bin from"),
            alt.Tooltip("upper:Q", format=".2f", title="bin to"),
            alt.Tooltip("mean_probability:Q", format=".3f", title="predicted"),
            alt.Tooltip("observed_frequency:Q", format=".3f", title="observed"),
            alt.Tooltip("n:Q", title="predictions"),
        ],
    )
    return diagonal + line + points


def drift_rows(body: dict[str, Any]) -> pd.DataFrame:
    """`/monitor/drift` rows with the drifted columns as one readable string."""
    frame = pd.DataFrame(body.get("rows") or [])
    if frame.empty:
        return frame
    frame["cycle_date"] = pd.to_datetime(frame["cycle_date"])
    frame["columns_drifted"] = frame["drifted_columns"].map(
        lambda cols: ", ".join(cols) if cols else "(none)"
    )
    return frame


def drift_chart(drift: pd.DataFrame) -> alt.Chart | None:
    """Share of drifted columns per retrain cycle; the tooltip names the columns."""
    if drift.empty:
        return None
    return (
        alt.Chart(drift)
        .mark_bar()
        .encode(
            x=alt.X("yearmonthdate(cycle_date):O", title="cycle"),
            y=alt.Y(
                "drift_share:Q", title="share of columns drifted", scale=alt.Scale(domain=[0, 1])
            ),
            color=alt.Color(
                "dataset_drift:N",
                title="dataset drift",
                scale=alt.Scale(domain=[False, True], range=["#4c78a8", "#e45756"]),
            ),
            tooltip=[
                alt.Tooltip("cycle_date:T", title="cycle"),
                alt.Tooltip("drift_share:Q", format=".0%", title="drift share"),
                alt.Tooltip("n_drifted:Q", title="columns drifted"),
                alt.Tooltip("n_columns:Q", title="columns checked"),
                alt.Tooltip("columns_drifted:N", title="drifted"),
            ],
        )
    )


def champion_rows(body: dict[str, Any]) -> pd.DataFrame:
    """`/monitor/champions` rows, ``decided_at`` as UTC timestamps, oldest first."""
    frame = pd.DataFrame(body.get("rows") or [])
    if frame.empty:
        return frame
    frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True, format="ISO8601")
    return frame


def champion_chart(history: pd.DataFrame) -> alt.LayerChart | None:
    """The champion version after each decision, as a step line; each point is a
    decision (promoted, rejected, rolled back) with its F1 scores in the tooltip."""
    if history.empty:
        return None
    rows = history.dropna(subset=["champion_after"]).copy()
    if rows.empty:
        return None
    rows["version"] = pd.to_numeric(rows["champion_after"], errors="coerce")
    rows = rows.dropna(subset=["version"])
    if rows.empty:
        return None
    base = alt.Chart(rows).encode(
        x=alt.X(
            "decided_at:T",
            title="decided at (UTC)",
            axis=alt.Axis(format="%Y-%m-%d %H:%M", labelOverlap=True, tickCount=6),
        ),
        y=alt.Y("version:Q", title="champion version", axis=alt.Axis(tickMinStep=1, format="d")),
    )
    step = base.mark_line(interpolate="step-after", color="gray")
    points = base.mark_point(filled=True, size=90).encode(
        color=alt.Color("decision:N", title="decision"),
        tooltip=[
            alt.Tooltip("decided_at:T", title="decided at", format="%Y-%m-%d %H:%M"),
            "action:N",
            "decision:N",
            alt.Tooltip("candidate_version:N", title="candidate"),
            alt.Tooltip("champion_before:N", title="champion before"),
            alt.Tooltip("champion_after:N", title="champion after"),
            alt.Tooltip("candidate_f1:Q", format=".3f", title="candidate F1"),
            alt.Tooltip("champion_f1:Q", format=".3f", title="champion F1"),
        ],
    )
    return step + points


# --- backtest ----------------------------------------------------------------------------------

#: `/backtest` rolling series drawn per policy, with the names shown on the plot.
ROLLING_METRICS = {"rolling_roc_auc": "ROC AUC", "rolling_f1": "F1"}


def backtest_summary(body: dict[str, Any]) -> pd.DataFrame:
    """`/backtest`'s per-policy summary as the table the page shows (policy order kept)."""
    rows = [
        {
            "policy": s["policy"],
            "days": s["days"],
            "live ROC AUC": s.get("roc_auc"),
            "live F1": s.get("f1"),
            "mean rolling ROC AUC": s.get("mean_rolling_roc_auc"),
            "mean rolling F1": s.get("mean_rolling_f1"),
            "retrains": s["retrains"],
            "failed retrains": s.get("failed_retrains", 0),
            "promotions": s["promotions"],
            "compute (min)": round(float(s["compute_seconds"]) / 60, 1),
        }
        for s in body.get("summary") or []
    ]
    return pd.DataFrame(rows).round(3)


def backtest_retrains(body: dict[str, Any]) -> pd.DataFrame:
    """`/backtest`'s retrains, oldest first: the day, the decision, the candidate's and the
    champion's test scores and the promotion rule's reasons."""

    def score(record: dict[str, Any], who: str, metric: str) -> float | None:
        scores = record.get(who) or {}
        return scores.get(metric)

    rows = [
        {
            "day": r["day"],
            "policy": r["policy"],
            "decision": "failed" if r.get("error") else "promoted" if r["promoted"] else "kept",
            "candidate F1": score(r, "candidate", "f1"),
            "champion F1": score(r, "champion", "f1"),
            "candidate ROC AUC": score(r, "candidate", "roc_auc"),
            "champion ROC AUC": score(r, "champion", "roc_auc"),
            "why": "; ".join(r.get("reasons") or []) or r.get("error", ""),
        }
        for r in body.get("retrains") or []
    ]
    return pd.DataFrame(rows).round(4)


def backtest_rolling(body: dict[str, Any]) -> pd.DataFrame:
    """`/backtest`'s rolling series (``date`` a date); empty when the result has no days."""
    return _dated_rows(body.get("rolling"), "date")


def backtest_rolling_chart(
    rolling: pd.DataFrame, metric: str, policies: list[str]
) -> alt.LayerChart | None:
    """One rolling live score (``metric``, a key of `ROLLING_METRICS`) per policy over the
    replayed days; dots mark the days a retrain was promoted."""
    if rolling.empty:
        return None
    rows = rolling.dropna(subset=[metric])
    if rows.empty:
        return None
    name = ROLLING_METRICS[metric]
    base = alt.Chart(rows).encode(
        x=alt.X("date:T", title="day"),
        y=alt.Y(f"{metric}:Q", title=f"rolling {name}", scale=alt.Scale(zero=False)),
        color=alt.Color("policy:N", sort=policies, title="policy"),
    )
    promoted = base.transform_filter(alt.datum.promoted == True).mark_circle(size=60)  # noqa: E712
    return base.mark_line() + promoted.encode(
        tooltip=[
            alt.Tooltip("date:T", title="promoted at the end of"),
            "policy:N",
            alt.Tooltip(f"{metric}:Q", format=".3f", title=f"rolling {name}"),
        ]
    )
