"""The production stack, measured (`make bench` -> bench/results/stack.json):

* image builds: cold (no build cache: every layer and every uv download again) and warm
  (nothing changed), per image, and the image sizes;
* `up` to every service healthy (the API excepted: it turns healthy with the first model);
* the bootstrap cycle and one daily cycle in containers (weather_data_update triggered
  through Airflow's REST API -> Asset event -> weather_retrain as DockerOperator containers,
  trigger to retrain done), and the same two cycles by `raincast run` on this machine, on
  the same replay file and params.yaml, in the same run: their ratio;
* the stack's peak memory (sum over its containers, `docker stats` every ~2 s).

Drives the stack with testbed.stack, on the stand-ins of tests/e2e/stack for the upstream images
no registry here serves.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

from testbed.servers import free_port
from testbed.stack import engine as docker
from testbed.stack.harness import launch

from bench.run import BIN, DATA, REPO, _cycle, _project

D1, D2 = date(2017, 6, 24), date(2017, 6, 25)
STATE = docker.REPO / "var" / "stack"


class MemorySampler(threading.Thread):
    """Peak of the summed memory of a compose project's containers and its task containers."""

    def __init__(self, compose: docker.Compose) -> None:
        super().__init__(daemon=True)
        self.compose = compose
        self.peak_mib = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        units = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}
        while not self.stop.is_set():
            running = self.compose.containers(all_=False) + self.compose.task_containers()
            ids = [c["Id"] for c in running if c["State"]["Running"]]
            out = self.compose.engine(
                "stats", "--no-stream", "--format", "{{.MemUsage}}", *ids, check=False
            ).stdout
            total = 0.0
            for usage in out.splitlines():
                value = usage.split("/")[0].strip()
                number = value.rstrip("BKMGi")
                total += float(number) * units.get(value[len(number) :], 1.0)
            self.peak_mib = max(self.peak_mib, total)
            self.stop.wait(2)


def _cycle_in_containers(airflow: Any, day: date) -> float:
    """Trigger weather_data_update for ``day``; seconds until its retrain run succeeded."""
    known = {r["dag_run_id"] for r in airflow.runs("weather_retrain")}
    started = time.monotonic()
    run = airflow.trigger("weather_data_update", day)
    airflow.wait_run("weather_data_update", run, timeout=900)
    retrain = airflow.wait_new_run("weather_retrain", known, timeout=300)
    airflow.wait_run("weather_retrain", retrain, timeout=1800)
    return time.monotonic() - started


def builds(engine: docker.Engine, work: Path) -> dict[str, Any]:
    docker.ensure_base_image(engine, work)
    docker.build_standins(engine, work)
    for image in docker.project_images():
        engine("rmi", "-f", image.tag, check=False)
    engine("builder", "prune", "-af", timeout=600)  # the uv cache mount goes with it
    cold = docker.build_project_images(engine)
    warm = docker.build_project_images(engine)
    sizes = docker.image_sizes(engine, cold)
    return {
        "cold_s": {k: round(v, 1) for k, v in cold.items()},
        "warm_s": {k: round(v, 1) for k, v in warm.items()},
        "cold_total_s": round(sum(cold.values()), 1),
        "warm_total_s": round(sum(warm.values()), 1),
        "size_mib": {k: round(v / 2**20) for k, v in sizes.items()},
    }


def containers(engine: docker.Engine, work: Path) -> dict[str, Any]:
    compose = docker.new_compose(engine, work / "stack", DATA, free_port())
    sampler = MemorySampler(compose)
    try:
        started = time.monotonic()
        airflow, _, _ = launch(compose)
        up_s = time.monotonic() - started
        sampler.start()
        bootstrap_s = _cycle_in_containers(airflow, D1)
        daily_s = _cycle_in_containers(airflow, D2)
    finally:
        sampler.stop.set()
        compose.remove_everything()
    return {
        "up_to_healthy_s": round(up_s, 1),
        "bootstrap_cycle_s": round(bootstrap_s, 1),
        "daily_cycle_s": round(daily_s, 1),
        "peak_memory_mib": round(sampler.peak_mib),
    }


def local(work: Path) -> dict[str, Any]:
    """The same two cycles by `raincast run` in a fresh project (embedded backends)."""
    csv = work / "weatherAUS.csv"
    csv.write_bytes(
        subprocess.run(
            ["gzip", "-dc", str(DATA / "weatherAUS.csv.gz")], capture_output=True, check=True
        ).stdout
    )
    project = _project(work / "local")
    bootstrap = _cycle(project, csv, D1.isoformat())
    daily = _cycle(project, csv, D2.isoformat())
    return {
        "bootstrap_cycle_s": round(bootstrap["seconds"], 1),
        "daily_cycle_s": round(daily["seconds"], 1),
        "peak_rss_mib": round(daily["peak_rss_mib"]),
    }


def main() -> dict[str, Any]:
    engine = docker.start_engine(STATE)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            built = builds(engine, work)
            inside = containers(engine, work)
            here = local(work)
    finally:
        docker.stop_engine(engine)
    return {
        "cpus": os.cpu_count(),
        "load_at_end": os.getloadavg(),
        "raincast": os.path.relpath(BIN / "raincast", REPO),
        "builds": built,
        "containers": inside,
        "local": here,
        "daily_containers_over_local": round(inside["daily_cycle_s"] / here["daily_cycle_s"], 2),
        "bootstrap_containers_over_local": round(
            inside["bootstrap_cycle_s"] / here["bootstrap_cycle_s"], 2
        ),
        "targets": {"daily_containers_over_local": 1.5, "up_to_healthy_s": 180},
    }
