"""The Streamlit app run headless by `AppTest`, with a stand-in API client injected through
``st.session_state["api_client"]`` (the app's documented seam)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from raincast import schema
from raincast.catalog import BACKTEST_PLOTS
from raincast.serving.backtest import BacktestResults, parse_result, summary_answer
from raincast.ui.client import (
    ApiError,
    ApiUnavailable,
    BatchResult,
    FieldError,
    Forbidden,
    InvalidInput,
    LoginFailed,
    NotFound,
    PayloadTooLarge,
    Prediction,
    RateLimited,
    SessionExpired,
)
from tests.helpers import BENCH_RESULTS, backtest_result_body

APP = Path(__file__).resolve().parents[2] / "src" / "raincast" / "ui" / "app.py"
NO_RESULTS = "no backtest results yet: run `raincast backtest --data FILE --start A --end B`"
PASSWORD = "correct-horse-battery"
CSV = (
    b"Date,Location,MinTemp,MaxTemp,Rainfall,Evaporation,Sunshine,WindGustDir,WindGustSpeed,"
    b"WindDir9am,WindDir3pm,WindSpeed9am,WindSpeed3pm,Humidity9am,Humidity3pm,Pressure9am,"
    b"Pressure3pm,Cloud9am,Cloud3pm,Temp9am,Temp3pm,RainToday,RainTomorrow\n"
    b"2008-12-01,Albury,13.4,22.9,0.6,NA,NA,W,44,W,WNW,20,24,71,22,1007.7,1007.1,8,NA,16.9,21.8,No,No\n"
    b"2008-12-02,Albury,7.4,25.1,0,NA,NA,WNW,44,NNW,WSW,4,22,44,25,1010.6,1007.8,NA,NA,17.2,24.3,No,No\n"
    b"2008-12-03,Sydney,12.9,25.7,0,NA,NA,WSW,46,W,WSW,19,26,38,30,1007.6,1008.7,NA,2,21,23.2,No,Yes\n"
)


class StubApi:
    """Answers like the API would; ``fail`` makes the next data call raise it."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.fail: Exception | None = None
        self.rows: list[dict[str, Any]] = []
        self.columns: dict[str, list[Any]] = {}
        self.monitor: dict[str, dict[str, Any]] = {
            "scores": {"model_name": "rain-tomorrow", "rows": []},
            "reliability": {"kind": "live", "start": None, "end": None, "n": 0, "bins": []},
            "drift": {"rows": []},
            "champions": {"model_name": "rain-tomorrow", "current": None, "rows": []},
        }
        self.monitor_fail: dict[str, Exception] = {}
        #: ``GET /model``'s champion spans and the reason they are missing (None).
        self.champion_history: list[dict[str, Any]] | None = []
        self.champion_history_error: str | None = None
        self.reliability_calls: list[tuple[str | None, int]] = []
        #: ``GET /backtest``'s answer; None: the API's 404 (no results yet).
        self.backtest_body: dict[str, Any] | None = None
        self.backtest_fail: Exception | None = None
        self.plot_fail: dict[str, Exception] = {}
        self.plot_calls: list[str] = []

    def _maybe_fail(self) -> None:
        if self.fail is not None:
            raise self.fail

    def login(self, username: str, password: str) -> str:
        if (username, password) != ("bob-user", PASSWORD):
            raise LoginFailed()
        self.token = "token-1"
        return self.token

    def predict(self, rows: list[dict[str, Any]]) -> list[Prediction]:
        self._maybe_fail()
        self.rows = rows
        return [Prediction(0.734, "Yes", 0.41, "7") for _ in rows]

    def predict_batch(self, columns: dict[str, list[Any]]) -> BatchResult:
        self._maybe_fail()
        self.columns = columns
        n = len(columns["Date"])
        proba = [0.2 + 0.3 * i for i in range(n)]
        labels = ["Yes" if p >= 0.41 else "No" for p in proba]
        return BatchResult(proba, labels, ["7"] * n, 0.41)

    def model(self) -> dict[str, Any]:
        self._maybe_fail()
        return {
            "name": "rain-tomorrow",
            "version": "7",
            "threshold": 0.41,
            "trained_at": "2026-01-02T03:04:05+00:00",
            "metrics": {"test_f1": 0.62, "test_roc_auc": 0.87, "test_auc_Sydney": 0.85},
            "last_refresh_error": None,
            "champion_history": self.champion_history,
            "champion_history_error": self.champion_history_error,
        }

    # /monitor/*: "nothing yet" until a test fills ``monitor``; ``monitor_fail`` per endpoint

    def _monitor(self, name: str) -> dict[str, Any]:
        self._maybe_fail()
        if name in self.monitor_fail:
            raise self.monitor_fail[name]
        return self.monitor[name]

    def monitor_scores(self, kind: str = "all") -> dict[str, Any]:
        body = self._monitor("scores")
        rows = [r for r in body["rows"] if kind in ("all", r["kind"])]
        return {**body, "rows": rows}

    def monitor_reliability(
        self, kind: str | None = None, window_days: int = 30, bins: int = 10
    ) -> dict[str, Any]:
        self.reliability_calls.append((kind, window_days))
        return self._monitor("reliability")

    def monitor_drift(self) -> dict[str, Any]:
        return self._monitor("drift")

    def monitor_champions(self) -> dict[str, Any]:
        return self._monitor("champions")

    def backtest(self) -> dict[str, Any]:
        self._maybe_fail()
        if self.backtest_fail is not None:
            raise self.backtest_fail
        if self.backtest_body is None:
            raise NotFound(NO_RESULTS)
        return self.backtest_body

    def backtest_plot(self, name: str) -> bytes:
        self.plot_calls.append(name)
        if name in self.plot_fail:
            raise self.plot_fail[name]
        return (BENCH_RESULTS / name).read_bytes()


