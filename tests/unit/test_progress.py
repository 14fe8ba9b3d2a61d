"""`raincast run` progress (`raincast.pipeline.cycle.Progress`): one line per step with the
time since the cycle started, dvc stages followed from dvc's own output."""

from __future__ import annotations

import re

from raincast.pipeline.cycle import Progress


def test_steps_and_dvc_stages_are_reported_with_elapsed_time() -> None:
    lines: list[str] = []
    progress = Progress(lines.append)
    progress.step("fetch + validate 2017-06-25")
    progress.step("dvc repro: checking what changed")
    for out in (
        "Stage 'process' didn't change, skipping\n",
        "Running stage 'split':\n",
        "> raincast split\n",
        "2026-01-01 INFO raincast.steps.process: some log line\n",
        "Running stage 'train':\n",
    ):
        progress.dvc_line(out)
    progress.step("promote")
    progress.done()
    assert all(re.match(r"^\[\s*\d+\.\d s\] ", line) for line in lines), lines
    text = [line.split("] ", 1)[1] for line in lines]
    assert text == [
        "fetch + validate 2017-06-25 ...",
        "fetch + validate 2017-06-25 done in 0.0 s",
        "dvc repro: checking what changed ...",
        "dvc repro: checking what changed done in 0.0 s",
        "dvc stage process unchanged",
        "dvc stage split ...",
        "dvc stage split done in 0.0 s",
        "dvc stage train ...",
        "dvc stage train done in 0.0 s",
        "promote ...",
        "promote done in 0.0 s",
    ]


def test_no_reporter_reports_nothing_and_done_twice_is_harmless() -> None:
    progress = Progress()
    progress.step("x")
    progress.done()
    progress.done()
    progress.dvc_line("unrelated output\n")
