"""`raincast fetch --history-if-empty`: how the compose deployment bootstraps an empty store
(weather_data_update's `load_history` param), and why it never reloads a filled one."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
from testbed.params_file import LIBRARY_DEFAULTS, write_params
from typer.testing import CliRunner

from raincast import catalog
from raincast.cli import app
from raincast.data import store
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource

STATIONS = ["Darwin", "Perth", "Sydney"]
FIRST, LAST = date(2021, 1, 1), date(2021, 3, 31)


def _project(tmp_path: Path) -> tuple[Settings, Path, dict[str, str]]:
    write_params(tmp_path, LIBRARY_DEFAULTS)
    rows = SyntheticSource(seed=5, stations=STATIONS).fetch(FIRST, LAST)
    csv = tmp_path / "weather.csv"
    rows.to_csv(csv, index=False, na_rep="NA")
    settings = Settings(project_dir=tmp_path, home=tmp_path / "var")
    env = {
        "RAINCAST_PROJECT_DIR": str(tmp_path),
        "RAINCAST_HOME": str(tmp_path / "var"),
        "RAINCAST_STORE_URL": "",
        "RAINCAST_DATE": "",
    }
    return settings, csv, env


def _fetch(env: dict[str, str], *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["fetch", *args], env=env)
    return res.exit_code, res.output


def _landed(settings: Settings, day: date) -> pd.DataFrame:
    return pd.read_parquet(catalog.landing_paths(settings, day)[0])


def test_empty_store_fetches_every_earlier_row_of_a_replay_file(tmp_path: Path) -> None:
    settings, csv, env = _project(tmp_path)
    code, out = _fetch(
        env, "--source", f"replay:{csv}", "--date", "2021-03-30", "--history-if-empty"
    )
    assert code == 0, out
    assert "the store is empty: fetching its history from 2021-01-01" in out
    landed = _landed(settings, date(2021, 3, 30))
    assert (landed["Date"].min(), landed["Date"].max()) == ("2021-01-01", "2021-03-30")
    assert len(landed) == len(STATIONS) * 89


def test_raincast_date_is_the_date_and_never_the_start_of_a_range(tmp_path: Path) -> None:
    """$RAINCAST_DATE (how the containers get the day) feeds --date only: --start stays
    unset, so an empty store still gets its history."""
    settings, csv, env = _project(tmp_path)
    code, out = _fetch(
        {**env, "RAINCAST_DATE": "2021-03-30"}, "--source", f"replay:{csv}", "--history-if-empty"
    )
    assert code == 0, out
    assert "the store is empty: fetching its history from 2021-01-01" in out
    landed = _landed(settings, date(2021, 3, 30))
    assert (landed["Date"].min(), landed["Date"].max()) == ("2021-01-01", "2021-03-30")


def test_a_filled_store_fetches_only_the_day(tmp_path: Path) -> None:
    settings, csv, env = _project(tmp_path)
    one = SyntheticSource(seed=5, stations=STATIONS).fetch(FIRST, FIRST)
    store.upsert_observations(store.connect(settings.raw_store_url), one, "csv", "seed")
    code, out = _fetch(
        env, "--source", f"replay:{csv}", "--date", "2021-03-30", "--history-if-empty"
    )
    assert code == 0, out
    assert "history" not in out
    assert set(_landed(settings, date(2021, 3, 30))["Date"]) == {"2021-03-30"}


def test_without_the_flag_an_empty_store_fetches_only_the_day(tmp_path: Path) -> None:
    settings, csv, env = _project(tmp_path)
    code, out = _fetch(
        env, "--source", f"replay:{csv}", "--date", "2021-03-30", "--no-history-if-empty"
    )
    assert code == 0, out
    assert set(_landed(settings, date(2021, 3, 30))["Date"]) == {"2021-03-30"}


def test_a_missing_source_file_fails_with_its_name(tmp_path: Path) -> None:
    _, _, env = _project(tmp_path)
    code, out = _fetch(env, "--source", f"replay:{tmp_path}/nope.csv", "--history-if-empty")
    assert code == 1
    assert "nope.csv" in out
