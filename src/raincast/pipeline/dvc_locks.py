"""DVC run-locks left by a killed task container.

DVC records which process holds each output in `.dvc/tmp/rwlock` ({"pid", "cmd"}) and
treats an entry as stale once that PID no longer exists. In a container every command is
PID 1, so the entry of a killed `dvc repro` names a PID that always exists: every later
DVC task (the retry included) would find its outputs "busy" forever. Before a DVC command
starts, no process can hold a lock under its own PID, so entries with that PID are stale by
construction and go; entries of other live processes stay untouched.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

RWLOCK = "rwlock"


def drop_stale_own_pid_locks(dvc_tmp: Path, pid: int | None = None) -> int:
    """Remove the rwlock entries recorded under ``pid`` (default: this process's PID,
    which is about to become the DVC process); returns how many were removed."""
    pid = os.getpid() if pid is None else pid
    path = dvc_tmp / RWLOCK
    if not path.exists():
        return 0
    from dvc.lock import make_lock  # DVC's own guard of the rwlock file

    with make_lock(str(dvc_tmp / f"{RWLOCK}.lock"), tmp_dir=str(dvc_tmp)):
        lock = json.loads(path.read_text() or "{}")
        removed = 0
        writes = lock.get("write", {})
        for out, info in list(writes.items()):
            if info.get("pid") == pid:
                del writes[out]
                removed += 1
        reads = lock.get("read", {})
        for out, infos in list(reads.items()):
            keep = [info for info in infos if info.get("pid") != pid]
            removed += len(infos) - len(keep)
            if keep:
                reads[out] = keep
            else:
                del reads[out]
        if removed:
            lock = {k: v for k, v in lock.items() if v}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(lock))
            tmp.replace(path)
            log.warning(
                "removed %d stale DVC run-lock entries of PID %d from %s", removed, pid, path
            )
    return removed