@pytest.fixture
def stub() -> StubApi:
    return StubApi()


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub: StubApi) -> AppTest:
    """The app on the login page, with no .env and no store to find (it asks the API)."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("RAINCAST_HOME", str(tmp_path / "var"))
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.session_state["api_client"] = stub
    return at.run()


def log_in(at: AppTest, user: str = "bob-user", password: str = PASSWORD) -> AppTest:
    at.text_input(key="login_user").set_value(user)
    at.text_input(key="login_password").set_value(password)
    return at.button[0].click().run()


def go_to(at: AppTest, page: str) -> AppTest:
    return at.sidebar.radio(key="page").set_value(page).run()


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def assert_clean(at: AppTest) -> None:
    """No traceback on the page, and no Streamlit warning about misused widget state."""
    assert not at.exception, [e.value for e in at.exception]
    assert not [w.value for w in at.warning if "widget" in w.value.lower()]


# --- login / logout --------------------------------------------------------------------------


def test_login_success_shows_the_pages(app: AppTest) -> None:
    assert "token" not in app.session_state
    log_in(app)
    assert_clean(app)
    assert app.session_state["token"] == "token-1"
    assert list(app.sidebar.radio(key="page").options) == [
        "Predict",
        "Batch",
        "Model",
        "Monitor",
        "Backtest",
    ]
    assert "bob-user" in app.sidebar.markdown[0].value


def test_login_failure_says_so_and_keeps_the_form(app: AppTest) -> None:
    log_in(app, password="wrong-password-123")
    assert_clean(app)
    assert errors(app) == ["Wrong username or password."]
    assert "token" not in app.session_state
    assert len(app.sidebar.radio) == 0


def test_login_while_the_api_is_down_says_so(
    app: AppTest, stub: StubApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = "Cannot reach the prediction API at http://127.0.0.1:1. Is it running?"

    def down(username: str, password: str) -> str:
        raise ApiUnavailable(message)

    monkeypatch.setattr(stub, "login", down)
    log_in(app)
    assert_clean(app)
    assert errors(app) == [message]
    assert "token" not in app.session_state


def test_empty_credentials_are_not_sent(app: AppTest, stub: StubApi) -> None:
    app.button[0].click().run()
    assert errors(app) == ["Enter a username and a password."]
    assert stub.token is None


def test_logout_returns_to_the_login_form(app: AppTest) -> None:
    log_in(app)
    app.sidebar.button(key="logout").click().run()
    assert_clean(app)
    assert "token" not in app.session_state
    assert [w.value for w in app.warning] == ["You are logged out."]
    assert app.text_input(key="login_user").value == ""


# --- predict -------------------------------------------------------------------------------


def test_predict_shows_probability_label_threshold_and_version(app: AppTest, stub: StubApi) -> None:
    log_in(app)
    app.selectbox(key="in_Location").set_value("Darwin").run()
    app.number_input(key="in_Sunshine").set_value(None)
    app.selectbox(key="in_WindGustDir").set_value("SSE")
    app.button(key="FormSubmitter:predict-Predict").click().run()
    assert_clean(app)
    assert metrics(app) == {
        "Probability of rain": "73.4%",
        "Rain tomorrow": "Yes",
        "Threshold": "0.410",
        "Model version": "7",
    }
    (row,) = stub.rows
    assert set(row) == set(schema.INPUT_COLUMNS)
    assert row["Location"] == "Darwin" and row["Sunshine"] is None
    assert row["WindGustDir"] == "SSE" and row["WindDir9am"] is None
    assert row["RainToday"] == "No" and isinstance(row["Humidity3pm"], float)


def test_station_change_refills_typical_values(app: AppTest) -> None:
    log_in(app)
    app.date_input(key="in_Date").set_value(date(2021, 7, 15)).run()
    app.selectbox(key="in_Location").set_value("Hobart").run()
    hobart = app.number_input(key="in_MaxTemp").value
    app.selectbox(key="in_Location").set_value("Darwin").run()
    darwin = app.number_input(key="in_MaxTemp").value
    assert darwin is not None and hobart is not None
    assert darwin > hobart + 10


def test_form_values_survive_a_visit_to_another_page(app: AppTest) -> None:
    log_in(app)
    app.selectbox(key="in_Location").set_value("Perth").run()
    go_to(app, "Model")
    go_to(app, "Predict")
    assert app.selectbox(key="in_Location").value == "Perth"


def test_expired_session_mid_session_asks_to_log_in_again(app: AppTest, stub: StubApi) -> None:
    log_in(app)
    stub.fail = SessionExpired()
    app.button(key="FormSubmitter:predict-Predict").click().run()
    assert_clean(app)
    assert "token" not in app.session_state
    (warning,) = [w.value for w in app.warning]
    assert "session expired, please log in again" in warning.lower()
    assert app.text_input(key="login_user") is not None


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (PayloadTooLarge("limit 2000000 bytes"), "too large for the API (limit 2000000 bytes)"),
        (
            InvalidInput([FieldError("rows.0.Humidity3pm", "less than or equal to 100")]),
            "`rows.0.Humidity3pm`: less than or equal to 100",
        ),
        (Forbidden(), "not allowed to do this"),
        (RateLimited("7"), "Too many requests: wait 7 s"),
        (ApiUnavailable("Cannot reach the prediction API at http://x:1. Is it running?"),
         "Cannot reach the prediction API"),
        (ApiError("The API refused the request (HTTP 400): nope"), "HTTP 400"),
    ],
    ids=["413", "422", "403", "429", "down", "other"],
)  # fmt: skip
def test_api_failures_become_messages_and_keep_the_session(
    app: AppTest, stub: StubApi, failure: Exception, expected: str
) -> None:
    log_in(app)
    stub.fail = failure
    app.button(key="FormSubmitter:predict-Predict").click().run()
    assert_clean(app)
    (message,) = errors(app)
    assert expected in message
    assert app.session_state["token"] == "token-1"
    assert not app.metric


def test_an_unexpected_failure_is_a_message_not_a_traceback(app: AppTest, stub: StubApi) -> None:
    log_in(app)
    stub.fail = KeyError("probability")
    app.button(key="FormSubmitter:predict-Predict").click().run()
    assert_clean(app)
    assert errors(app) == ["Something went wrong on this page; the details are in the server log."]


# --- batch ---------------------------------------------------------------------------------


def test_batch_upload_shows_a_table_and_offers_a_download(app: AppTest, stub: StubApi) -> None:
    log_in(app)
    go_to(app, "Batch")
    app.file_uploader(key="batch_file").set_value(("obs.csv", CSV, "text/csv"))
    app.run()
    assert [c.value for c in app.caption if "Ignored" in c.value] == [
        "Ignored columns: RainTomorrow"
    ]
    app.button(key="batch_predict").click().run()
    assert_clean(app)
    table = app.dataframe[0].value
    assert list(table["Location"]) == ["Albury", "Albury", "Sydney"]
    assert list(table["label"]) == ["No", "Yes", "Yes"]
    assert table["probability"].tolist() == pytest.approx([0.2, 0.5, 0.8])
    assert "RainTomorrow" not in table.columns
    assert stub.columns["Evaporation"] == [None, None, None]
    assert stub.columns["MinTemp"] == [13.4, 7.4, 12.9]
    assert app.get("download_button")
    app.run()  # results survive a rerun without calling the API again
    assert len(app.dataframe[0].value) == 3


def test_batch_422_names_the_bad_cells(app: AppTest, stub: StubApi) -> None:
    log_in(app)
    go_to(app, "Batch")
    app.file_uploader(key="batch_file").set_value(("obs.csv", CSV, "text/csv"))
    app.run()
    stub.fail = InvalidInput([FieldError("columns.Humidity3pm.12345", "must be a number")])
    app.button(key="batch_predict").click().run()
    assert_clean(app)
    assert "`columns.Humidity3pm.12345`: must be a number" in errors(app)[0]
    assert not app.dataframe


def test_batch_rejects_a_file_without_the_weatheraus_header(app: AppTest) -> None:
    log_in(app)
    go_to(app, "Batch")
    app.file_uploader(key="batch_file").set_value(("x.csv", b"a,b\n1,2\n", "text/csv"))
    app.run()
    assert_clean(app)
    assert "lacks the column(s) Date, Location" in errors(app)[0]
    assert len(app.button) == 1  # only logout: nothing to predict


# --- model and monitor ---------------------------------------------------------------------


def scores(kind: str, days: list[date], windows: tuple[int, ...] = (7, 30)) -> list[dict[str, Any]]:
    return [
        {
            "kind": kind,
            "as_of_date": day.isoformat(),
            "window_days": window,
            "window_start": day.isoformat(),
            "n_scored": 40 * window,
            "f1": 0.5 + i / 10,
            "roc_auc": 0.8,
            "calibration_error": 0.05,
            "base_rate": 0.2,
            "mean_probability": 0.25,
            "model_versions": "7",
        }
        for i, day in enumerate(days)
        for window in windows
    ]


RELIABILITY = {
    "kind": "live", "start": "2026-01-01", "end": "2026-01-30", "n": 300,
    "bins": [
        {"lower": 0.0, "upper": 0.1, "n": 200, "mean_probability": 0.04,
         "observed_frequency": 0.06},
        {"lower": 0.5, "upper": 0.6, "n": 100, "mean_probability": 0.55,
         "observed_frequency": 0.5},
    ],
}  # fmt: skip
DRIFT = {
    "rows": [
        {"cycle_date": "2026-01-03", "computed_at": "2026-01-03T06:00:00+00:00",
         "drift_share": 0.1, "n_drifted": 2, "n_columns": 20,
         "drifted_columns": ["Rainfall", "Sunshine"],
         "dataset_drift": False, "run_id": "r1"},
        {"cycle_date": "2026-01-04", "computed_at": "2026-01-04T06:00:00+00:00",
         "drift_share": 0.6, "n_drifted": 12, "n_columns": 20, "drifted_columns": ["Humidity3pm"],
         "dataset_drift": True, "run_id": "r2"},
    ]
}  # fmt: skip
CHAMPIONS = {
    "model_name": "rain-tomorrow", "current": "7",
    "rows": [
        {"decided_at": "2026-01-02T06:00:00+00:00", "action": "promote", "decision": "promoted",
         "candidate_version": "6", "champion_before": None, "champion_after": "6",
         "candidate_f1": 0.58, "champion_f1": None},
        {"decided_at": "2026-01-03T06:00:00+00:00", "action": "promote", "decision": "rejected",
         "candidate_version": "7", "champion_before": "6", "champion_after": "6",
         "candidate_f1": 0.57, "champion_f1": 0.58},
        {"decided_at": "2026-01-04T06:00:00+01:00", "action": "promote", "decision": "promoted",
         "candidate_version": "8", "champion_before": "6", "champion_after": "7",
         "candidate_f1": 0.62, "champion_f1": 0.58},
    ],
}  # fmt: skip
DAYS = [date(2026, 1, 3), date(2026, 1, 4)]


def with_monitor_data(stub: StubApi, kinds: tuple[str, ...] = ("live",)) -> None:
    rows = [r for kind in kinds for r in scores(kind, DAYS)]
    stub.monitor = {
        "scores": {"model_name": "rain-tomorrow", "rows": rows},
        "reliability": RELIABILITY,
        "drift": DRIFT,
        "champions": CHAMPIONS,
    }


def charts(at: AppTest) -> dict[str, tuple[str, list[pd.DataFrame]]]:
    """The page's Altair charts by what they plot, each with its spec and data tables."""
    found = {}
    for chart in at.get("vega_lite_chart"):
        spec, tables = (
            chart.proto.spec,
            [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets],
        )
        for name, field in (
            ("scores", "calibration_error"),
            ("reliability", "observed_frequency"),
            ("drift", "drift_share"),
            ("champions", "champion_after"),
        ):
            if field in spec or any(
                field in t.columns or field in set(t.get("series", [])) for t in tables
            ):
                found[name] = (spec, tables)
                break
    return found


