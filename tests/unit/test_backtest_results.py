"""The API's reads of the backtest results (serving.backtest) without a server: the answer,
the thinned rolling series, the plot allow-list, and results that are absent or corrupt.
(The CLI-writes / API-reads round trip is in tests/integration/test_backtest.py.)"""

from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from raincast.catalog import BACKTEST_PLOTS, BACKTEST_RESULT, BACKTEST_SUMMARY
from raincast.serving import backtest
from raincast.serving.backtest import (
    BacktestNotFoundError,
    BacktestResults,
    BacktestUnreadableError,
)
from raincast.settings import Settings
from tests.helpers import BACKTEST_START, BENCH_RESULTS, backtest_result_body, policy_summary

PNG = BENCH_RESULTS / "backtest_rolling.png"
BODY = backtest_result_body()


def write(folder: Path, body: Any, name: str = BACKTEST_RESULT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


# --- the answer --------------------------------------------------------------------------


def test_the_committed_benchmark_summary_is_served_with_its_plots() -> None:
    answer = BacktestResults(BENCH_RESULTS).summary()
    assert answer["source"] == BACKTEST_SUMMARY
    assert (answer["start"], answer["end"]) == ("2017-06-25", "2018-06-24")
    assert [s["policy"] for s in answer["summary"]] == answer["policies"] == ["monthly", "never"]
    monthly = answer["summary"][0]
    assert (monthly["retrains"], monthly["failed_retrains"], monthly["promotions"]) == (12, 2, 4)
    assert monthly["roc_auc"] == pytest.approx(0.903, abs=5e-4)
    assert len(answer["retrains"]) == 12 and sum(r["promoted"] for r in answer["retrains"]) == 4
    assert answer["n_days"] is None and answer["rolling"] == []  # the summary has no days
    assert answer["plots"] == list(BACKTEST_PLOTS)
    json.dumps(answer, allow_nan=False)  # what the API's JSON response does


def test_a_full_result_is_preferred_and_its_days_become_the_rolling_series(
    tmp_path: Path,
) -> None:
    shutil.copy(BENCH_RESULTS / BACKTEST_SUMMARY, tmp_path / BACKTEST_SUMMARY)
    write(tmp_path, backtest_result_body())
    answer = BacktestResults(tmp_path).summary()
    assert answer["source"] == BACKTEST_RESULT
    assert answer["policies"] == ["daily", "never"] and answer["n_days"] == 20
    assert "days" not in answer  # the per-day rows stay on the server
    assert answer["plots"] == []
    daily = [r for r in answer["rolling"] if r["policy"] == "daily"]
    assert [r["date"] for r in daily] == [f"2020-01-{d:02d}" for d in range(1, 11)]
    assert daily[-1]["cumulative_compute_seconds"] == pytest.approx(15.0)
    assert [r["promoted"] for r in daily].count(True) == 1
    assert answer["retrains"][0]["candidate"]["f1"] == 0.67  # fields pass through
    assert answer["meta"] == {"data": "w.csv.gz", "quarantined_rows": 0}


def test_a_long_run_is_thinned_but_keeps_its_ends_and_promotion_days(tmp_path: Path) -> None:
    n = 3 * backtest.MAX_POINTS + 7
    write(tmp_path, backtest_result_body(n_days=n, promoted_on=n - 5))
    rolling = BacktestResults(tmp_path).summary()["rolling"]
    for policy in ("daily", "never"):
        rows = [r for r in rolling if r["policy"] == policy]
        assert len(rows) <= backtest.MAX_POINTS + 2
        assert rows[0]["date"] == "2020-01-01"
        assert rows[-1]["date"] == (BACKTEST_START + timedelta(days=n - 1)).isoformat()
        assert rows[-1]["cumulative_compute_seconds"] == pytest.approx(1.5 * n)
    promoted = [r["date"] for r in rolling if r["promoted"]]
    assert promoted == [(BACKTEST_START + timedelta(days=n - 5)).isoformat()]


def test_kept_indices_by_hand() -> None:
    assert backtest.kept_indices(0, 5, set()) == []
    assert backtest.kept_indices(4, 5, set()) == [0, 1, 2, 3]
    assert backtest.kept_indices(10, 4, {5}) == [0, 3, 5, 6, 9]


def test_nan_in_the_file_is_served_as_missing(tmp_path: Path) -> None:
    body = json.dumps(backtest_result_body()).replace('"roc_auc": 0.9,', '"roc_auc": NaN,', 1)
    write(tmp_path, body.replace('"wall_seconds": 61.5', '"wall_seconds": Infinity'))
    answer = BacktestResults(tmp_path).summary()
    assert answer["summary"][0]["roc_auc"] is None and answer["wall_seconds"] is None
    json.dumps(answer, allow_nan=False)


def test_the_answer_is_read_again_only_when_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, backtest_result_body())
    parsed: list[str] = []
    real = backtest.parse_result

    def counted(raw: bytes, name: str) -> backtest.ResultFile:
        parsed.append(name)
        return real(raw, name)

    monkeypatch.setattr(backtest, "parse_result", counted)
    results = BacktestResults(tmp_path)
    assert results.summary()["distinct_fits"] == 3
    results.summary()
    assert len(parsed) == 1
    write(tmp_path, {**backtest_result_body(), "distinct_fits": 4})
    os.utime(path, ns=(1, 1))  # a new version even on a coarse-clock file system
    assert results.summary()["distinct_fits"] == 4 and len(parsed) == 2
    shutil.copy(PNG, tmp_path / BACKTEST_PLOTS[0])
    assert results.summary()["plots"] == [BACKTEST_PLOTS[0]]  # plots are looked up each time


