"""raincast demo UI: log in, predict one day, predict an uploaded CSV, look at the served
model, how it does and how retrain policies compare in a backtest. It only talks to the
prediction API over HTTP: it never loads the model, never reads the raw store nor the
backtest's files (history and monitoring come from ``/monitor/*``, backtest results from
``/backtest``).

    RAINCAST_API_URL=http://127.0.0.1:3000 streamlit run src/raincast/ui/app.py

Tests replace the HTTP client by putting a stand-in into ``st.session_state["api_client"]``
before the first run (see tests/ui/test_app.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import pandas as pd
import streamlit as st

from raincast import schema
from raincast.settings import Settings
from raincast.ui import charts
from raincast.ui.batch import UploadError, read_upload, to_columns, with_predictions
from raincast.ui.client import ApiClient, ApiError, InvalidInput, NotFound, SessionExpired
from raincast.ui.defaults import typical_inputs

log = logging.getLogger("raincast.ui")

T = TypeVar("T")

PAGES = ("Predict", "Batch", "Model", "Monitor", "Backtest")
MISSING = "(missing)"
EXPIRED = "Your session expired, please log in again."
DEFAULT_STATION = "Sydney"
UNITS = {
    "MinTemp": "°C", "MaxTemp": "°C", "Temp9am": "°C", "Temp3pm": "°C",
    "Rainfall": "mm", "Evaporation": "mm", "Sunshine": "h",
    "WindGustSpeed": "km/h", "WindSpeed9am": "km/h", "WindSpeed3pm": "km/h",
    "Humidity9am": "%", "Humidity3pm": "%", "Pressure9am": "hPa", "Pressure3pm": "hPa",
    "Cloud9am": "oktas", "Cloud3pm": "oktas",
}  # fmt: skip
KIND_LABELS = {"live": "Live", "replayed": "Replayed window"}
RELIABILITY_WINDOWS = (7, 30, 90)
HISTORY_COLUMNS = (
    "decided_at", "action", "decision", "candidate_version", "champion_before",
    "champion_after", "candidate_f1", "champion_f1",
)  # fmt: skip
#: What each backtest plot shows (the API lists the plots a run wrote).
BACKTEST_PLOTS = {
    "backtest_rolling.png": "Rolling live ROC AUC and F1 per policy (dots: promotions)",
    "backtest_retrains.png": "Retrains per policy: promoted, blocked by the rule, or failed",
    "backtest_compute.png": "Compute: cumulative per policy, and split by kind",
}
NO_BACKTEST = (
    "No backtest results yet. Run `raincast backtest --data FILE --start A --end B` where "
    "the API runs: it writes to the folder the API reads (`RAINCAST_BACKTEST_DIR`, default "
    "`<RAINCAST_HOME>/backtest`). To look at the committed benchmark, start the API with "
    "`RAINCAST_BACKTEST_DIR=bench/results`."
)
#: Form widgets whose values survive a visit to another page (Streamlit drops the state of
#: widgets that are not drawn, so the predict page restores them from a plain copy).
INPUT_KEYS = tuple(f"in_{c}" for c in schema.INPUT_COLUMNS)


# --- session -------------------------------------------------------------------------------


def api_client() -> ApiClient:
    """The session's API client (created on first use) carrying the session's token."""
    if "api_client" not in st.session_state:
        config = Settings()  # the API's URL and timeout (RAINCAST_API_URL, ..._TIMEOUT_S)
        st.session_state["api_client"] = ApiClient(config.api_url, config.api_timeout_s)
    client: ApiClient = st.session_state["api_client"]
    client.token = st.session_state.get("token")
    return client


def end_session(notice: str) -> None:
    """Forget the token and everything computed with it; ``notice`` shows on the login page."""
    for key in ("token", "user", "batch_result"):
        st.session_state.pop(key, None)
    st.session_state["notice"] = notice


def call_api(action: Callable[[], T]) -> T | None:
    """Run an API call; a failure becomes a message on the page (never a traceback) and an
    expired session sends the user back to the login form."""
    try:
        return action()
    except SessionExpired:
        end_session(EXPIRED)
        st.rerun()
    except InvalidInput as err:
        lines = "\n".join(f"- `{e.path}`: {e.message}" for e in err.errors)
        st.error(f"The API rejected the input:\n\n{lines}")
    except ApiError as err:
        st.error(str(err))
    return None


# --- pages ---------------------------------------------------------------------------------


def login_page() -> None:
    st.title("raincast · will it rain tomorrow?")
    notice = st.session_state.pop("notice", None)
    if notice:
        st.warning(notice)
    with st.form("login", clear_on_submit=True):
        username = st.text_input("Username", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in")
    if not submitted:
        return
    if not username or not password:
        st.error("Enter a username and a password.")
        return
    try:
        token = api_client().login(username, password)
    except ApiError as err:
        st.error(str(err))
        return
    st.session_state["token"] = token
    st.session_state["user"] = username
    st.rerun()


def apply_typical_inputs() -> None:
    """Fill the form with the typical values of the chosen station and month."""
    station = st.session_state.get("in_Location", DEFAULT_STATION)
    day = st.session_state.get("in_Date") or date.today()
    for col, value in typical_inputs(station, day).items():
        if col in (schema.DATE, schema.LOCATION):
            continue
        is_category = col in schema.DIRECTION_COLUMNS or col == schema.RAIN_TODAY
        st.session_state[f"in_{col}"] = (value or MISSING) if is_category else value


def restore_inputs() -> None:
    """Put the last form values back (or typical ones) when the form is drawn afresh."""
    if "in_Location" in st.session_state:
        return
    saved: dict[str, Any] | None = st.session_state.get("saved_inputs")
    if saved:
        st.session_state.update(saved)
        return
    st.session_state["in_Location"] = DEFAULT_STATION
    st.session_state["in_Date"] = date.today()
    apply_typical_inputs()


def form_row() -> dict[str, Any]:
    """The API row of the current form values (``None`` = missing)."""
    state = st.session_state
    row: dict[str, Any] = {
        schema.DATE: state["in_Date"].isoformat(),
        schema.LOCATION: state["in_Location"],
    }
    for col in schema.NUMERIC_RANGES:
        value = state.get(f"in_{col}")
        row[col] = None if value is None else float(value)
    for col in (*schema.DIRECTION_COLUMNS, schema.RAIN_TODAY):
        value = state.get(f"in_{col}", MISSING)
        row[col] = None if value == MISSING else value
    return row


def predict_page() -> None:
    st.header("Will it rain tomorrow?")
    st.caption(
        "Observations of day D at one station; the model predicts rain (> 1 mm) on D + 1. "
        "Changing the station or the date refills the form with typical values for that "
        "station and month; clear a number to send it as missing."
    )
    restore_inputs()
    left, right = st.columns(2)
    left.selectbox(
        "Location",
        schema.station_names(),
        key="in_Location",
        on_change=apply_typical_inputs,
    )
    right.date_input(
        "Date (day D)",
        key="in_Date",
        min_value=date(1990, 1, 1),
        max_value=date(2100, 12, 31),
        on_change=apply_typical_inputs,
    )
    with st.form("predict"):
        grid = st.columns(4)
        for i, (col, (lo, hi)) in enumerate(schema.NUMERIC_RANGES.items()):
            grid[i % 4].number_input(
                f"{col} ({UNITS[col]})",
                min_value=lo,
                max_value=hi,
                value=None,
                step=0.1,
                format="%.1f",
                key=f"in_{col}",
                placeholder="missing",
                help=f"{lo:g} to {hi:g} {UNITS[col]}; leave empty when not measured.",
            )
        grid = st.columns(4)
        for i, col in enumerate(schema.DIRECTION_COLUMNS):
            grid[i].selectbox(col, (MISSING, *schema.COMPASS_POINTS), key=f"in_{col}")
        grid[3].selectbox(schema.RAIN_TODAY, (MISSING, "Yes", "No"), key=f"in_{schema.RAIN_TODAY}")
        submitted = st.form_submit_button("Predict", type="primary")
    st.session_state["saved_inputs"] = {k: st.session_state[k] for k in INPUT_KEYS}
    if not submitted:
        return
    client = api_client()
    predictions = call_api(lambda: client.predict([form_row()]))
    if not predictions:
        return
    p = predictions[0]
    cells = st.columns(4)
    cells[0].metric("Probability of rain", f"{p.probability:.1%}")
    cells[1].metric("Rain tomorrow", p.label)
    cells[2].metric("Threshold", f"{p.threshold:.3f}")
    cells[3].metric("Model version", p.model_version)


def batch_page() -> None:
    st.header("Predict a CSV")
    st.caption(
        "A weatherAUS-format CSV (header Date,Location,MinTemp,...; `NA` = missing). "
        "RainTomorrow is ignored if present. Rows go to the API 10,000 at a time."
    )
    uploaded = st.file_uploader("weatherAUS CSV", type=["csv"], key="batch_file")
    if uploaded is None:
        return
    try:
        frame, ignored = read_upload(uploaded.getvalue())
    except UploadError as err:
        st.error(str(err))
        return
    if ignored:
        st.caption(f"Ignored columns: {', '.join(ignored)}")
    if st.button(f"Predict {len(frame):,} rows", key="batch_predict", type="primary"):
        client = api_client()
        with st.spinner("Predicting..."):
            result = call_api(lambda: client.predict_batch(to_columns(frame)))
        if result is not None:
            table = with_predictions(frame, result)
            st.session_state["batch_result"] = (uploaded.file_id, table, result.threshold)
    stored = st.session_state.get("batch_result")
    if not stored or stored[0] != uploaded.file_id:
        return
    _, table, threshold = stored
    rainy = int((table["label"] == "Yes").sum())
    st.write(f"{len(table):,} rows · {rainy:,} predicted rainy · threshold {threshold:.3f}")
    st.dataframe(table, hide_index=True)
    st.download_button(
        "Download CSV",
        table.to_csv(index=False, na_rep="NA").encode(),
        file_name="raincast-predictions.csv",
        mime="text/csv",
        on_click="ignore",
        key="batch_download",
    )


def model_page() -> None:
    st.header("Served model")
    info = call_api(api_client().model)
    if info is None:
        return
    cells = st.columns(3)
    cells[0].metric("Champion version", str(info.get("version")))
    threshold = info.get("threshold")
    cells[1].metric("Threshold", "n/a" if threshold is None else f"{threshold:.3f}")
    cells[2].metric("Trained at", readable_time(info.get("trained_at")))
    if info.get("last_refresh_error"):
        st.warning(f"The API could not refresh the champion: {info['last_refresh_error']}")
    metrics: dict[str, float] = info.get("metrics") or {}
    overall = {k.removeprefix("test_"): v for k, v in metrics.items() if "_auc_" not in k}
    per_station = {k.removeprefix("test_auc_"): v for k, v in metrics.items() if "_auc_" in k}
    st.subheader("Offline test metrics")
    if overall:
        st.dataframe(
            pd.DataFrame({"metric": list(overall), "value": list(overall.values())}),
            hide_index=True,
        )
    else:
        st.info("The registry holds no test metrics for this version.")
    if per_station:
        with st.expander("ROC AUC per station"):
            st.dataframe(
                pd.DataFrame({"station": list(per_station), "auc": list(per_station.values())}),
                hide_index=True,
            )
    with st.container(key="model-spans"):
        champion_spans(info)
    with st.container(key="model-history"):
        promotion_history()


def champion_spans(info: dict[str, Any]) -> None:
    """``/model``'s ``champion_history``: which version was champion from when to when."""
    st.subheader("Champion spans")
    spans = info.get("champion_history")
    if spans is None:
        reason = info.get("champion_history_error") or "the API did not say why"
        st.warning(f"The champion history is not available: {reason}")
        return
    if not spans:
        st.info("No champion recorded yet: the first promotion starts the first span.")
        return
    st.caption("Newest first; a span ends when the next one starts.")
    table = pd.DataFrame(
        {
            "version": [str(s.get("version")) for s in spans],
            "from": [readable_time(s.get("from")) for s in spans],
            "to": ["now" if s.get("to") is None else readable_time(s["to"]) for s in spans],
            "decided by": [str(s.get("decided_by")) for s in spans],
        }
    )
    st.dataframe(table.iloc[::-1], hide_index=True)