def infos(at: AppTest) -> list[str]:
    return [i.value for i in at.info]


def test_model_page_shows_metrics_and_the_promotion_history_newest_first(
    app: AppTest, stub: StubApi
) -> None:
    stub.monitor["champions"] = CHAMPIONS
    log_in(app)
    go_to(app, "Model")
    assert_clean(app)
    assert metrics(app)["Champion version"] == "7"
    assert metrics(app)["Threshold"] == "0.410"
    assert metrics(app)["Trained at"] == "2026-01-02 03:04 UTC"
    assert app.dataframe[0].value.set_index("metric")["value"].to_dict() == {
        "f1": 0.62,
        "roc_auc": 0.87,
    }
    history = app.dataframe[-1].value
    assert history[
        ["decided_at", "decision", "candidate_version", "champion_after"]
    ].values.tolist() == [
        ["2026-01-04 05:00 UTC", "promoted", "8", "7"],
        ["2026-01-03 06:00 UTC", "rejected", "7", "6"],
        ["2026-01-02 06:00 UTC", "promoted", "6", "6"],
    ]


SPANS = [
    {"version": "6", "from": "2026-01-02T06:00:00+00:00", "to": "2026-01-04T05:00:00+00:00",
     "decided_by": "promote/promoted"},
    {"version": "7", "from": "2026-01-04T05:00:00+00:00", "to": None,
     "decided_by": "rollback/moved"},
]  # fmt: skip


