"""Faults on production backends: racing promotions, a dirty batch, the registry going
away under the API and under training, and SIGTERM under load. Each test is bounded."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from testbed.params_file import LIBRARY_DEFAULTS, merged, write_params

from raincast import catalog, schema
from raincast.data import store
from raincast.models.compare import PairedRows
from raincast.models.registry import gate_decision, predict_version, score_predictions
from raincast.params import PromoteParams
from raincast.serving.auth import UserStore
from raincast.serving.model import PROBE_ROW
from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource
from raincast.steps import promote as promote_step
from tests.backends.conftest import (
    BIN,
    Stack,
    run_raincast,
    wait_for,
)
from tests.helpers import (
    free_port,
    http_status,
    start_logged,
    stop_group,
    train_small_model,
    waiting_advisory_locks,
)

pytestmark = pytest.mark.slow

STATIONS = ("Sydney", "Perth", "Darwin", "Hobart")
PASSWORD = "correct-horse-battery"
SMALL_TRAIN = {
    "train": {
        "seed": 3,
        "early_stopping_rounds": 5,
        "xgb": {"n_estimators": 20, "max_depth": 3, "n_jobs": 1},
    }
}


def _settings(work: Path, url: str, stack: Stack, model: str) -> Settings:
    return Settings(
        project_dir=work,
        home=work / "var",
        store_url=url,
        mlflow_tracking_uri=stack.mlflow.url,
        model_name=model,
    )


def _client(stack: Stack) -> MlflowClient:
    return MlflowClient(tracking_uri=stack.mlflow.url, registry_uri=stack.mlflow.url)


def _versions(stack: Stack, model: str) -> list[str]:
    found = _client(stack).search_model_versions(f"name='{model}'")
    return sorted((str(v.version) for v in found), key=int)


def _champion(stack: Stack, model: str) -> str:
    return str(_client(stack).get_model_version_by_alias(model, "champion").version)


def _trained_project(work: Path, stack: Stack, model: str, **train: Any) -> Settings:
    """A project whose registry (on the server) holds a small champion of ``model``."""
    settings = _settings(work, stack.new_db("faults"), stack, model)
    write_params(work, merged(LIBRARY_DEFAULTS, SMALL_TRAIN))
    train_small_model(settings, STATIONS, **train)
    return settings


# --- racing promotions -----------------------------------------------------------------


@pytest.mark.timeout(600)
def test_racing_promotions_are_serialised_and_both_recorded(
    registry_up: Stack, tmp_path: Path
) -> None:
    stack, model = registry_up, "rain-race"
    settings = _settings(tmp_path, stack.new_db("race"), stack, model)
    # The race, not the rule, is under test: on these 712 test rows the strong model's F1 gain
    # over the stump (+0.02) is not significant at 95%, so the point-estimate rule keeps the
    # race's outcome known (the strong model ends as champion, whichever order).
    point_rule = {"promote": {"significance": "none"}}
    write_params(tmp_path, merged(merged(LIBRARY_DEFAULTS, SMALL_TRAIN), point_rule))
    # Two candidates on the same data: a stump-sized model and a real one; no champion yet.
    weak = train_small_model(settings, STATIONS, n_estimators=1, champion=False)
    strong = train_small_model(settings, STATIONS, n_estimators=40, champion=False)
    split = tmp_path / catalog.TRAIN.path.parent
    shutil.copy(split / "validation.parquet", split / "test.parquet")
    env = stack.env(tmp_path, settings.raw_store_url, model)
    engine = store.connect(settings.raw_store_url)

    # Hold the registry lock so that both promoters are provably queued behind it.
    with store.exclusive_lock(engine, promote_step.LOCK_NAME, settings.lock_dir):
        procs = [
            subprocess.Popen(
                [str(BIN / "raincast"), "promote", "--version", v],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for v in (weak, strong)
        ]
        try:
            wait_for(
                "both promoters to wait on the lock",
                lambda: waiting_advisory_locks(engine) == 2,
                180,
            )
            assert store.read_history(engine, model).empty  # nobody decided under our lock
        except BaseException:
            for p in procs:
                p.kill()
            raise
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out + err[-3000:]

    hist = store.read_history(engine, model)
    assert sorted(hist["candidate_version"]) == sorted([weak, strong])
    first, second = hist.iloc[0], hist.iloc[1]
    assert first["decision"] == "promoted" and pd.isna(first["champion_before"])
    # Serialised: the second decision saw the first one's outcome as its champion.
    assert second["champion_before"] == first["champion_after"]
    test = pd.read_parquet(split / "test.parquet")
    rule = PromoteParams(significance="none")
    rows = {v: predict_version(model, v, test) for v in (weak, strong)}
    scores = {v: score_predictions(v, rows[v]) for v in (weak, strong)}
    assert scores[strong].f1 > scores[weak].f1 + rule.f1_margin, scores  # the fixture is sound
    cand, champ = second["candidate_version"], first["candidate_version"]
    expected = gate_decision(scores[cand], scores[champ], rule, PairedRows(rows[cand], rows[champ]))
    assert second["decision"] == expected.label
    assert _champion(stack, model) == strong


def test_distinct_lock_names_do_not_block_each_other(postgres) -> None:  # type: ignore[no-untyped-def]
    engine = store.connect(postgres.create_db(f"locks_{secrets.token_hex(3)}"))
    done = threading.Event()

    def other() -> None:
        with store.exclusive_lock(engine, "raincast-predictions", Path("/nonexistent"), 5):
            done.set()

    with store.exclusive_lock(engine, promote_step.LOCK_NAME, Path("/nonexistent"), 5):
        t = threading.Thread(target=other, daemon=True)
        t.start()
        t.join(timeout=10)
        assert done.is_set(), "'raincast-predictions' waited on 'raincast-registry'"


# --- a dirty batch ------------------------------------------------------------------------

DAY = date(2020, 3, 10)


def _dirty_csv(path: Path) -> dict[str, int]:
    """3 days x 49 stations of valid rows plus ~15 % invalid rows of every kind."""
    stations = list(schema.station_names())
    good = SyntheticSource(seed=11, stations=stations).fetch(DAY - timedelta(days=2), DAY)
    good = good.reset_index(drop=True)
    bad = []
    pick = good.sample(n=30, random_state=0).reset_index(drop=True)
    kinds = {"range": 6, "station": 5, "compass": 5, "date": 4, "duplicate": 5}
    i = 0
    for _ in range(kinds["range"]):  # out-of-range numbers, on rows moved to a new key
        r = pick.loc[i].copy()
        r["Humidity3pm"] = 180.0
        bad.append(("range", r))
        i += 1
    for k in range(kinds["station"]):
        r = pick.loc[i].copy()
        r["Location"] = f"Atlantis{k}"
        bad.append(("station", r))
        i += 1
    for _ in range(kinds["compass"]):
        r = pick.loc[i].copy()
        r["WindGustDir"] = "XYZ"
        bad.append(("compass", r))
        i += 1
    for k in range(kinds["date"]):
        r = pick.loc[i].copy()
        r["Date"] = f"2020-02-3{k}"  # no such day
        bad.append(("date", r))
        i += 1
    for _ in range(kinds["duplicate"]):  # exact repeats of valid rows
        bad.append(("duplicate", pick.loc[i].copy()))
        i += 1
    # The range/compass rows keep their key: drop the valid original so they are not also
    # conflicting duplicates (one kind of fault per row keeps the counts exact).
    changed = {(r["Date"], r["Location"]) for kind, r in bad if kind in ("range", "compass")}
    keep = ~pd.Series(list(zip(good["Date"], good["Location"], strict=True))).isin(changed)
    good = good[keep.to_numpy()]
    frame = pd.concat([good, pd.DataFrame([r for _, r in bad])], ignore_index=True)
    frame.to_csv(path, index=False, na_rep="NA")
    counts = Counter(kind for kind, _ in bad)
    counts["good"] = len(good)
    return dict(counts)


def _validation_runs(url: str) -> pd.DataFrame:
    with store.connect(url).connect() as conn:
        return pd.DataFrame(conn.execute(sa.select(store.validation_runs)).mappings().all())


@pytest.mark.timeout(300)
def test_dirty_batch_fails_above_the_threshold_and_loads_below_it(postgres, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    counts = _dirty_csv(tmp_path / "dirty.csv")
    n_bad = sum(v for k, v in counts.items() if k != "good")
    assert 0.13 < n_bad / (n_bad + counts["good"]) < 0.17, counts
    url = postgres.create_db(f"dirty_{secrets.token_hex(3)}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAINCAST_", "MLFLOW_"))}
    env.update(
        PATH=str(BIN) + os.pathsep + env.get("PATH", ""),
        RAINCAST_PROJECT_DIR=str(tmp_path),
        RAINCAST_HOME=str(tmp_path / "var"),
        RAINCAST_STORE_URL=url,
    )
    write_params(tmp_path, merged(LIBRARY_DEFAULTS, {"validate": {"max_invalid_share": 0.05}}))
    day, start = DAY.isoformat(), (DAY - timedelta(days=2)).isoformat()
    fetched = run_raincast(
        tmp_path, env, "fetch", "--source", "csv:dirty.csv", "--date", day, "--start", start,
        timeout=120,
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    failed = run_raincast(tmp_path, env, "validate", "--date", day, timeout=120)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    msg = failed.stderr
    assert "max_invalid_share" in msg and "worst checks" in msg, msg
    n_in = n_bad + counts["good"]
    assert f"{n_bad}/{n_in} rows invalid" in msg, msg
    assert f"range:Humidity3pm ({counts['range']} rows)" in msg, msg
    engine = store.connect(url)
    assert store.count_rows(engine) == 0
    q1 = store.count_rows(engine, store.quarantine)
    assert q1 > 0
    runs = _validation_runs(url)
    assert len(runs) == 1 and runs.loc[0, "status"] == "failed"
    r = runs.loc[0]
    assert r["rows_in"] == r["accepted"] + r["quarantined"] and r["quarantined"] == q1
    assert r["inserted"] == 0

    write_params(tmp_path, merged(LIBRARY_DEFAULTS, {"validate": {"max_invalid_share": 0.2}}))
    ok = run_raincast(tmp_path, env, "validate", "--date", day, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    runs = _validation_runs(url)
    assert len(runs) == 1 and runs.loc[0, "status"] == "ok"  # same run id: replaced
    r = runs.loc[0]
    assert r["rows_in"] == r["accepted"] + r["quarantined"]
    assert store.count_rows(engine) == r["accepted"] == r["inserted"]
    assert store.count_rows(engine, store.quarantine) == r["quarantined"] == q1
    checks = pd.read_sql(sa.select(store.quarantine.c.check), engine)["check"]
    found = {c.split(":")[0] for cs in checks for c in cs.split(",")}
    # Impossible dates keep their raw value and are type errors (no longer "missing").
    assert {"range", "station", "category", "duplicate", "type"} <= found, found
    expected = n_bad
    assert r["quarantined"] == expected
    assert r["accepted"] == counts["good"]


def test_unparseable_dates_reach_the_quarantine(tmp_path: Path) -> None:
    from raincast.sources.csvfile import CsvSource

    counts = _dirty_csv(tmp_path / "dirty.csv")
    rows = CsvSource(tmp_path / "dirty.csv").fetch(DAY - timedelta(days=2), DAY)
    total = sum(counts.values())
    assert len(rows) == total  # the bad-date rows are in the newest batch, to be quarantined
    impossible = rows["Date"].str.startswith("2020-02-3").fillna(False)
    assert int(impossible.sum()) == counts["date"]  # kept as sent, for the quarantine
    earlier = CsvSource(tmp_path / "dirty.csv").fetch(
        DAY - timedelta(days=2), DAY - timedelta(days=1)
    )
    assert not earlier["Date"].str.startswith("2020-02-3").any()  # ...and only there


# --- the registry goes away ----------------------------------------------------------------


@dataclass
class ApiProc:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def predict(self, token: str, timeout: float = 30) -> int:
        body = json.dumps({"rows": [PROBE_ROW]}).encode()
        req = urllib.request.Request(
            self.url + "/predict",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    def token(self) -> str:
        req = urllib.request.Request(
            self.url + "/auth/token",
            data=json.dumps({"username": "alice", "password": PASSWORD}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return str(json.loads(resp.read())["access_token"])


@dataclass
class Served:
    work: Path
    env: dict[str, str]
    settings: Settings


@pytest.fixture(scope="module")
def served(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("served")
    if not stack.mlflow.running:
        stack.mlflow.start()
    settings = _trained_project(work, stack, "rain-served", n_estimators=20)
    UserStore(work / "users.json").add("alice", PASSWORD, "user")
    env = stack.env(work, settings.raw_store_url, "rain-served")
    env.update(
        RAINCAST_USERS_FILE=str(work / "users.json"),
        RAINCAST_JWT_SECRET=secrets.token_urlsafe(48),
        RAINCAST_API_POLL_S="1",
    )
    yield Served(work, env, settings)


def _start_api(served: Served, name: str) -> ApiProc:
    port = free_port()
    log = served.work / f"{name}.log"
    proc = start_logged(
        [
            str(BIN / "bentoml"),
            "serve",
            "raincast.serving.service:RainService",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        served.env,
        served.work,
        log,
    )
    return ApiProc(f"http://127.0.0.1:{port}", proc, log)


def _ready(api: ApiProc) -> bool:
    if api.proc.poll() is not None:
        raise AssertionError(f"API exited: {api.log.read_text()[-3000:]}")
    return http_status(api.url + "/readyz") == 200


@pytest.mark.timeout(600)
def test_api_survives_a_registry_outage_and_a_fresh_api_waits_for_it(
    registry_up: Stack, served: Served
) -> None:
    stack = registry_up
    api = _start_api(served, "api-outage")
    fresh: ApiProc | None = None
    try:
        wait_for("the API", lambda: _ready(api), 180)
        token = api.token()
        assert api.predict(token) == 200
        stack.mlflow.stop()
        # Several poll rounds fail while the API keeps answering with its model.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            assert api.predict(token) == 200
            time.sleep(0.3)
        assert "champion refresh failed" in api.log.read_text()

        fresh = _start_api(served, "api-fresh")
        wait_for(
            "the fresh API to try the registry",
            lambda: (
                "champion refresh failed" in fresh.log.read_text()
                and http_status(fresh.url + "/livez") == 200
            ),
            180,
        )
        for _ in range(3):
            assert http_status(fresh.url + "/readyz") != 200
            time.sleep(1)
        assert api.predict(token) == 200

        stack.mlflow.start()  # same port, same PostgreSQL backend, same S3 bucket
        wait_for("the fresh API to load the champion by itself", lambda: _ready(fresh), 120)
        assert fresh.predict(fresh.token()) == 200
        assert api.predict(token) == 200
    finally:
        stop_group(api.proc)
        if fresh is not None:
            stop_group(fresh.proc)


@pytest.mark.timeout(600)
def test_train_fails_clearly_while_the_registry_is_down(registry_up: Stack, served: Served) -> None:
    stack, work, env = registry_up, served.work, served.env
    model = served.settings.model_name
    before, champion = _versions(stack, model), _champion(stack, model)
    stack.mlflow.stop()
    try:
        down = run_raincast(work, env, "train", timeout=300)
    finally:
        stack.mlflow.start()
    text = (down.stdout + down.stderr).lower()
    assert down.returncode != 0, text[-3000:]
    assert "mlflow" in text and "connect" in text, text[-3000:]
    assert _versions(stack, model) == before  # nothing half-registered

    up = run_raincast(work, env, "train", timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr[-3000:]
    after = _versions(stack, model)
    assert len(after) == len(before) + 1
    assert _champion(stack, model) == champion  # a new version is a candidate, not champion


# --- SIGTERM under load ----------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_sigterm_under_load_finishes_or_refuses_cleanly(registry_up: Stack, served: Served) -> None:
    api = _start_api(served, "api-sigterm")
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    try:
        wait_for("the API", lambda: _ready(api), 180)
        token = api.token()

        def client() -> None:
            while not stop.is_set():
                try:
                    status = api.predict(token, timeout=30)
                    kind = str(status)
                except (urllib.error.URLError, ConnectionError) as err:
                    reason = getattr(err, "reason", err)
                    kind = "timeout" if isinstance(reason, TimeoutError) else "conn-error"
                except TimeoutError:
                    kind = "timeout"
                with lock:
                    outcomes[kind] += 1
                if kind == "conn-error" and api.proc.poll() is not None:
                    return

        threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(3)
        with lock:
            assert outcomes["200"] > 0, dict(outcomes)
        t0 = time.monotonic()
        os.kill(api.proc.pid, signal.SIGTERM)
        api.proc.wait(timeout=30)
        exited_after = time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join(timeout=35)
        assert not any(t.is_alive() for t in threads), "a client hung after the API exited"
    finally:
        stop.set()
        stop_group(api.proc)
    assert exited_after < 30
    assert set(outcomes) <= {"200", "503", "conn-error"}, dict(outcomes)
    assert outcomes["200"] > 0
