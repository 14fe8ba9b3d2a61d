"""The store lock and the write transaction on a real PostgreSQL 15: `validate` waits on an
advisory lock (visible in pg_locks), a busy store is refused with its holder named, and
two upserts of one day never collide."""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from testbed.params_file import LIBRARY_DEFAULTS, merged, write_params

from raincast import schema
from raincast.data import store
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource
from raincast.steps import fetch as fetch_step
from tests.backends.conftest import BIN, Postgres, wait_for
from tests.helpers import race_two_upserts, waiting_advisory_locks

STATIONS = ("Sydney", "Perth", "Darwin", "Hobart")
DAY = date(2021, 3, 10)


class _Csv:
    name = "csv"

    def __init__(self, rows: pd.DataFrame) -> None:
        self.rows = rows

    def fetch(self, start: date, end: date) -> pd.DataFrame:
        d = self.rows[schema.DATE]
        return self.rows[(d >= start.isoformat()) & (d <= end.isoformat())].reset_index(drop=True)


def _settings(tmp_path: Path, url: str, **extra: object) -> Settings:
    return Settings(project_dir=tmp_path, home=tmp_path / "var", store_url=url, **extra)


def test_a_busy_store_is_refused_naming_the_holder(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.create_db(f"lock_{secrets.token_hex(3)}")
    engine = store.connect(url)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with store.store_lock(engine, tmp_path, 0.5, "validate 2021-03-11"):
                pass
        except store.StoreBusyError as err:
            errors.append(err)

    with store.store_lock(engine, tmp_path, 5, "run 2021-03-10"):
        with engine.connect() as conn:  # the holder keeps no transaction open meanwhile
            states = (
                conn.execute(
                    sa.text(
                        "SELECT state FROM pg_stat_activity "
                        "WHERE application_name LIKE 'raincast run 2021-03-10%'"
                    )
                )
                .scalars()
                .all()
            )
        assert states == ["idle"], states
        t = threading.Thread(target=second)
        t.start()
        t.join(30)
    assert len(errors) == 1
    msg = str(errors[0])
    assert "is busy: raincast run 2021-03-10 (pid" in msg and "raincast-test-pw" not in msg
    with store.store_lock(engine, tmp_path, 1, "free again"):
        pass


@pytest.mark.timeout(300)
def test_two_validates_queue_on_the_advisory_lock_and_both_days_land(
    postgres: Postgres, tmp_path: Path
) -> None:
    url = postgres.create_db(f"lock_{secrets.token_hex(3)}")
    settings = _settings(tmp_path, url)
    write_params(tmp_path, merged(LIBRARY_DEFAULTS, {"validate": {"max_invalid_share": 0.5}}))
    days = [DAY, DAY + timedelta(days=1)]
    rows = SyntheticSource(seed=3, stations=STATIONS).fetch(DAY - timedelta(days=1), days[-1])
    for d in days:
        fetch_step.run(settings, _Csv(rows), d)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAINCAST_", "MLFLOW_"))}
    env.update(
        PATH=str(BIN) + os.pathsep + env.get("PATH", ""),
        RAINCAST_PROJECT_DIR=str(tmp_path),
        RAINCAST_HOME=str(tmp_path / "var"),
        RAINCAST_STORE_URL=url,
    )
    engine = store.connect(url)
    with store.store_lock(engine, settings.lock_dir, 5, "test holder"):
        procs = [
            subprocess.Popen(
                [str(BIN / "raincast"), "validate", "--date", d.isoformat()],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for d in days
        ]
        try:
            wait_for(
                "both validates to wait on the advisory lock",
                lambda: waiting_advisory_locks(engine) == 2,
                120,
            )
            assert store.count_rows(engine) == 0
        except BaseException:
            for p in procs:
                p.kill()
            raise
    outs = [p.communicate(timeout=200) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out + err
        assert "Traceback" not in err
    stored = store.read_observations(engine)
    assert sorted(set(stored[schema.DATE])) == [d.isoformat() for d in days]
    assert len(stored) == 2 * len(STATIONS)
    assert store.read_state(engine).revision == 2


def test_two_upserts_of_one_day_at_once_never_collide(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the store lock too: the write transaction locks the table before reading."""
    url = postgres.create_db(f"race_{secrets.token_hex(3)}")
    batch = SyntheticSource(seed=1, stations=STATIONS).fetch(DAY, DAY)
    results, errors = race_two_upserts(url, batch, "csv", monkeypatch)
    assert errors == {}
    assert results["first"].inserted == len(batch)
    assert (results["second"].inserted, results["second"].unchanged) == (0, len(batch))