def spans_table(at: AppTest) -> pd.DataFrame | None:
    found = [d.value for d in at.dataframe if "decided by" in d.value.columns]
    return found[0] if found else None


def test_model_page_shows_the_champion_spans_newest_first(app: AppTest, stub: StubApi) -> None:
    stub.champion_history = SPANS
    log_in(app)
    go_to(app, "Model")
    assert_clean(app)
    table = spans_table(app)
    assert table is not None
    assert table.values.tolist() == [
        ["7", "2026-01-04 05:00 UTC", "now", "rollback/moved"],
        ["6", "2026-01-02 06:00 UTC", "2026-01-04 05:00 UTC", "promote/promoted"],
    ]


def test_model_page_without_spans_says_none_yet(app: AppTest) -> None:
    log_in(app)
    go_to(app, "Model")
    assert_clean(app)
    assert spans_table(app) is None
    assert any("No champion recorded yet" in i for i in infos(app))


def test_model_page_spans_with_the_store_down_give_the_reason(app: AppTest, stub: StubApi) -> None:
    stub.champion_history = None
    stub.champion_history_error = "the raw store is unreachable (sqlite:///x.db: DatabaseError)"
    log_in(app)
    go_to(app, "Model")
    assert_clean(app)
    assert spans_table(app) is None
    assert metrics(app)["Champion version"] == "7"  # the rest of the page still shows
    assert [w.value for w in app.warning] == [
        "The champion history is not available: the raw store is unreachable "
        "(sqlite:///x.db: DatabaseError)"
    ]


