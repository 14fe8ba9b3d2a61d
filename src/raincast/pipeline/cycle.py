"""One full daily cycle (the README's first command): history if needed, fetch, validate,
dvc repro, dvc push, promote, replay (the champion's replayed window for Monitor).

The cycle holds the store lock (store.store_lock) from its first read of the store to
the promotion, so a second `raincast run` or a DAG's `validate` waits for it (or is
refused with a clear message) instead of interleaving with it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from raincast.data import store
from raincast.params import Params
from raincast.settings import Settings
from raincast.sources import Source, SourceUnavailableError, default_date, history_start
from raincast.steps import fetch as fetch_step
from raincast.steps import validate as validate_step
from raincast.steps.outcome import PromotionOutcome

if TYPE_CHECKING:
    import sqlalchemy as sa

    from raincast.params import PromoteParams, ReplayParams
    from raincast.pipeline.replay import ReplayReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CycleReport:
    source: str
    logical_date: date
    history_rows: int
    day_rows: int
    promotion: PromotionOutcome
    fell_back: bool
    replay: ReplayReport | None = None
    #: Why no replayed window was written (e.g. no champion); empty when it was.
    replay_skipped: str = ""


__all__ = ["CycleReport", "Progress", "default_date", "dvc", "promote", "replay", "run_cycle"]


def promote(settings: Settings, params: PromoteParams, drift_mode: str) -> PromotionOutcome:
    """The promote step, imported when the cycle gets there: MLflow and
    scikit-learn cost ~3 s of imports that fetch, validate and a fallback need not wait for."""
    from raincast.steps.promote import run as promote_now

    return promote_now(settings, params, drift_mode=drift_mode)


def settled_in_store(
    settings: Settings, params: ReplayParams, engine: sa.Engine
) -> tuple[PromotionOutcome, str] | None:
    """After a `dvc repro` that changed nothing: the promotion decision and the replayed
    window the store already records for the current candidate, or None when either step
    must run (no decision recorded for it, or the replay is missing, of another champion,
    days or windows, or behind the newest labelled day).

    Both steps would find the same in the registry, after importing MLflow and
    scikit-learn (~3-5 s): a no-op rerun reads the store alone. The champion reported is
    the one the store's newest registry decision left; an alias moved outside raincast
    (MLflow UI) is seen by the next cycle that changes something, or by `raincast promote`."""
    from raincast import catalog

    if not catalog.TRAINED.at(settings.project_dir).exists():
        return None
    candidate = str(
        catalog.load_json(settings.project_dir, catalog.TRAINED).get("model_version", "")
    )
    history = store.read_history(engine, settings.model_name)
    promoted = history["action"] == "promote"
    decided = history[promoted & (history["candidate_version"] == candidate)]
    if decided.empty or history["champion_after"].isna().iloc[-1]:
        return None
    champion = str(history["champion_after"].iloc[-1])
    last = store.latest_replay_run(engine, settings.model_name)
    if (
        last is None
        or str(last["model_version"]) != champion
        or last["days"] != params.days
        or last["windows"] != ",".join(map(str, params.windows))
        or store.as_date(last["last_observation_date"]) != store.newest_labelled_date(engine)
    ):
        return None
    row = decided.iloc[-1]
    outcome = PromotionOutcome(
        None,
        None,
        None,
        champion,
        skipped=f"version {candidate} was already {row['decision']} "
        f"({store.as_date(row['decided_at'])}); nothing changed since",
    )
    first = store.as_date(last["first_observation_date"])
    window = f"{first}..{store.as_date(last['last_observation_date'])}"
    return outcome, f"version {champion}'s replayed window {window} is current"


def replay(settings: Settings, params: ReplayParams) -> tuple[ReplayReport | None, str]:
    """The champion's replayed window (pipeline.replay); ``(None, reason)`` when there is
    nothing to replay with or on (no champion, no labelled day): a skip, not a failure."""
    from raincast.pipeline.replay import replay as replay_now
    from raincast.steps.predict import NoChampionError, NoObservationsError

    try:
        report = replay_now(settings, params)
    except (NoChampionError, NoObservationsError) as err:
        log.warning("replay skipped: %s", err)
        return None, str(err)
    return report, "" if report.written else report.reason


@dataclass
class Progress:
    """Reports each step of a cycle with the time since the cycle started (`raincast run`
    prints them; the DAGs pass none). ``report`` gets one line per event."""

    report: Callable[[str], None] = field(default=lambda line: None)
    started: float = field(default_factory=time.monotonic)
    _step: tuple[str, float] | None = None

    def step(self, name: str) -> None:
        """``name`` starts now (and the step before it ends)."""
        self.done()
        now = time.monotonic()
        self._step = (name, now)
        self.report(f"[{now - self.started:6.1f} s] {name} ...")

    def done(self) -> None:
        """The current step ended."""
        if self._step is not None:
            name, since = self._step
            now = time.monotonic()
            self.report(f"[{now - self.started:6.1f} s] {name} done in {now - since:.1f} s")
            self._step = None

    def dvc_line(self, line: str) -> None:
        """Follow `dvc repro`'s output: one step per stage it runs or skips."""
        if m := _DVC_RUNNING.search(line):
            self.step(f"dvc stage {m.group(1)}")
        elif m := _DVC_SKIPPED.search(line):
            self.done()
            self.report(
                f"[{time.monotonic() - self.started:6.1f} s] dvc stage {m.group(1)} unchanged"
            )