def promotion_history() -> None:
    st.subheader("Promotion history")
    st.caption("Every decision on a challenger (promoted or not) and every rollback, newest first.")
    champions = call_api(api_client().monitor_champions)
    if champions is None:
        return
    history = charts.champion_rows(champions)
    if history.empty:
        st.info(
            "No promotion decisions recorded yet: the first retrain cycle records one, "
            "promoted or not."
        )
        return
    history["decided_at"] = history["decided_at"].dt.strftime("%Y-%m-%d %H:%M UTC")
    shown = [c for c in HISTORY_COLUMNS if c in history.columns]
    st.dataframe(history.loc[::-1, shown], hide_index=True)


def monitor_page() -> None:
    st.header("Monitor")
    client = api_client()
    kind = scores_section(client)
    reliability_section(client, kind)
    drift_section(client)
    champion_section(client)


def scores_section(client: ApiClient) -> charts.Kind | None:
    """The scores over time; returns the kind shown (the reliability diagram follows it)."""
    with st.container(key="monitor-scores"):
        st.subheader("F1, ROC AUC and calibration over time")
        st.caption(
            "Rolling 7- and 30-day scores of the served predictions against the observed "
            "weather: F1 and ROC AUC higher is better, calibration error lower is better."
        )
        body = call_api(client.monitor_scores)
        if body is None:
            return None
        scores = charts.score_rows(body)
        kinds = charts.kinds_present(scores)
        if not kinds:
            st.info(
                "No scores yet. Live scores appear once a day's predictions meet the next "
                "day's observed weather; `raincast replay` fills a replayed window now."
            )
            return None
        kind = kinds[0]
        if len(kinds) > 1:
            kind = st.radio(
                "Scores shown",
                kinds,
                format_func=KIND_LABELS.__getitem__,
                horizontal=True,
                key="monitor_kind",
            )
        kind_banner(kind)
        chart = charts.scores_chart(scores, kind)
        if chart is None:
            st.info("The scored days have no F1, AUC or calibration value yet (too few rows).")
        else:
            st.altair_chart(chart, width="stretch")
        return kind