def test_model_page_without_decisions_says_none_yet(app: AppTest) -> None:
    log_in(app)
    go_to(app, "Model")
    assert_clean(app)
    assert any("No promotion decisions recorded yet" in i for i in infos(app))
    assert not [d for d in app.dataframe if "decision" in d.value.columns]


def test_model_page_history_with_the_store_down_is_a_message(app: AppTest, stub: StubApi) -> None:
    stub.monitor_fail["champions"] = ApiUnavailable("The API is not ready: raw store unreachable.")
    log_in(app)
    go_to(app, "Model")
    assert_clean(app)
    assert metrics(app)["Champion version"] == "7"  # the rest of the page still shows
    assert errors(app) == ["The API is not ready: raw store unreachable."]


def test_model_page_failure_is_a_message(app: AppTest, stub: StubApi) -> None:
    log_in(app)
    stub.fail = ApiUnavailable("The API is not ready: no champion model loaded yet.")
    go_to(app, "Model")
    assert_clean(app)
    assert errors(app) == ["The API is not ready: no champion model loaded yet."]


def test_monitor_page_before_any_data_has_a_friendly_empty_state_per_plot(app: AppTest) -> None:
    log_in(app)
    go_to(app, "Monitor")
    assert_clean(app)
    assert not app.get("vega_lite_chart")
    messages = infos(app)
    assert [m.split(":")[0].split(".")[0] for m in messages] == [
        "No scores yet",
        "Nothing to compare yet",
        "No drift checks yet",
        "No champion yet",
    ]
    assert not errors(app) and not app.success and not app.warning  # no kind banner either


