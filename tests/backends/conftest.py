"""Real backends on loopback: PostgreSQL 15, an S3 endpoint (moto) and an MLflow tracking
server on PostgreSQL with its artifacts in S3. Free ports, temp dirs, stopped by pid.

Session scope: one of each for the whole package. Tests isolate themselves with a fresh
database (``Stack.new_db``) and their own registered-model name (``RAINCAST_MODEL_NAME``).
A test that stops the MLflow server restarts it (same port, same backend) before it ends.
The MLflow server reaches S3 through a relay (``MlflowServer.s3_relay``) that a test can
cut to make the artifact store unreachable without losing moto's in-memory buckets.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pytest
import yaml

from tests.backends.tcp_proxy import TcpProxy
from tests.helpers import free_port, http_status, start_logged, stop_group, wait_until

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
DVC = str(BIN / "dvc")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER, PG_PASSWORD = "raincast", "raincast-test-pw"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BUCKETS = ("mlflow", "dvc")


def clean_env(work: Path | None = None) -> dict[str, str]:
    """The parent's environment without raincast/MLflow/AWS settings, this venv first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAINCAST_", "MLFLOW_", "AWS_", "DVC_"))
    }
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    if work is not None:
        env.update(RAINCAST_PROJECT_DIR=str(work), RAINCAST_HOME=str(work / "var"))
    return env


# --- PostgreSQL --------------------------------------------------------------------------