def kind_banner(kind: str) -> None:
    """Say plainly where the numbers come from: live and replayed are never mixed."""
    if kind == "live":
        st.success(
            "**Live** — scores from real daily operation: predictions served before the "
            "weather was known, scored when it was observed."
        )
    else:
        st.warning(
            "**Replayed window** — the champion re-predicting recent history it did not "
            "train on. Not live operation: a preview until live scores accumulate."
        )


def reliability_section(client: ApiClient, kind: charts.Kind | None) -> None:
    with st.container(key="monitor-reliability"):
        st.subheader("Predicted probability vs observed rain")
        st.caption(
            "Each point is a probability bin: how often it rained when the model said p. "
            "On the dashed diagonal, a 30% forecast means rain 30% of the time."
        )
        window = st.selectbox("Last scored days", RELIABILITY_WINDOWS, index=1, key="monitor_days")
        body = call_api(lambda: client.monitor_reliability(kind=kind, window_days=window))
        if body is None:
            return
        chart = charts.reliability_chart(body)
        if chart is None:
            st.info(
                "Nothing to compare yet: the diagram needs scored predictions (live, or a "
                "replayed window from `raincast replay`)."
            )
            return
        label = KIND_LABELS.get(str(body.get("kind")), str(body.get("kind")))
        span = f" · {body['start']} to {body['end']}" if body.get("start") else ""
        st.caption(f"{label} · {int(body.get('n') or 0):,} predictions{span}")
        st.altair_chart(chart, width="stretch")