def test_monitor_page_draws_the_four_plots_from_live_data(app: AppTest, stub: StubApi) -> None:
    with_monitor_data(stub, ("live",))
    log_in(app)
    go_to(app, "Monitor")
    assert_clean(app)
    assert not infos(app) and not errors(app)
    drawn = charts(app)
    assert sorted(drawn) == ["champions", "drift", "reliability", "scores"]
    (banner,) = [s.value for s in app.success]
    assert banner.startswith("**Live**") and not app.warning
    assert len(app.radio) == 1  # only the sidebar's: one kind, no kind switch
    (scores_data,) = drawn["scores"][1]
    assert set(scores_data["window"]) == {"7-day", "30-day"}
    assert set(scores_data["metric"]) == {"F1", "ROC AUC", "Calibration error"}
    assert len(scores_data) == 2 * 2 * 3  # days x windows x metrics
    _, tables = drawn["reliability"]
    assert any(t["p"].tolist() == [0.0, 1.0] for t in tables if "p" in t)  # the diagonal
    assert any(t["observed_frequency"].tolist() == [0.06, 0.5] for t in tables if "n" in t)
    assert stub.reliability_calls == [("live", 30)]
    assert any("Live · 300 predictions · 2026-01-01 to 2026-01-30" in c.value for c in app.caption)
    (drift_data,) = drawn["drift"][1]
    assert drift_data["columns_drifted"].tolist() == ["Rainfall, Sunshine", "Humidity3pm"]
    table = app.dataframe[0].value
    assert table["drifted columns"].tolist() == [
        "Humidity3pm",
        "Rainfall, Sunshine",
    ]  # newest first
    (champion_data,) = [t for t in drawn["champions"][1] if "version" in t]
    assert champion_data["version"].tolist() == [6, 6, 7]
    assert any("Current champion: version 7" in c.value for c in app.caption)


def test_monitor_page_says_when_scores_are_a_replayed_window(app: AppTest, stub: StubApi) -> None:
    with_monitor_data(stub, ("replayed",))
    stub.monitor["reliability"] = {**RELIABILITY, "kind": "replayed"}
    log_in(app)
    go_to(app, "Monitor")
    assert_clean(app)
    (banner,) = [w.value for w in app.warning]
    assert banner.startswith("**Replayed window**") and "did not train on" in banner
    assert not app.success
    assert stub.reliability_calls == [("replayed", 30)]
    assert any(c.value.startswith("Replayed window · 300 predictions") for c in app.caption)


def test_monitor_page_never_mixes_live_and_replayed_scores(app: AppTest, stub: StubApi) -> None:
    with_monitor_data(stub, ("live", "replayed"))
    stub.monitor["scores"]["rows"][0]["f1"] = 0.11  # the first live row
    stub.monitor["scores"]["rows"][-1]["f1"] = 0.99  # the last replayed row
    log_in(app)
    go_to(app, "Monitor")
    assert_clean(app)
    assert app.radio(key="monitor_kind").options == ["Live", "Replayed window"]
    assert [s.value[:8] for s in app.success] == ["**Live**"] and not app.warning
    (live,) = charts(app)["scores"][1]
    f1 = live[live["metric"] == "F1"]["value"].tolist()
    assert 0.11 in f1 and 0.99 not in f1 and len(live) == 12
    app.radio(key="monitor_kind").set_value("replayed").run()
    assert_clean(app)
    assert [w.value[:19] for w in app.warning] == ["**Replayed window**"] and not app.success
    (replayed,) = charts(app)["scores"][1]
    f1 = replayed[replayed["metric"] == "F1"]["value"].tolist()
    assert 0.99 in f1 and 0.11 not in f1 and len(replayed) == 12
    assert stub.reliability_calls[-1] == ("replayed", 30)


