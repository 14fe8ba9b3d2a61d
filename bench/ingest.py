"""Data-side timings (`python -m bench.run ingest`): how fast `make run` gives up on an
unresolvable Open-Meteo host and falls back, how long a hanging server holds the client,
and the validate throughput on the 145k-row Kaggle file.

Each number is measured in a fresh subprocess with the default settings (no RAINCAST_*
variables), next to the host's load average: the machine is shared, read times as +-50 %.

``BENCH_INGEST_BASELINE=<git ref>`` also measures that commit's code (``git archive`` of its
``src`` into a temporary folder, first on PYTHONPATH), interleaved with the working tree's,
and writes both as ``before`` / ``after``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BIN = Path(sys.executable).parent
UNRESOLVABLE = "http://raincast-bench.invalid"  # RFC 6761: .invalid never resolves


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


#: Folder holding the `raincast` package under test (None: the installed working tree).
_SRC: Path | None = None


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAINCAST_")}
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (_SRC, REPO) if p is not None)
    return {**env, **extra}


def _project(base: Path) -> Path:
    work = base / "project"
    work.mkdir(parents=True)
    (work / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (work / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    return work


def run_fallback(tmp: Path) -> dict[str, Any]:
    """`raincast run` (what `make run` calls) on an empty store with Open-Meteo's host
    unresolvable: seconds from process start until it logs the synthetic fallback. The
    process is stopped right after (the rest of the cycle is not the point here)."""
    work = _project(tmp / "fallback")
    env = _env(
        RAINCAST_OPENMETEO_URL=f"{UNRESOLVABLE}/v1/forecast",
        RAINCAST_OPENMETEO_ARCHIVE_URL=f"{UNRESOLVABLE}/v1/archive",
    )
    load = _load()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from raincast.cli import app; app()", "run"],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen, lines = None, []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if "FALLING BACK" in line:
            seen = time.perf_counter() - t0
            break
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    return {
        "seconds_to_fallback": seen,
        "load_before": load,
        "note": None if seen else "no fallback line: " + "".join(lines[-5:]),
    }


def fetch_dns_failure(tmp: Path) -> dict[str, Any]:
    """`raincast fetch --source openmeteo` with the host unresolvable: wall time to exit 1,
    and whether the process imported scikit-learn or MLflow on the way."""
    work = _project(tmp / "fetch")
    env = _env(
        RAINCAST_OPENMETEO_URL=f"{UNRESOLVABLE}/v1/forecast",
        RAINCAST_OPENMETEO_ARCHIVE_URL=f"{UNRESOLVABLE}/v1/archive",
    )
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['raincast', 'fetch', '--source', 'openmeteo', '--date', '2024-06-01']\n"
        "try:\n"
        "    from raincast.cli import app; app()\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "print('HEAVY', sorted(m for m in ('sklearn', 'mlflow', 'xgboost') if m in sys.modules),"
        " file=sys.stderr)\n"
    )
    load = _load()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    heavy = [ln for ln in proc.stderr.splitlines() if ln.startswith("HEAVY")]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    return {
        "seconds": wall,
        "heavy_modules_imported": heavy[-1].removeprefix("HEAVY ") if heavy else None,
        "message": errors[-1] if errors else proc.stderr.strip().splitlines()[-1:],
        "load_before": load,
    }


@contextmanager
def _silent_server(trickle: bool) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts and then never answers (``trickle``: sends
    a 200 header and one body byte a second, forever)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conns.append(conn)
            if trickle:
                threading.Thread(target=_trickle, args=(conn, stop), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        stop.set()
        t.join(timeout=5)
        for c in conns:
            c.close()
        srv.close()


def _trickle(conn: socket.socket, stop: threading.Event) -> None:
    try:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[")
        while not stop.wait(1.0):
            conn.sendall(b" ")
    except OSError:
        pass


_CLIENT_CODE = """
import sys, time
from datetime import date, timedelta
from raincast.settings import Settings
from raincast.sources.openmeteo import OpenMeteoSource
url, home, days = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = Settings(openmeteo_url=url + '/v1/forecast', openmeteo_archive_url=url + '/v1/archive',
             home=home)
today = date(2024, 6, 30)
t0 = time.perf_counter()
try:
    OpenMeteoSource(s, today=today).fetch(today - timedelta(days=days), today - timedelta(days=1))
    outcome = 'returned'
except Exception as e:
    outcome = type(e).__name__ + ': ' + str(e)[:300]
