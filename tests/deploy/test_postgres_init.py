"""deploy/postgres-init.sh + .sql against a real, throw-away PostgreSQL cluster: the roles
and databases of the compose stack, each role confined to its own database."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, free_port

psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 (the postgres extra) not installed")

#: Like the postgres image: trust on the local socket (the init script), passwords over TCP.
AUTH = ("--auth-local=trust", "--auth-host=scram-sha-256")
PASSWORDS = {
    "MLFLOW_DB_PASSWORD": "mlflow-pw-1",
    "AIRFLOW_DB_PASSWORD": "airflow-pw-1",
    "RAINCAST_DB_PASSWORD": "raincast-pw-1",
    "RAINCAST_READER_DB_PASSWORD": "reader-pw-1",
    "POSTGRES_EXPORTER_PASSWORD": "exporter-pw-1",
}


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        pytest.skip(f"PostgreSQL server binaries not installed (`{name}`)")
    return found[-1]


def as_server_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the `postgres` user when we are root."""
    if os.geteuid() != 0:
        return cmd
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no `postgres` user to run the server")
    return ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """A fresh cluster: local socket trusted, TCP with passwords (like the container)."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    # Not under pytest's tmp tree: its folders are private to us, the server user can't enter.
    root = Path(tempfile.mkdtemp(prefix="raincast-pg-"))
    root.chmod(0o777)
    data, port = root / "data", free_port()
    try:
        yield from _run_cluster(initdb, pg_ctl, root, data, port)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_cluster(
    initdb: str, pg_ctl: str, root: Path, data: Path, port: int
) -> Iterator[dict[str, str]]:
    subprocess.run(
        as_server_user([initdb, "-D", str(data), "-U", "postgres", "--no-sync", *AUTH]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(  # pg_ctl start waits until the server accepts connections
        as_server_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "start"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield {"PGHOST": str(root), "PGPORT": str(port)}
    finally:
        subprocess.run(
            as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            timeout=60,
        )


def run_init(cluster: dict[str, str], **overrides: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **cluster,
        **PASSWORDS,
        "RAINCAST_INIT_SQL": str(REPO / "deploy" / "postgres-init.sql"),
        **overrides,
    }
    return subprocess.run(
        ["bash", str(REPO / "deploy" / "postgres-init.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def connect(cluster: dict[str, str], user: str, password: str, db: str):  # type: ignore[no-untyped-def]
    conn = psycopg2.connect(
        host="127.0.0.1", port=cluster["PGPORT"], user=user, password=password, dbname=db
    )
    conn.autocommit = True
    return conn


@pytest.fixture(scope="module")
def initialised(cluster: dict[str, str]) -> dict[str, str]:
    first = run_init(cluster)
    assert first.returncode == 0, first.stderr
    again = run_init(cluster, RAINCAST_DB_PASSWORD="raincast-pw-2")  # rerun = rotation
    assert again.returncode == 0, again.stderr
    return cluster


def test_each_component_owns_its_database(initialised: dict[str, str]) -> None:
    for user, db, password in (
        ("mlflow", "mlflow", PASSWORDS["MLFLOW_DB_PASSWORD"]),
        ("airflow", "airflow", PASSWORDS["AIRFLOW_DB_PASSWORD"]),
        ("raincast", "raincast", "raincast-pw-2"),
    ):
        with connect(initialised, user, password, db) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS probe (id int)")
            cur.execute("INSERT INTO probe VALUES (1)")


def test_roles_cannot_enter_other_databases(initialised: dict[str, str]) -> None:
    with pytest.raises(psycopg2.OperationalError, match="permission denied"):
        connect(initialised, "mlflow", PASSWORDS["MLFLOW_DB_PASSWORD"], "raincast")
    with pytest.raises(psycopg2.OperationalError, match="permission denied"):
        connect(initialised, "raincast_reader", PASSWORDS["RAINCAST_READER_DB_PASSWORD"], "airflow")


def test_rerun_rotates_the_password(initialised: dict[str, str]) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        connect(initialised, "raincast", PASSWORDS["RAINCAST_DB_PASSWORD"], "raincast")


def test_the_ui_role_reads_the_raw_store_and_writes_nothing(initialised: dict[str, str]) -> None:
    with (
        connect(initialised, "raincast", "raincast-pw-2", "raincast") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("CREATE TABLE IF NOT EXISTS later_table (x int)")  # created after init
        cur.execute("INSERT INTO later_table VALUES (42)")
    reader = connect(
        initialised, "raincast_reader", PASSWORDS["RAINCAST_READER_DB_PASSWORD"], "raincast"
    )
    with reader, reader.cursor() as cur:
        cur.execute("SELECT x FROM later_table")
        assert cur.fetchall() == [(42,)]
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("INSERT INTO later_table VALUES (1)")


def test_the_exporter_sees_statistics_only(initialised: dict[str, str]) -> None:
    password = PASSWORDS["POSTGRES_EXPORTER_PASSWORD"]
    with (
        connect(initialised, "postgres_exporter", password, "postgres") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT pg_has_role('pg_monitor', 'member')")
        assert cur.fetchone() == (True,)
        cur.execute("SELECT count(*) FROM pg_stat_database")
        assert cur.fetchone()[0] > 0  # type: ignore[index]


def test_a_missing_password_stops_the_init(cluster: dict[str, str]) -> None:
    proc = run_init(cluster, AIRFLOW_DB_PASSWORD="")
    assert proc.returncode != 0
    assert "AIRFLOW_DB_PASSWORD is not set" in proc.stderr


def test_compose_mounts_the_script_where_the_image_runs_it() -> None:
    compose = (REPO / "docker-compose.yml").read_text()
    assert "./deploy/postgres-init.sh:/docker-entrypoint-initdb.d/10-raincast.sh:ro" in compose
    assert "./deploy/postgres-init.sql:/etc/raincast/postgres-init.sql:ro" in compose
    script = (REPO / "deploy" / "postgres-init.sh").read_text()
    assert "/etc/raincast/postgres-init.sql" in script
    assert Path(REPO / "deploy" / "postgres-init.sh").stat().st_mode & 0o111, "executable"