@dataclass
class Postgres:
    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes]

    def url(self, db: str, driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.port}/{db}"

    def admin(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres"
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create_db(self, name: str) -> str:
        self.admin(f'CREATE DATABASE "{name}" OWNER {PG_USER}')
        return self.url(name)


def _runuser(*cmd: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if not (PG_BIN / "postgres").exists() or shutil.which("runuser") is None:
        pytest.skip(f"PostgreSQL 15 binaries not found in {PG_BIN} (or no runuser)")
    if os.geteuid() != 0:
        pytest.skip("starting PostgreSQL as the postgres user needs root (runuser)")
    root = Path(tempfile.mkdtemp(prefix="raincast-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    shutil.chown(root, "postgres", "postgres")
    shutil.chown(sock, "postgres", "postgres")
    log = root / "postgres.log"
    subprocess.run(
        _runuser(
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    # Run `postgres` itself (not pg_ctl) so the Popen pid is the postmaster's.
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _runuser(
                str(PG_BIN / "postgres"),
                "-D",
                str(data),
                "-c",
                "listen_addresses=127.0.0.1",
                "-p",
                str(port),
                "-k",
                str(sock),
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pg = Postgres(port, data, proc)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"postgres exited: {log.read_text()[-2000:]}")
            r = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
                timeout=10,
            )
            return r.returncode == 0

        wait_until("postgres", up, 60, log)
        pg.admin(f"CREATE ROLE {PG_USER} LOGIN PASSWORD '{PG_PASSWORD}'")
        yield pg
    finally:
        # SIGINT = "fast" shutdown of the postmaster; runuser forwards it.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


# --- S3 (moto) -----------------------------------------------------------------------------


@dataclass
class S3:
    endpoint: str

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_ENV["AWS_DEFAULT_REGION"],
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out: list[str] = []
        pages = self.client().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.skip("moto[server] is not installed: no S3 endpoint to test against")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        s3 = S3(endpoint)
        for bucket in BUCKETS:
            s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()


# --- MLflow tracking server --------------------------------------------------------------


@dataclass
class MlflowServer:
    backend: str
    s3: S3
    root: Path
    #: The server's way to S3: cut it to make the artifact store unreachable.
    s3_relay: TcpProxy
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "mlflow-server.log"

    def start(self, timeout: float = 180) -> None:
        env = clean_env()
        env.update(S3_ENV, MLFLOW_S3_ENDPOINT_URL=self.s3_relay.url)
        self.proc = start_logged(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                self.backend,
                "--artifacts-destination",
                "s3://mlflow/artifacts",
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            env,
            self.root,
            self.log,
        )
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited: {self.log.read_text()[-3000:]}")
            return http_status(self.url + "/health") == 200

        wait_until("mlflow server", up, timeout, self.log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="session")
def mlflow_server(postgres: Postgres, s3: S3) -> Iterator[MlflowServer]:
    if not (BIN / "mlflow").exists():
        pytest.skip(f"no mlflow executable in {BIN}")
    root = Path(tempfile.mkdtemp(prefix="raincast-mlflow-"))
    relay = TcpProxy(s3.port)
    relay.up()
    server = MlflowServer(postgres.create_db("mlflow"), s3, root, relay)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        relay.down()
        shutil.rmtree(root, ignore_errors=True)


# --- everything together -------------------------------------------------------------------


@dataclass
class Stack:
    postgres: Postgres
    s3: S3
    mlflow: MlflowServer

    def new_db(self, prefix: str) -> str:
        """A fresh, empty store database; returns its SQLAlchemy URL."""
        return self.postgres.create_db(f"{prefix}_{secrets.token_hex(4)}")

    def env(self, work: Path, store_url: str, model_name: str) -> dict[str, str]:
        """Environment of a `raincast` process in ``work`` pointed at these backends."""
        env = clean_env(work)
        env.update(
            S3_ENV,
            MLFLOW_S3_ENDPOINT_URL=self.s3.endpoint,
            RAINCAST_STORE_URL=store_url,
            RAINCAST_MLFLOW_TRACKING_URI=self.mlflow.url,
            RAINCAST_MODEL_NAME=model_name,
            # An unreachable registry must fail a command in seconds, not minutes.
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
            MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
            MLFLOW_HTTP_REQUEST_TIMEOUT="20",
        )
        return env


@pytest.fixture(scope="session")
def stack(postgres: Postgres, s3: S3, mlflow_server: MlflowServer) -> Iterator[Stack]:
    yield Stack(postgres, s3, mlflow_server)
    if not mlflow_server.running:  # a fault test failed before its restart
        mlflow_server.start()


@pytest.fixture
def registry_up(stack: Stack) -> Iterator[Stack]:
    """The stack, with the MLflow server (and its way to S3) guaranteed up before and after
    the test."""
    _restore(stack)
    yield stack
    _restore(stack)


def _restore(stack: Stack) -> None:
    stack.mlflow.s3_relay.up()
    if not stack.mlflow.running:
        stack.mlflow.start()


def run_raincast(
    work: Path, env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "raincast"), *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(what: str, probe: object, timeout: float) -> None:
    """Poll ``probe()`` until true (any exception counts as not yet)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if probe():  # type: ignore[operator]
                return
        except Exception as err:
            last = err
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} ({last})")


# --- a project for `raincast run` ----------------------------------------------------------

#: Stations and last day of the replay file of ``make_project``.
STATIONS = ["Sydney", "Perth", "Darwin", "Hobart"]
LAST = date(2016, 12, 31)


def make_project(work: Path, s3_endpoint: str, dvc_prefix: str) -> Path:
    """The repo's dvc.yaml, params (small model) and code, a new DVC repo with an S3 remote,
    and a replay file from the seeded generator."""
    from raincast.sources.synthetic import SyntheticSource

    shutil.copy(REPO / "dvc.yaml", work)
    shutil.copytree(REPO / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["xgb"].update(n_estimators=60, learning_rate=0.2, max_depth=4, n_jobs=1)
    params["train"]["early_stopping_rounds"] = 10
    params["split"].update(test_days=120, validation_days=120)
    params["drift"]["reference_rows"] = 2000
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    run = {"cwd": work, "check": True, "timeout": 60}
    subprocess.run([DVC, "init", "--no-scm", "-q"], **run)  # type: ignore[call-overload]
    subprocess.run([DVC, "remote", "add", "-d", "s3", f"s3://dvc/{dvc_prefix}"], **run)  # type: ignore[call-overload]
    subprocess.run([DVC, "remote", "modify", "s3", "endpointurl", s3_endpoint], **run)  # type: ignore[call-overload]
    rows = SyntheticSource(seed=7, stations=STATIONS).fetch(date(2015, 1, 1), LAST)
    rows.to_csv(work / "replay.csv", index=False, na_rep="NA")
    return work