print(time.perf_counter() - t0)
print(outcome)
"""


def _client_failure(tmp: Path, url: str, days: int, cap_s: float) -> dict[str, Any]:
    """Seconds from the Open-Meteo source's fetch() call to its failure, in a fresh
    process with the default settings (imports done before the clock starts)."""
    load = _load()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CLIENT_CODE, url, str(tmp / "h"), str(days)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=cap_s,
        )
    except subprocess.TimeoutExpired:
        return {"seconds": None, "outcome": f"still waiting after {cap_s} s", "load_before": load}
    lines = proc.stdout.strip().splitlines()
    if len(lines) < 2:
        return {"seconds": None, "outcome": proc.stderr[-500:], "load_before": load}
    return {"seconds": float(lines[0]), "outcome": lines[1], "load_before": load}


def dns_failure(tmp: Path) -> dict[str, Any]:
    """The wait `make run` has before its fallback: the 730-day history fetch it starts
    an empty store with, against an unresolvable host."""
    return _client_failure(tmp, UNRESOLVABLE, 730, 300)


def hanging_server(tmp: Path, trickle: bool, cap_s: float = 420) -> dict[str, Any]:
    """Seconds until the Open-Meteo client gives up on a server that never answers (or
    trickles a byte a second), default settings; ``cap_s`` bounds the measurement."""
    with _silent_server(trickle) as port:
        return _client_failure(tmp, f"http://127.0.0.1:{port}", 1, cap_s)


def validate_throughput(tmp: Path, repeats: int = 3) -> dict[str, Any]:
    """The 145k-row Kaggle file: parse (csv source), `validate_batch`, and the whole
    `raincast validate` of the history load into an empty SQLite store; median of runs."""
    code = r"""
import json, sys, time
from datetime import date
from pathlib import Path
from raincast.params import ValidateParams
from raincast.steps import fetch as fetch_step, validate as validate_step
from raincast.settings import Settings
from raincast.data.validation import validate_batch
work = Path(sys.argv[2])
settings = Settings(project_dir=work, home=work / "var")
t0 = time.perf_counter()
src = fetch_step.make_source("csv:" + sys.argv[1], settings)
first, last = date(2007, 11, 1), src.last_date()
raw = src.fetch(first, last)
parse = time.perf_counter() - t0
t0 = time.perf_counter()
res = validate_batch(raw, first, last)
check = time.perf_counter() - t0
fetch_step.run(settings, src, last, first)
t0 = time.perf_counter()
out = validate_step.run(settings, ValidateParams(max_invalid_share=1.0, max_age_days=10**6), last)
whole = time.perf_counter() - t0
print(json.dumps({"rows": len(raw), "accepted": len(res.accepted),
                  "quarantined": len(res.quarantined), "parse_s": parse,
                  "validate_batch_s": check, "validate_step_s": whole}))
"""
    csv = DATA / "weatherAUS.csv.gz"
    runs = []
    for i in range(repeats):
        load = _load()
        work = tmp / f"validate-{i}"
        work.mkdir(parents=True)
        proc = subprocess.run(
            [sys.executable, "-c", code, str(csv), str(work)],
            env=_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        runs.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "load_before": load})
    med = {
        k: statistics.median(r[k] for r in runs)
        for k in ("parse_s", "validate_batch_s", "validate_step_s")
    }
    rows = runs[0]["rows"]
    return {
        "rows": rows,
        "accepted": runs[0]["accepted"],
        "quarantined": runs[0]["quarantined"],
        "median": med,
        "validate_batch_rows_per_s": rows / med["validate_batch_s"],
        "validate_step_rows_per_s": rows / med["validate_step_s"],
        "runs": runs,
    }


JOBS = {
    "openmeteo_dns": dns_failure,
    "run_fallback_dns": run_fallback,
    "fetch_dns": fetch_dns_failure,
    "hanging_server_silent": lambda t: hanging_server(t, trickle=False),
    "hanging_server_trickle": lambda t: hanging_server(t, trickle=True),
    "validate_145k": validate_throughput,
}


def _measure(names: list[str], tmp: Path, label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        print(f"  ingest bench {name} ({label}) ...", flush=True)
        base = tmp / label / name
        base.mkdir(parents=True)
        out[name] = JOBS[name](base)
        print(json.dumps(out[name], default=float), flush=True)
    return out


def _baseline_src(ref: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", ref, "src"], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def main(only: set[str] | None = None) -> dict[str, Any]:
    global _SRC
    names = [n for n in JOBS if not only or n in only]
    baseline = os.environ.get("BENCH_INGEST_BASELINE")
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not baseline:
            result["after"] = _measure(names, tmp, "after")
        else:
            old_src = _baseline_src(baseline, tmp / "baseline")
            result["baseline_ref"] = baseline
            result["before"], result["after"] = {}, {}
            for name in names:  # interleaved, so both see the same host
                _SRC = old_src
                result["before"].update(_measure([name], tmp, "before"))
                _SRC = None
                result["after"].update(_measure([name], tmp, "after"))
    if "before" in result and "validate_145k" in result["after"]:
        b = result["before"]["validate_145k"]["median"]
        a = result["after"]["validate_145k"]["median"]
        result["validate_change"] = {k: a[k] / b[k] - 1 for k in b}
    result["targets"] = {
        "openmeteo_dns_seconds": 2,
        "run_fallback_dns_seconds": 2,
        "hanging_server_seconds": 60,
        "validate_regression_max": 0.10,
    }
    return result


if __name__ == "__main__":
    print(json.dumps(main(set(sys.argv[1:]) or None), indent=2, default=float))