def test_monitor_reliability_window_is_asked_of_the_api(app: AppTest, stub: StubApi) -> None:
    with_monitor_data(stub)
    log_in(app)
    go_to(app, "Monitor")
    app.selectbox(key="monitor_days").set_value(7).run()
    assert_clean(app)
    assert stub.reliability_calls[-1] == ("live", 7)


def test_monitor_page_with_the_store_down_says_so_for_each_plot(
    app: AppTest, stub: StubApi
) -> None:
    down = ApiUnavailable("The API is not ready: the raw store cannot be reached.")
    stub.monitor_fail = dict.fromkeys(("scores", "reliability", "drift", "champions"), down)
    log_in(app)
    go_to(app, "Monitor")
    assert_clean(app)
    assert errors(app) == [str(down)] * 4
    assert not app.get("vega_lite_chart")
    assert app.session_state["token"] == "token-1"


def test_monitor_page_one_endpoint_down_keeps_the_other_plots(app: AppTest, stub: StubApi) -> None:
    with_monitor_data(stub)
    stub.monitor_fail["drift"] = InvalidInput([FieldError("(request)", "bad cycle")])
    log_in(app)
    go_to(app, "Monitor")
    assert_clean(app)
    assert sorted(charts(app)) == ["champions", "reliability", "scores"]
    assert "`(request)`: bad cycle" in errors(app)[0]


def test_monitor_page_expired_session_asks_to_log_in_again(app: AppTest, stub: StubApi) -> None:
    with_monitor_data(stub)
    log_in(app)
    go_to(app, "Monitor")
    stub.monitor_fail["reliability"] = SessionExpired()
    app.selectbox(key="monitor_days").set_value(90).run()
    assert_clean(app)
    assert "token" not in app.session_state
    assert "session expired" in app.warning[0].value.lower()
    assert app.text_input(key="login_user") is not None


def test_the_app_never_imports_the_model_stack_nor_the_store() -> None:
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(APP)!r}, default_timeout=60).run()\n"
        "assert not at.exception, at.exception\n"
        "print(sorted(m for m in ('xgboost', 'mlflow', 'raincast.serving', 'raincast.models',"
        " 'sqlalchemy', 'raincast.data.store') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("asked", "shown"),
    [("Monitor", "Monitor"), ("Model", "Model"), ("Backtest", "Backtest"), ("Nope", "Predict")],
)
def test_the_url_names_the_page_to_open_after_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub: StubApi, asked: str, shown: str
) -> None:
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.session_state["api_client"] = stub
    at.query_params["page"] = asked
    log_in(at.run())
    assert_clean(at)
    assert at.sidebar.radio(key="page").value == shown
    assert at.header[0].value == {
        "Monitor": "Monitor",
        "Model": "Served model",
        "Backtest": "Backtest",
    }.get(shown, "Will it rain tomorrow?")
    assert at.query_params["page"] == shown


# --- backtest ------------------------------------------------------------------------------
# The answers are the API's own (`raincast.serving.backtest`) for a hand-made result with
# per-day rows, and for the committed benchmark summary (no per-day rows).


def full_backtest() -> dict[str, Any]:
    body = json.dumps(backtest_result_body()).encode()
    return summary_answer(
        parse_result(body, "backtest.json"), "backtest.json", list(BACKTEST_PLOTS)
    )


def images(at: AppTest) -> list[str]:
    return [caption for image in at.image for caption in image.captions]


def test_backtest_page_without_results_says_how_to_make_them(app: AppTest, stub: StubApi) -> None:
    log_in(app)
    go_to(app, "Backtest")
    assert_clean(app)
    (info,) = infos(app)
    assert info.startswith("No backtest results yet. Run `raincast backtest --data FILE")
    assert "RAINCAST_BACKTEST_DIR" in info and "bench/results" in info
    assert any(c.value == f"The API says: {NO_RESULTS}" for c in app.caption)
    assert not errors(app) and not app.dataframe and not app.image
    assert stub.plot_calls == []


