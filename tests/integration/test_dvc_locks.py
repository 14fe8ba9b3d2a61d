"""DVC run-locks left by a killed container: with every container command at PID 1, DVC
cannot tell a dead holder from a live one. Found by the stack test: a trainer container
killed mid-`dvc repro` made every later stage "busy" until the run failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from testbed.params_file import LIBRARY_DEFAULTS, write_params

from raincast.pipeline.dvc_locks import drop_stale_own_pid_locks

DVC = str(Path(sys.executable).parent / "dvc")
RAINCAST = str(Path(sys.executable).parent / "raincast")
STAGES = """stages:
  slow:
    cmd: sleep 30 && echo done > out.txt
    outs:
      - out.txt
  quick:
    cmd: echo hi > quick.txt
    outs:
      - quick.txt
"""


def _repo(tmp_path: Path) -> Path:
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(STAGES)
    write_params(tmp_path, LIBRARY_DEFAULTS)
    return tmp_path


def _kill_mid_repro(repo: Path) -> dict:  # type: ignore[type-arg]
    """Start `dvc repro slow`, SIGKILL it while the stage runs; the rwlock it leaves."""
    proc = subprocess.Popen(
        [DVC, "repro", "--single-item", "slow"], cwd=repo, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    rwlock = repo / ".dvc" / "tmp" / "rwlock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "out.txt" not in (
        rwlock.read_text() if rwlock.exists() else ""
    ):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return dict(json.loads(rwlock.read_text()))


def _as_pid(repo: Path, pid: int) -> None:
    """Rewrite the dead holder's PID to ``pid``: what a container sees (always PID 1)."""
    path = repo / ".dvc" / "tmp" / "rwlock"
    text = path.read_text()
    lock = json.loads(text)
    for info in lock.get("write", {}).values():
        info["pid"] = pid
    for infos in lock.get("read", {}).values():
        for info in infos:
            info["pid"] = pid
    path.write_text(json.dumps(lock))


@pytest.mark.slow
def test_a_killed_repro_blocks_dvc_until_its_own_pid_entries_are_dropped(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    left = _kill_mid_repro(repo)
    assert "out.txt" in json.dumps(left)
    _as_pid(repo, 1)  # PID 1 always exists: the container case
    blocked = subprocess.run(
        [DVC, "repro", "--single-item", "quick", "slow"], cwd=repo, capture_output=True, text=True
    )
    assert blocked.returncode != 0 and "is busy" in blocked.stdout + blocked.stderr
    assert drop_stale_own_pid_locks(repo / ".dvc" / "tmp", pid=1) >= 1
    ok = subprocess.run([DVC, "repro", "--single-item", "quick"], cwd=repo, capture_output=True)
    assert ok.returncode == 0, ok.stderr
    assert (repo / "quick.txt").read_text() == "hi\n"


def test_other_processes_entries_stay(tmp_path: Path) -> None:
    tmp = tmp_path / ".dvc" / "tmp"
    tmp.mkdir(parents=True)
    lock = {
        "write": {"a": {"pid": 1, "cmd": "dvc repro"}, "b": {"pid": 4242, "cmd": "dvc push"}},
        "read": {"c": [{"pid": 1, "cmd": "dvc repro"}, {"pid": 4242, "cmd": "dvc push"}]},
    }
    (tmp / "rwlock").write_text(json.dumps(lock))
    assert drop_stale_own_pid_locks(tmp, pid=1) == 2
    assert json.loads((tmp / "rwlock").read_text()) == {
        "write": {"b": {"pid": 4242, "cmd": "dvc push"}},
        "read": {"c": [{"pid": 4242, "cmd": "dvc push"}]},
    }
    assert drop_stale_own_pid_locks(tmp, pid=1) == 0


def test_no_lock_file_is_nothing_to_do(tmp_path: Path) -> None:
    assert drop_stale_own_pid_locks(tmp_path) == 0


def test_raincast_dvc_runs_dvc_with_its_arguments(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    env = {**os.environ, "RAINCAST_PROJECT_DIR": str(repo)}
    out = subprocess.run(
        [RAINCAST, "dvc", "repro", "--single-item", "quick"], cwd=repo, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert (repo / "quick.txt").exists()
    bad = subprocess.run([RAINCAST, "dvc", "repro", "nope"], cwd=repo, env=env, capture_output=True)
    assert bad.returncode != 0  # dvc's own exit code comes back