def drift_section(client: ApiClient) -> None:
    with st.container(key="monitor-drift"):
        st.subheader("Data drift per cycle")
        st.caption(
            "Share of input columns whose recent distribution drifted from the champion's "
            "training data (Evidently), per retrain cycle; hover a bar for the columns."
        )
        body = call_api(client.monitor_drift)
        if body is None:
            return
        drift = charts.drift_rows(body)
        chart = charts.drift_chart(drift)
        if chart is None:
            st.info("No drift checks yet: each retrain cycle's drift step records one.")
            return
        st.altair_chart(chart, width="stretch")
        latest = drift.iloc[::-1].head(10)
        st.dataframe(
            pd.DataFrame(
                {
                    "cycle": latest["cycle_date"].dt.strftime("%Y-%m-%d"),
                    "drift share": latest["drift_share"],
                    "drifted columns": latest["columns_drifted"],
                }
            ),
            hide_index=True,
        )


def champion_section(client: ApiClient) -> None:
    with st.container(key="monitor-champions"):
        st.subheader("Champion versions over time")
        st.caption(
            "Which model version served after each promotion decision or rollback; "
            "points are decisions, hover one for its F1 scores."
        )
        body = call_api(client.monitor_champions)
        if body is None:
            return
        chart = charts.champion_chart(charts.champion_rows(body))
        if chart is None:
            st.info(
                "No champion yet: the first retrain cycle that promotes a model starts "
                "the timeline."
            )
            return
        if body.get("current"):
            st.caption(f"Current champion: version {body['current']} of {body.get('model_name')}")
        st.altair_chart(chart, width="stretch")


def backtest_page() -> None:
    st.header("Backtest")
    st.caption(
        "Retrain policies replayed day by day on past data (`raincast backtest`): each day "
        "the policy's champion predicts and is scored on the next day's rain; at the end of "
        "the day the policy may retrain, and the promotion rule decides."
    )
    client = api_client()
    body = call_api(lambda: backtest_results(client))
    if body is None:
        return
    st.caption(run_summary(body))
    with st.container(key="backtest-summary"):
        st.subheader("Per policy")
        st.caption(
            "Live scores over every scored prediction of the run; the mean rolling scores "
            "average each day's 30-day window. Compute is what the policy would cost alone."
        )
        st.dataframe(charts.backtest_summary(body), hide_index=True)
    with st.container(key="backtest-rolling"):
        rolling_section(body)
    with st.container(key="backtest-retrains"):
        retrains_section(body)
    with st.container(key="backtest-plots"):
        plots_section(client, body)


