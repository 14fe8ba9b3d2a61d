"""One full daily cycle (the README's first command): history if needed, fetch, validate,
dvc repro, dvc push, promote."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from raincast.data import store
from raincast.params import Params
from raincast.pipeline import ingest
from raincast.pipeline.promotion import PromotionOutcome, promote
from raincast.settings import Settings
from raincast.sources import Source, SourceUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CycleReport:
    source: str
    logical_date: date
    history_rows: int
    day_rows: int
    promotion: PromotionOutcome
    fell_back: bool


def default_date(source: Source) -> date:
    """File sources default to their last date; live ones to today."""
    last = getattr(source, "last_date", None)
    return last() if callable(last) else date.today()


def _tool_env() -> dict[str, str]:
    # DVC stages call `raincast ...`: make this interpreter's scripts folder win on PATH.
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}


def dvc(project_dir: Path, *args: str) -> str:
    """Run a dvc command in the project and return its output; a failure raises with
    dvc's own message."""
    cmd = [str(Path(sys.executable).parent / "dvc"), *args]
    proc = subprocess.run(cmd, cwd=project_dir, env=_tool_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"`dvc {' '.join(args)}` failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    log.info("dvc %s: %s", " ".join(args), proc.stdout.strip().splitlines()[-1:] or "ok")
    return proc.stdout


def _history_start(source: Source, logical_date: date, params: Params) -> date:
    if hasattr(source, "frame"):  # csv/replay: every row before the logical date
        return date.fromisoformat(str(source.frame["Date"].min()))  # type: ignore[attr-defined]
    days = (
        params.history.openmeteo_days
        if source.name == "openmeteo"
        else params.history.synthetic_days
    )
    return logical_date - timedelta(days=days)


def _ingest(
    settings: Settings,
    params: Params,
    source: Source,
    logical_date: date,
    start: date | None,
    run_id: str,
) -> int:
    fetched = ingest.fetch(settings, source, logical_date, start)
    ingest.validate(settings, params.validate_, logical_date, run_id=run_id)
    return fetched.rows


def run_cycle(
    settings: Settings,
    params: Params,
    source: Source,
    logical_date: date,
    fallback: Source | None = None,
) -> CycleReport:
    """Bring the store up to ``logical_date`` and retrain/promote. ``fallback`` replaces an
    unreachable source (only `raincast run` passes one; the DAGs never do)."""
    engine = store.connect(settings.raw_store_url)
    fell_back = False
    history_rows = 0
    for attempt in range(2):
        try:
            if store.count_rows(engine) == 0:
                start = _history_start(source, logical_date, params)
                if start < logical_date:
                    history_rows = _ingest(
                        settings,
                        params,
                        source,
                        logical_date - timedelta(days=1),
                        start,
                        run_id=f"history:{source.name}:{start}..{logical_date - timedelta(days=1)}",
                    )
            day_rows = _ingest(
                settings,
                params,
                source,
                logical_date,
                None,
                run_id=f"{source.name}:{logical_date.isoformat()}",
            )
            break
        except SourceUnavailableError as err:
            if fallback is None or attempt:
                raise
            log.warning("!" * 72)
            log.warning("SOURCE %s UNREACHABLE (%s)", source.name.upper(), err)
            log.warning("FALLING BACK TO THE SYNTHETIC SOURCE: this run's data is NOT real weather")
            log.warning("!" * 72)
            source, fell_back = fallback, True
    # A push is skipped only after a no-op repro and when the last push succeeded.
    pending = settings.state_dir / "dvc-push-pending"
    repro = dvc(settings.project_dir, "repro")
    if "up to date" not in repro.lower() or pending.exists():
        pending.parent.mkdir(parents=True, exist_ok=True)
        pending.touch()
        dvc(settings.project_dir, "push")
        pending.unlink()
    outcome = promote(settings, params.promote, drift_mode=params.drift.mode)
    return CycleReport(source.name, logical_date, history_rows, day_rows, outcome, fell_back)