_DVC_RUNNING = re.compile(r"Running stage '([^']+)'")
_DVC_SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")


def _tool_env() -> dict[str, str]:
    # DVC stages call `raincast ...`: make this interpreter's scripts folder win on PATH.
    # The child's environment is this process's (each stage builds its own Settings from
    # it): building a subprocess's environment is the one use of os.environ here.
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}


def dvc(project_dir: Path, *args: str, on_line: Callable[[str], None] | None = None) -> str:
    """Run a dvc command in the project and return its output; a failure raises with
    dvc's own message. ``on_line`` sees each output line as dvc prints it."""
    cmd = [str(Path(sys.executable).parent / "dvc"), *args]
    proc = subprocess.Popen(
        cmd,
        cwd=project_dir,
        env=_tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream: dvc's lines and the stages' logs in order
        text=True,
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if on_line is not None:
            on_line(line)
    stdout = "".join(lines)
    if proc.wait() != 0:
        raise RuntimeError(
            f"`dvc {' '.join(args)}` failed (exit {proc.returncode}):\n{stdout[-6000:]}"
        )
    log.info("dvc %s: %s", " ".join(args), stdout.strip().splitlines()[-1:] or "ok")
    return stdout


def _ingest(
    settings: Settings,
    params: Params,
    source: Source,
    logical_date: date,
    start: date | None,
    run_id: str,
) -> int:
    fetched = fetch_step.run(settings, source, logical_date, start)
    validate_step.run(settings, params.validate_, logical_date, run_id=run_id)
    return fetched.rows


def run_cycle(
    settings: Settings,
    params: Params,
    source: Source,
    logical_date: date,
    fallback: Source | None = None,
    progress: Progress | None = None,
) -> CycleReport:
    """Bring the store up to ``logical_date`` and retrain/promote. ``fallback`` replaces an
    unreachable source (only `raincast run` passes one; the DAGs never do), and only when
    the store holds no rows of another kind: synthetic rows never go into a store of real
    ones (store.SourceMixError says how to proceed). ``progress`` reports each step as it
    starts and ends."""
    progress = progress or Progress()
    engine = store.connect(settings.raw_store_url)
    with store.store_lock(
        engine, settings.lock_dir, settings.store_lock_timeout_s, f"run {logical_date}"
    ):
        return _run_locked(settings, params, engine, source, logical_date, fallback, progress)


def _run_locked(
    settings: Settings,
    params: Params,
    engine: sa.Engine,
    source: Source,
    logical_date: date,
    fallback: Source | None,
    progress: Progress,
) -> CycleReport:
    fell_back = False
    history_rows = 0
    for attempt in range(2):
        try:
            if store.count_rows(engine) == 0:
                start = history_start(source, logical_date, params.history)
                if start < logical_date:
                    progress.step(f"history {start}..{logical_date - timedelta(days=1)}")
                    history_rows = _ingest(
                        settings,
                        params,
                        source,
                        logical_date - timedelta(days=1),
                        start,
                        run_id=f"history:{source.name}:{start}..{logical_date - timedelta(days=1)}",
                    )
            progress.step(f"fetch + validate {logical_date}")
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
            try:
                store.check_source_kind(engine, fallback.name, settings.allow_mixed_sources)
            except store.SourceMixError as mix:
                raise store.SourceMixError(
                    f"{source.name} is unreachable ({err}); not falling back to "
                    f"{fallback.name} data: {mix}; or retry when {source.name} answers"
                ) from None
            log.warning("!" * 72)
            log.warning("SOURCE %s UNREACHABLE (%s)", source.name.upper(), err)
            log.warning("FALLING BACK TO THE SYNTHETIC SOURCE: this run's data is NOT real weather")
            log.warning("!" * 72)
            source, fell_back = fallback, True
    # A push is skipped only after a no-op repro and when the last push succeeded.
    pending = settings.state_dir / "dvc-push-pending"
    progress.step("dvc repro: checking what changed")
    repro = dvc(settings.project_dir, "repro", on_line=progress.dvc_line)
    no_op = "up to date" in repro.lower() and not pending.exists()
    if not no_op:
        progress.step("dvc push")
        pending.parent.mkdir(parents=True, exist_ok=True)
        pending.touch()
        dvc(settings.project_dir, "push")
        pending.unlink()
    settled = settled_in_store(settings, params.replay, engine) if no_op else None
    if settled is not None:
        progress.step("promote + replay: already recorded for this model")
        outcome, skipped = settled
        replayed = None
    else:
        progress.step("promote")
        outcome = promote(settings, params.promote, drift_mode=params.drift.mode)
        progress.step("replay")
        replayed, skipped = replay(settings, params.replay)
    progress.done()
    return CycleReport(
        source.name, logical_date, history_rows, day_rows, outcome, fell_back, replayed, skipped
    )