def test_backtest_page_shows_the_policy_table_the_series_the_decisions_and_the_plots(
    app: AppTest, stub: StubApi
) -> None:
    stub.backtest_body = full_backtest()
    log_in(app)
    go_to(app, "Backtest")
    assert_clean(app)
    assert not infos(app) and not errors(app)
    table, retrains = (d.value for d in app.dataframe)
    assert table["policy"].tolist() == ["daily", "never"]
    assert table[
        ["live ROC AUC", "live F1", "retrains", "promotions", "compute (min)"]
    ].values.tolist() == [
        [0.9, 0.66, 10, 1, 2.0],
        [0.9, 0.66, 0, 0, 2.0],
    ]
    assert retrains[
        ["day", "policy", "decision", "candidate F1", "champion F1"]
    ].values.tolist() == [["2020-01-05", "daily", "promoted", 0.67, 0.66]]
    assert "gain +0.01" in retrains["why"].iloc[0]
    drawn = app.get("vega_lite_chart")
    assert len(drawn) == 2  # rolling ROC AUC and rolling F1
    for chart, (drawn_metric, other) in zip(
        drawn, [("rolling_roc_auc", "rolling_f1"), ("rolling_f1", "rolling_roc_auc")], strict=True
    ):
        (data,) = [
            pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets
        ]
        assert sorted(set(data["policy"])) == ["daily", "never"] and len(data) == 20
        assert drawn_metric in chart.proto.spec and other not in chart.proto.spec
    assert stub.plot_calls == list(BACKTEST_PLOTS)
    assert images(app) == [
        "Rolling live ROC AUC and F1 per policy (dots: promotions)",
        "Retrains per policy: promoted, blocked by the rule, or failed",
        "Compute: cumulative per policy, and split by kind",
    ]
    assert any(
        c.value.startswith("2020-01-01 to 2020-01-10 · policies daily, never") for c in app.caption
    )


def test_backtest_page_of_the_committed_summary_shows_its_plots_in_place_of_a_series(
    app: AppTest, stub: StubApi
) -> None:
    stub.backtest_body = BacktestResults(BENCH_RESULTS).summary()
    log_in(app)
    go_to(app, "Backtest")
    assert_clean(app)
    table = app.dataframe[0].value
    assert table.set_index("policy")[["retrains", "failed retrains", "promotions"]].to_dict(
        "index"
    ) == {
        "monthly": {"retrains": 12, "failed retrains": 2, "promotions": 4},
        "never": {"retrains": 0, "failed retrains": 0, "promotions": 0},
    }
    assert table["live ROC AUC"].tolist() == [0.903, 0.902]
    assert len(app.dataframe[1].value) == 12  # monthly's retrains
    (info,) = infos(app)
    assert info.startswith("This result holds no per-day rows")
    assert not app.get("vega_lite_chart")
    assert len(images(app)) == 3
    summary_line = next(c.value for c in app.caption if c.value.startswith("2017-06-25"))
    assert "data weatherAUS_rattle-5.6.2_2007-2026.csv.gz" in summary_line


@pytest.mark.parametrize(
    "failure",
    [
        ApiUnavailable("The API failed (HTTP 500): backtest.json is not a backtest result (x)"),
        ApiUnavailable("Cannot reach the prediction API at http://x:1. Is it running?"),
        Forbidden(),
    ],
    ids=["corrupt", "down", "403"],
)
def test_backtest_page_api_failure_is_a_message(
    app: AppTest, stub: StubApi, failure: Exception
) -> None:
    stub.backtest_fail = failure
    log_in(app)
    go_to(app, "Backtest")
    assert_clean(app)
    assert errors(app) == [str(failure)]
    assert not infos(app) and not app.dataframe and not app.image
    assert app.session_state["token"] == "token-1"


def test_backtest_page_one_plot_failing_keeps_the_rest(app: AppTest, stub: StubApi) -> None:
    stub.backtest_body = full_backtest()
    stub.plot_fail["backtest_retrains.png"] = ApiUnavailable(
        "The API failed (HTTP 500): backtest_retrains.png is not a PNG image"
    )
    log_in(app)
    go_to(app, "Backtest")
    assert_clean(app)
    assert errors(app) == ["The API failed (HTTP 500): backtest_retrains.png is not a PNG image"]
    assert len(images(app)) == 2 and len(app.dataframe) == 2


def test_backtest_page_expired_session_asks_to_log_in_again(app: AppTest, stub: StubApi) -> None:
    stub.backtest_fail = SessionExpired()
    log_in(app)
    go_to(app, "Backtest")
    assert_clean(app)
    assert "token" not in app.session_state
    assert "session expired" in app.warning[0].value.lower()
