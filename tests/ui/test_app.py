"""The Streamlit app run headless by `AppTest`, with a stand-in API client injected through
``st.session_state["api_client"]`` (the app's documented seam)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from raincast import schema
from raincast.data import store
from raincast.ui.client import (
    ApiError,
    ApiUnavailable,
    BatchResult,
    FieldError,
    Forbidden,
    InvalidInput,
    LoginFailed,
    PayloadTooLarge,
    Prediction,
    RateLimited,
    SessionExpired,
)

APP = Path(__file__).resolve().parents[2] / "src" / "raincast" / "ui" / "app.py"
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
        }


@pytest.fixture
def stub() -> StubApi:
    return StubApi()


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub: StubApi) -> AppTest:
    """The app on the login page, its raw store an (absent) SQLite file under tmp_path."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("RAINCAST_HOME", str(tmp_path / "var"))
    monkeypatch.delenv("RAINCAST_STORE_URL", raising=False)
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
    assert list(app.sidebar.radio(key="page").options) == ["Predict", "Batch", "Model", "Monitor"]
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


def test_model_page_without_a_store_says_history_is_not_available(app: AppTest) -> None:
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
    assert any("history not available" in i.value for i in app.info)
    assert not (Path.cwd() / "var" / "raincast.db").exists()  # the UI never creates a store


def test_model_page_shows_promotion_history_from_the_store(app: AppTest, tmp_path: Path) -> None:
    engine = store.connect(f"sqlite:///{tmp_path / 'var' / 'raincast.db'}")
    store.record_decision(
        engine,
        model_name="rain-tomorrow",
        action="promote",
        decision="promoted",
        candidate_version="7",
        champion_before="6",
        champion_after="7",
        reasons="better f1",
    )
    engine.dispose()
    log_in(app)
    go_to(app, "Model")
    assert_clean(app)
    history = app.dataframe[-1].value
    assert history[["decision", "candidate_version", "champion_before"]].values.tolist() == [
        ["promoted", "7", "6"]
    ]


def test_model_page_failure_is_a_message(app: AppTest, stub: StubApi) -> None:
    log_in(app)
    stub.fail = ApiUnavailable("The API is not ready: no champion model loaded yet.")
    go_to(app, "Model")
    assert_clean(app)
    assert errors(app) == ["The API is not ready: no champion model loaded yet."]


def test_monitor_page_empty_state(app: AppTest) -> None:
    log_in(app)
    go_to(app, "Monitor")
    assert_clean(app)
    infos = [i.value for i in app.info]
    assert any("Live scores not available" in i for i in infos)
    assert any("No drift measurements" in i for i in infos)


def test_monitor_page_charts_live_scores(app: AppTest, tmp_path: Path) -> None:
    engine = store.connect(f"sqlite:///{tmp_path / 'var' / 'raincast.db'}")
    rows = [
        {
            "as_of_date": day,
            "window_days": window,
            "model_name": "rain-tomorrow",
            "window_start": day,
            "model_versions": "7",
            "n_scored": 40,
            "n_pending": 0,
            "f1": 0.5 + i / 10,
            "precision": 0.5,
            "recall": 0.5,
            "roc_auc": 0.8,
            "base_rate": 0.2,
            "predicted_positive_rate": 0.25,
            "mean_probability": 0.3,
            "scored_at": datetime(2026, 1, 5, tzinfo=UTC),
            "run_id": "r",
        }
        for i, day in enumerate([date(2026, 1, 3), date(2026, 1, 4)])
        for window in (7, 30)
    ]
    store.upsert_live_scores(engine, rows)
    engine.dispose()
    log_in(app)
    go_to(app, "Monitor")
    assert_clean(app)
    assert app.selectbox(key="monitor_window").options == ["7", "30"]
    assert len(app.get("vega_lite_chart")) == 2
    assert any("No drift measurements" in i.value for i in app.info)


def test_the_app_never_imports_the_model_stack() -> None:
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(APP)!r}, default_timeout=60).run()\n"
        "assert not at.exception, at.exception\n"
        "print(sorted(m for m in ('xgboost', 'mlflow', 'raincast.serving', 'raincast.models')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
