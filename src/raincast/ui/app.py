"""raincast demo UI: log in, predict one day, predict an uploaded CSV, look at the served
model and its live scores. It only talks to the prediction API over HTTP (it never loads
the model) and reads the raw store read-only for history and monitoring.

    RAINCAST_API_URL=http://127.0.0.1:3000 streamlit run src/raincast/ui/app.py

Tests replace the HTTP client by putting a stand-in into ``st.session_state["api_client"]``
before the first run (see tests/ui/test_app.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import pandas as pd
import streamlit as st
from pydantic_settings import BaseSettings, SettingsConfigDict

from raincast import schema
from raincast.settings import Settings
from raincast.ui import monitoring
from raincast.ui.batch import UploadError, read_upload, to_columns, with_predictions
from raincast.ui.client import ApiClient, ApiError, InvalidInput, SessionExpired
from raincast.ui.defaults import typical_inputs

log = logging.getLogger("raincast.ui")

T = TypeVar("T")

PAGES = ("Predict", "Batch", "Model", "Monitor")
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
#: Form widgets whose values survive a visit to another page (Streamlit drops the state of
#: widgets that are not drawn, so the predict page restores them from a plain copy).
INPUT_KEYS = tuple(f"in_{c}" for c in schema.INPUT_COLUMNS)


class UiSettings(BaseSettings):
    """Where the UI finds the API (``RAINCAST_API_URL``) and how long it waits."""

    model_config = SettingsConfigDict(env_prefix="RAINCAST_", env_file=".env", extra="ignore")

    api_url: str = "http://127.0.0.1:3000"
    api_timeout_s: float = 60.0


# --- session -------------------------------------------------------------------------------


def api_client() -> ApiClient:
    """The session's API client (created on first use) carrying the session's token."""
    if "api_client" not in st.session_state:
        config = UiSettings()
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
    st.subheader("Promotion history")
    settings = Settings()
    history = monitoring.promotion_history(
        settings.raw_store_url, str(info.get("name") or settings.model_name)
    )
    if history is None:
        st.info("Promotion history not available (the raw store cannot be read from here).")
    elif history.empty:
        st.info("No promotion decisions recorded yet.")
    else:
        shown = [
            "decided_at", "action", "decision", "candidate_version", "champion_before",
            "champion_after", "candidate_f1", "candidate_auc", "champion_f1", "champion_auc",
            "reasons",
        ]  # fmt: skip
        st.dataframe(history.loc[::-1, shown], hide_index=True)


def monitor_page() -> None:
    st.header("Live monitoring")
    settings = Settings()
    scores = monitoring.live_scores(settings.raw_store_url, settings.model_name)
    if scores is None:
        st.info("Live scores not available (the raw store cannot be read from here).")
    elif scores.empty:
        st.info(
            "No live scores yet: they appear once served predictions meet the observed "
            "weather of the next day."
        )
    else:
        windows = sorted(int(w) for w in scores["window_days"].unique())
        window = st.selectbox("Window (days)", windows, key="monitor_window")
        chosen = scores[scores["window_days"] == window]
        chosen = chosen.set_index(pd.to_datetime(chosen["as_of_date"]))
        st.subheader("Live F1 and ROC AUC")
        st.line_chart(chosen[["f1", "roc_auc"]])
        st.subheader("Observed base rate and predicted rain rate")
        st.line_chart(chosen[["base_rate", "predicted_positive_rate"]])
    st.subheader("Data drift")
    drift = monitoring.drift_shares(settings.raw_store_url)
    if drift is None or drift.empty:
        st.info("No drift measurements in the store yet.")
    else:
        st.line_chart(drift.set_index(pd.to_datetime(drift["time"]))[["drift_share"]])


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
}


def main() -> None:
    st.set_page_config(page_title="raincast", page_icon="🌧️", layout="wide")
    try:
        if not st.session_state.get("token"):
            login_page()
            return
        with st.sidebar:
            st.write(f"Logged in as **{st.session_state.get('user', '?')}**")
            st.button("Log out", key="logout", on_click=end_session, args=("You are logged out.",))
            page = st.radio("Page", PAGES, key="page")
        PAGE_VIEWS[page]()
    except Exception:  # the last line of defence: a message, never a traceback
        log.exception("UI page failed")
        st.error("Something went wrong on this page; the details are in the server log.")


if __name__ == "__main__":
    main()