def backtest_results(client: ApiClient) -> dict[str, Any] | None:
    """The API's backtest results; None, after saying how to make them, when there are none."""
    try:
        return client.backtest()
    except NotFound as err:
        st.info(NO_BACKTEST)
        st.caption(f"The API says: {err.detail}")
        return None


def run_summary(body: dict[str, Any]) -> str:
    """One line on the run: days replayed, policies, history, data file, when."""
    parts = [f"{body.get('start')} to {body.get('end')}"]
    parts.append("policies " + ", ".join(body.get("policies") or []))
    history = body.get("history") or {}
    if history.get("first_day"):
        rows = f", {int(history['rows']):,} rows" if history.get("rows") else ""
        parts.append(f"history {history['first_day']} to {history.get('last_day')}{rows}")
    meta = body.get("meta") or {}
    data = meta.get("data")
    name = data.get("file") if isinstance(data, dict) else data
    if name:
        parts.append(f"data {name}")
    if meta.get("when"):
        parts.append(f"run {meta['when']}")
    if body.get("wall_seconds"):
        parts.append(f"{float(body['wall_seconds']) / 60:.1f} min")
    return " · ".join(parts)


def rolling_section(body: dict[str, Any]) -> None:
    st.subheader("Rolling live scores")
    rolling = charts.backtest_rolling(body)
    if rolling.empty:
        st.info(
            "This result holds no per-day rows (a summary file), so there is no series to "
            "draw here; the plots below show it."
        )
        return
    policies = list(body.get("policies") or [])
    left, right = st.columns(2)
    for column, metric in zip((left, right), charts.ROLLING_METRICS, strict=True):
        chart = charts.backtest_rolling_chart(rolling, metric, policies)
        if chart is None:
            column.info(f"No rolling {charts.ROLLING_METRICS[metric]} yet (too few scored days).")
        else:
            column.altair_chart(chart, width="stretch")


def retrains_section(body: dict[str, Any]) -> None:
    st.subheader("Retrains and decisions")
    retrains = charts.backtest_retrains(body)
    if retrains.empty:
        st.info("No policy retrained in this run (e.g. only `never`).")
        return
    st.dataframe(retrains, hide_index=True)


def plots_section(client: ApiClient, body: dict[str, Any]) -> None:
    st.subheader("Plots of the run")
    names = [n for n in body.get("plots") or [] if n in BACKTEST_PLOTS]
    if not names:
        st.info("The run wrote no plots.")
        return
    for name in names:
        png = call_api(functools.partial(client.backtest_plot, name))
        if png is not None:
            st.image(png, caption=BACKTEST_PLOTS[name])


def readable_time(value: Any) -> str:
    """``2026-01-02T03:04:05+00:00`` -> ``2026-01-02 03:04 UTC``; "unknown" for nothing."""
    if not value:
        return "unknown"
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M") + (" UTC" if when.tzinfo is not None else "")


PAGE_VIEWS: dict[str, Callable[[], None]] = {
    "Predict": predict_page,
    "Batch": batch_page,
    "Model": model_page,
    "Monitor": monitor_page,
    "Backtest": backtest_page,
}


def open_requested_page() -> None:
    """Start on the page the URL names (``/?page=Monitor``, as `make up` prints it)."""
    wanted = st.query_params.get("page")
    if "page" not in st.session_state and wanted in PAGES:
        st.session_state["page"] = wanted


def main() -> None:
    st.set_page_config(page_title="raincast", page_icon="🌧️", layout="wide")
    try:
        open_requested_page()
        if not st.session_state.get("token"):
            login_page()
            return
        with st.sidebar:
            st.write(f"Logged in as **{st.session_state.get('user', '?')}**")
            st.button("Log out", key="logout", on_click=end_session, args=("You are logged out.",))
            page = st.radio("Page", PAGES, key="page")
        st.query_params["page"] = page  # the address bar names the page: a link to share
        PAGE_VIEWS[page]()
    except Exception:  # the last line of defence: a message, never a traceback
        log.exception("UI page failed")
        st.error("Something went wrong on this page; the details are in the server log.")


if __name__ == "__main__":
    main()
