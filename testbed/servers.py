"""Real servers on 127.0.0.1: free ports, the `bentoml serve` / `mlflow server` commands,
starting them logged in their own process group, stopping that group, waiting for them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    what: str, probe: Callable[[], bool], timeout: float, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except (urllib.error.URLError, ConnectionError, OSError) as err:
            last = err
        time.sleep(0.5)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what} ({last})\n{tail}")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


BIN = Path(sys.executable).parent


def api_command(port: int) -> list[str]:
    """`bentoml serve` of the raincast API on 127.0.0.1:``port``, with a BentoML home of
    its own: `bentoml serve` empties ``$BENTOML_HOME/prometheus_multiproc_dir`` when it
    starts, which wipes the metrics of any other server sharing that home (what
    `raincast serve` avoids the same way)."""
    home = Path(tempfile.gettempdir()) / f"raincast-bentoml-{port}"
    return ["env", f"BENTOML_HOME={home}", str(BIN / "bentoml"), "serve",
            "raincast.serving.service:RainService",
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


def mlflow_server_command(backend_uri: str, port: int) -> list[str]:
    """`mlflow server` on 127.0.0.1:``port`` over ``backend_uri`` (one worker)."""
    return [str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip


def start_logged(
    cmd: list[str], env: dict[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (so its whole group can be stopped), output appended
    to ``log`` (a restart on the same log keeps the earlier run's lines)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the process group, SIGKILL after ``timeout`` s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def start_mlflow_server(
    backend_uri: str, env: dict[str, str], work: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """A real `mlflow server` over ``backend_uri`` on a free port, once /health answers."""
    port = free_port()
    log = work / "mlflow-server.log"
    proc = start_logged(mlflow_server_command(backend_uri, port), env, work, log)
    wait_until(
        "mlflow server", lambda: http_status(f"http://127.0.0.1:{port}/health") == 200, 120, log
    )
    return proc, port