# --- nothing there, or not a result ------------------------------------------------------------


@pytest.mark.parametrize("folder", ["absent", "empty"])
def test_no_results_is_not_found_and_says_how_to_make_them(tmp_path: Path, folder: str) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BacktestNotFoundError, match="no backtest results yet") as caught:
        BacktestResults(tmp_path / folder).summary()
    assert "raincast backtest --data FILE --start A --end B" in str(caught.value)
    assert "RAINCAST_BACKTEST_DIR" in str(caught.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{", "not JSON: Expecting property name"),
        ("\ufffe\x00garbage", "not JSON"),
        ("[" * 100_000, "not JSON"),  # nested too deeply, or refused by the parser
        ("[1, 2]", "body: Input should be a valid dictionary"),
        (json.dumps({"start": "2020-01-01"}), "end: Field required"),
        (json.dumps({**BODY, "start": "yesterday"}), "start: Input should be a valid date"),
        (json.dumps({**BODY, "policies": []}), "policies: List should have at least 1"),
        (json.dumps({**BODY, "retrains": "many"}), "retrains: Input should be a valid list"),
        (json.dumps({**BODY, "summary": {"daily": policy_summary("daily", 3, 3, 1)}}),
         "no summary for never"),
        (json.dumps({**BODY, "days": [{"date": "2020-01-01"}]}), "days"),
    ],
    ids=["truncated", "binary", "deep", "list", "no-fields", "bad-date", "no-policy",
         "bad-retrains", "summary-missing", "bad-day"],
)  # fmt: skip
def test_a_file_that_is_not_a_result_is_unreadable_with_the_reason(
    tmp_path: Path, content: str, reason: str
) -> None:
    write(tmp_path, content)
    with pytest.raises(BacktestUnreadableError) as caught:
        BacktestResults(tmp_path).summary()
    message = str(caught.value)
    assert message.startswith(f"{BACKTEST_RESULT} is not a backtest result (")
    assert reason in message and "raincast backtest" in message
    assert str(tmp_path) not in message and len(message) < 600


def test_a_result_over_the_size_limit_is_refused_before_it_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, backtest_result_body())
    monkeypatch.setattr(backtest, "MAX_RESULT_BYTES", 100)
    with pytest.raises(BacktestUnreadableError, match="larger than the API reads"):
        BacktestResults(tmp_path).summary()


def test_an_unreadable_file_says_so_without_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / BACKTEST_RESULT).mkdir(parents=True)  # a folder where the file should be
    write(tmp_path, backtest_result_body(), BACKTEST_SUMMARY)
    assert BacktestResults(tmp_path).summary()["source"] == BACKTEST_SUMMARY  # skipped

    def denied(self: Path, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", denied)  # (chmod 0 does not stop root)
    with pytest.raises(BacktestUnreadableError, match="cannot be read by the API") as caught:
        BacktestResults(tmp_path).summary()
    assert str(caught.value).startswith(f"{BACKTEST_SUMMARY} cannot be read by the API")
    assert str(tmp_path) not in str(caught.value)


# --- plots -------------------------------------------------------------------------------------


def test_each_allowed_plot_is_served_as_its_bytes() -> None:
    results = BacktestResults(BENCH_RESULTS)
    for name in BACKTEST_PLOTS:
        assert results.plot(name) == (BENCH_RESULTS / name).read_bytes()


@pytest.mark.parametrize(
    "name",
    [
        "", "backtest.json", BACKTEST_SUMMARY, "../backtest_rolling.png", "/etc/passwd",
        "backtest_rolling.png/", "./backtest_rolling.png", "BACKTEST_ROLLING.PNG",
        "backtest_rolling.png\x00", "..", "%2e%2e%2fbacktest.json",
    ],
)  # fmt: skip
def test_a_name_outside_the_allow_list_is_not_found_and_not_echoed(
    tmp_path: Path, name: str
) -> None:
    # Every file a traversal could reach is there: a plot name never becomes a path.
    write(tmp_path, backtest_result_body())
    for plot in BACKTEST_PLOTS:
        shutil.copy(PNG, tmp_path / plot)
    with pytest.raises(BacktestNotFoundError) as caught:
        BacktestResults(tmp_path / "sub").plot(name)
    assert str(caught.value) == f"no such plot; the plots are {', '.join(BACKTEST_PLOTS)}"


def test_a_missing_plot_is_not_found_and_a_broken_one_unreadable(tmp_path: Path) -> None:
    write(tmp_path, backtest_result_body())
    results = BacktestResults(tmp_path)
    with pytest.raises(BacktestNotFoundError, match=r"no backtest plot backtest_compute\.png yet"):
        results.plot("backtest_compute.png")
    (tmp_path / "backtest_compute.png").write_bytes(b"<html>not a png</html>")
    with pytest.raises(BacktestUnreadableError, match=r"backtest_compute\.png is not a PNG image"):
        results.plot("backtest_compute.png")


# --- the folder: one default for the command and the API ----------------------------------------


def test_the_results_folder_defaults_under_the_home_and_can_be_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("RAINCAST_BACKTEST_DIR", raising=False)
    monkeypatch.setenv("RAINCAST_HOME", str(tmp_path / "home"))
    assert Settings().backtest_results_dir == tmp_path / "home" / "backtest"
    monkeypatch.setenv("RAINCAST_BACKTEST_DIR", str(tmp_path / "bt"))
    assert Settings().backtest_results_dir == tmp_path / "bt"
    monkeypatch.setenv("RAINCAST_BACKTEST_DIR", "")  # empty: not set
    assert Settings().backtest_results_dir == tmp_path / "home" / "backtest"
