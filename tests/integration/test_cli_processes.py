"""`raincast fetch / validate` as processes: two validates on one store, a busy store, an
unreachable database, and what the data side imports (no model library)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from testbed.params_file import LIBRARY_DEFAULTS, merged, write_params

from raincast import catalog, schema
from raincast.data import store
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource
from raincast.steps import fetch as fetch_step
from raincast.steps import validate as validate_step
from tests.helpers import FixedRows

DAY = date(2021, 3, 10)
STATIONS = ("Darwin", "Perth", "Sydney", "Hobart")


def _synthetic(start: date = DAY - timedelta(days=3), end: date = DAY, seed: int = 3):  # type: ignore[no-untyped-def]
    return SyntheticSource(seed=seed, stations=STATIONS).fetch(start, end)


def _engine(settings: Settings) -> sa.Engine:
    return store.connect(settings.raw_store_url)


def _manifest(settings: Settings) -> dict:  # type: ignore[type-arg]
    return json.loads((settings.project_dir / catalog.MANIFEST.path).read_text())


def _cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAINCAST_")}
    env.update(
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        RAINCAST_PROJECT_DIR=str(settings.project_dir),
        RAINCAST_HOME=str(settings.state_dir),
        **extra,
    )
    return env


def _raincast(settings: Settings, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "raincast"), *args],
        cwd=settings.project_dir,
        env=_cli_env(settings, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.timeout(300)
def test_two_validates_at_once_both_land_their_day(settings: Settings) -> None:
    """Two `raincast validate` processes on one store: one waits for the other; both
    days are stored, neither prints a traceback."""
    write_params(
        settings.project_dir, merged(LIBRARY_DEFAULTS, {"validate": {"max_invalid_share": 0.5}})
    )
    days = [DAY, DAY + timedelta(days=1)]
    rows = _synthetic(DAY - timedelta(days=1), days[-1])
    for d in days:
        fetch_step.run(settings, FixedRows("csv", rows), d)
    procs = [_raincast(settings, "validate", "--date", d.isoformat()) for d in days]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out + err
        assert "Traceback" not in err
    engine = _engine(settings)
    stored = store.read_observations(engine)
    assert sorted(set(stored[schema.DATE])) == [d.isoformat() for d in days]
    assert len(stored) == 2 * len(STATIONS)
    assert store.read_state(engine).revision == 2
    assert _manifest(settings) == validate_step.manifest_body(engine)


@pytest.mark.timeout(120)
def test_a_validate_refused_by_a_busy_store_says_so_in_one_line(settings: Settings) -> None:
    write_params(settings.project_dir, LIBRARY_DEFAULTS)
    fetch_step.run(settings, FixedRows("csv", _synthetic()), DAY)
    engine = _engine(settings)
    with store.store_lock(engine, settings.lock_dir, 5, "run 2021-03-10"):
        p = _raincast(
            settings, "validate", "--date", DAY.isoformat(), RAINCAST_STORE_LOCK_TIMEOUT_S="1"
        )
        out, err = p.communicate(timeout=100)
    assert p.returncode == 1, out + err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "is busy: raincast run 2021-03-10" in errors[0]
    assert store.count_rows(engine) == 0


@pytest.mark.timeout(120)
def test_fetch_and_validate_import_no_model_libraries(settings: Settings) -> None:
    write_params(settings.project_dir, LIBRARY_DEFAULTS)
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from raincast.cli import app\n"
        "for args in (['fetch', '--source', 'synthetic:1', '--date', '2021-03-10'],"
        " ['validate', '--date', '2021-03-10']):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = ('sklearn', 'mlflow', 'xgboost', 'evidently', 'matplotlib')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.project_dir,
        env=_cli_env(settings),
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_an_unreachable_database_is_one_line_without_its_password(
    settings: Settings, free_port: int
) -> None:
    pytest.importorskip("psycopg2")
    write_params(settings.project_dir, LIBRARY_DEFAULTS)
    fetch_step.run(settings, FixedRows("csv", _synthetic()), DAY)
    url = f"postgresql+psycopg2://raincast:s3cret-pw@127.0.0.1:{free_port}/raincast"
    p = _raincast(settings, "validate", "--date", DAY.isoformat(), RAINCAST_STORE_URL=url)
    out, err = p.communicate(timeout=100)
    assert p.returncode == 1, out + err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "the store at postgresql+psycopg2://raincast:***@127.0.0.1" in errors[0]
    assert "RAINCAST_STORE_URL" in errors[0] and "s3cret-pw" not in err


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(120)
def test_the_cycle_module_does_not_import_mlflow_before_it_promotes() -> None:
    """`raincast run` decides on its fallback, and a no-op rerun settles from the store
    (`cycle.settled_in_store`), before MLflow and scikit-learn are loaded."""
    code = (
        "import sys\n"
        "import raincast.cli, raincast.pipeline.cycle, raincast.sources.openmeteo\n"
        "print(sorted(m for m in ('sklearn', 'mlflow', 'xgboost') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
