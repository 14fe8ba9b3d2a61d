"""The production stack, run for real (`make test-stack`): a Docker engine (started here when
none runs, stopped again), every image the default profile uses, `docker compose up`, the
daily loop driven through nginx, and a teardown that leaves no container, network, volume
or daemon of its own behind. One summary line with the timings ends the run.

Collected only when RAINCAST_STACK_TESTS=1 (the make target sets it): `make test` does not
start containers.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from testbed.servers import free_port
from testbed.stack import engine as docker
from testbed.stack.harness import Airflow, Api, launch

REPO = docker.REPO
DATA = REPO.parent / "shared" / "data"
STATE = REPO / "var" / "stack"
#: Filled while the run goes; printed by pytest_terminal_summary and kept as a file.
SUMMARY: dict[str, float | str] = {}


@dataclass
class Stack:
    compose: docker.Compose
    airflow: Airflow
    api: Api
    base: str  # http://127.0.0.1:PORT
    timings: dict[str, float] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (DATA / "weatherAUS.csv.gz").exists():
        pytest.fail(f"the stack test replays real weatherAUS rows: {DATA} is missing")
    t0 = time.monotonic()
    work = tmp_path_factory.mktemp("stack")
    try:
        engine = docker.start_engine(STATE)
    except docker.EngineUnavailable as err:
        pytest.fail(f"no Docker engine: {err}")
    SUMMARY["engine"] = "started here" if engine.daemon else "already running"
    compose = None
    try:
        timings: dict[str, float] = {}
        started = time.monotonic()
        timings["base_image_s"] = docker.ensure_base_image(engine, work)
        timings["standins_s"] = sum(docker.build_standins(engine, work).values())
        timings["project_images_s"] = sum(docker.build_project_images(engine).values())
        timings["build_s"] = time.monotonic() - started

        compose = docker.new_compose(engine, work, DATA, free_port())
        started = time.monotonic()
        airflow, api, base = launch(compose)
        timings["up_to_healthy_s"] = time.monotonic() - started
        yield Stack(compose, airflow, api, base, timings)
        SUMMARY.update({k: round(v, 1) for k, v in timings.items()})
    finally:
        started = time.monotonic()
        keep = compose is not None and os.environ.get("RAINCAST_STACK_KEEP") == "1"
        if keep:
            # Debugging aid (never set in CI): the stack, the engine and the checkout stay;
            # `docker-compose -p <project> down -v` removes the stack.
            SUMMARY["kept"] = f"project {compose.project}, env file {compose.env_file}"  # type: ignore[union-attr]
        elif compose is not None:
            # The services' last words, for a failed run (var/stack is git-ignored).
            logs = compose("logs", "--tail", "80", timeout=120, check=False).stdout
            STATE.mkdir(parents=True, exist_ok=True)
            (STATE / "compose-logs.txt").write_text(logs)
            compose.remove_everything()
            leftovers = compose.containers() + compose.task_containers()
            SUMMARY["leftover_containers"] = len(leftovers)
        if not keep:
            docker.stop_engine(engine)
            shutil.rmtree(work, ignore_errors=True)
        SUMMARY["teardown_s"] = round(time.monotonic() - started, 1)
        SUMMARY["total_s"] = round(time.monotonic() - t0, 1)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SUMMARY:
        return
    line = "stack: " + ", ".join(f"{k} {v}" for k, v in SUMMARY.items())
    terminalreporter.write_line(line)
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "summary.json").write_text(json.dumps(SUMMARY, indent=2) + "\n")
