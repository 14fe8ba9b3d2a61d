"""Clients the stack test (and bench/stack.py) drive the deployment with, all through the
published nginx port on 127.0.0.1 (Airflow's REST API, the prediction API, MLflow's REST
API), plus a few reads inside the containers (psql, the S3 stand-in, Prometheus) the way an
operator would use `docker compose exec`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import requests

from testbed.stack.engine import Compose

SYDNEY = ZoneInfo("Australia/Sydney")
DONE = {"success", "failed"}


def wait_for(what: str, probe: Callable[[], Any], timeout: float, every: float = 3.0) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (requests.RequestException, LookupError, ValueError) as err:
            last = err
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def logical_date_for(day: date) -> str:
    """The logical date whose Sydney day is ``day`` (the DAGs' observation day)."""
    return datetime.combine(day, dtime(), tzinfo=SYDNEY).astimezone(ZoneInfo("UTC")).isoformat()


@dataclass
class Airflow:
    base: str  # http://127.0.0.1:PORT/airflow
    password: str
    _token: str | None = field(default=None, repr=False)

    def token(self) -> str:
        if self._token is None:
            r = requests.post(
                f"{self.base}/auth/token",
                json={"username": "admin", "password": self.password},
                timeout=30,
            )
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = requests.request(
            method,
            f"{self.base}/api/v2{path}",
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=60,
            **kw,
        )
        if r.status_code >= 400:
            raise ValueError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.call("GET", "/dags")["dags"]}

    def trigger(
        self, dag_id: str, day: date | None = None, conf: dict[str, Any] | None = None
    ) -> str:
        body = {"logical_date": logical_date_for(day) if day else None, "conf": conf or {}}
        return str(self.call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def tasks(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        out = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {t["task_id"]: t for t in out["task_instances"]}

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        out = self.call(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        )
        return "\n".join(
            e.get("event", "") if isinstance(e, dict) else str(e) for e in out.get("content", [])
        )

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        run = wait_for(
            f"{dag_id} run {run_id} to finish",
            lambda: (r := self.run(dag_id, run_id))["state"] in DONE and r,
            timeout,
            every=5,
        )
        if run["state"] != "success":
            raise AssertionError(
                f"{dag_id} {run_id} {run['state']}:\n{self.failure_logs(dag_id, run_id)}"
            )
        return dict(run)

    def wait_new_run(self, dag_id: str, known: set[str], timeout: float) -> str:
        """The id of the first run of ``dag_id`` not in ``known`` (an Asset-triggered one)."""
        return str(
            wait_for(
                f"a new {dag_id} run",
                lambda: next(
                    (r["dag_run_id"] for r in self.runs(dag_id) if r["dag_run_id"] not in known),
                    None,
                ),
                timeout,
            )
        )

    def failure_logs(self, dag_id: str, run_id: str) -> str:
        """Every try of every task that failed or is retrying (for an assertion message)."""
        lines = []
        for task_id, ti in self.tasks(dag_id, run_id).items():
            if ti["state"] in ("success", "skipped", None, "upstream_failed"):
                continue
            for attempt in range(1, int(ti.get("try_number") or 0) + 1):
                try:
                    text = self.log(dag_id, run_id, task_id, attempt)
                except ValueError as err:
                    text = str(err)
                lines.append(f"--- {task_id} ({ti['state']}, try {attempt}) ---\n{text[-3000:]}")
        return "\n".join(lines) or "(no task log)"


@dataclass
class Api:
    base: str  # http://127.0.0.1:PORT/api

    def token(self, user: str, password: str) -> str:
        r = requests.post(
            f"{self.base}/auth/token", json={"username": user, "password": password}, timeout=30
        )
        r.raise_for_status()
        return str(r.json()["access_token"])

    def predict(self, token: str, rows: list[dict[str, Any]]) -> requests.Response:
        return requests.post(
            f"{self.base}/predict",
            json={"rows": rows},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def model(self, token: str) -> dict[str, Any]:
        r = requests.get(
            f"{self.base}/model", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        r.raise_for_status()
        return dict(r.json())

    def ready(self) -> bool:
        return requests.get(f"{self.base}/readyz", timeout=10).status_code == 200


def psql(stack: Compose, database: str, sql: str) -> list[list[str]]:
    """Rows of a query run by psql inside the postgres container (superuser, socket)."""
    out = stack.exec("postgres", "psql", "-U", "postgres", "-d", database, "-tAF", "|", "-c", sql)
    return [line.split("|") for line in out.stdout.splitlines() if line]


def s3_keys(stack: Compose, bucket: str) -> list[str]:
    """Object keys in a bucket of the S3 stand-in (read inside its container)."""
    code = (
        "import boto3, json, os; s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:9000',"
        " aws_access_key_id='x', aws_secret_access_key='x', region_name='us-east-1');"
        " p = s3.get_paginator('list_objects_v2');"
        f" pages = p.paginate(Bucket='{bucket}');"
        " print(json.dumps([o['Key'] for page in pages for o in page.get('Contents', [])]))"
    )
    return list(json.loads(stack.exec("minio", "python3", "-c", code).stdout))


def prometheus(stack: Compose, path: str, **params: str) -> Any:
    """Prometheus' HTTP API, asked from inside its container (it is not published)."""
    from urllib.parse import urlencode

    url = f"http://127.0.0.1:9090/api/v1/{path}?{urlencode(params)}"
    out = stack.exec("prometheus", "wget", "-q", "-O", "-", url, timeout=60)
    body = json.loads(out.stdout)
    if body.get("status") != "success":
        raise ValueError(f"prometheus {path}: {body}")
    return body["data"]


# --- compose lifecycle ------------------------------------------------------------------------


def unhealthy(compose: Compose, skip: set[str]) -> list[str]:
    """Services not yet healthy (long-running) or not exited 0 (one-shots)."""
    pending = []
    for c in compose.containers():
        service = c["Config"]["Labels"]["com.docker.compose.service"]
        if service in skip:
            continue
        state = c["State"]
        if c["HostConfig"]["RestartPolicy"]["Name"] == "no":
            if state["Status"] != "exited" or state["ExitCode"] != 0:
                pending.append(f"{service}: {state['Status']} {state.get('ExitCode')}")
        elif state.get("Health", {}).get("Status") != "healthy":
            pending.append(f"{service}: {state.get('Health', {}).get('Status', state['Status'])}")
    return pending


def wait_healthy(compose: Compose, timeout: float, skip: frozenset[str] = frozenset()) -> float:
    started = time.monotonic()
    wait_for(
        "every service healthy", lambda: not unhealthy(compose, set(skip)) or None, timeout, every=3
    )
    return time.monotonic() - started


def bring_up(compose: Compose, timeout: float = 900) -> None:
    out = compose("up", "-d", *compose.services(), timeout=timeout, check=False)
    if out.returncode != 0:
        logs = compose("logs", "--tail", "40", timeout=120, check=False).stdout
        raise AssertionError(f"compose up failed:\n{out.stderr[-4000:]}\n{logs[-8000:]}")


def launch(compose: Compose) -> tuple[Airflow, Api, str]:
    """`up` the stack, wait until every service but the API is healthy (it turns healthy
    with the first champion) and Airflow has parsed the DAGs; (airflow, api, base URL)."""
    bring_up(compose)
    wait_healthy(compose, timeout=600, skip=frozenset({"api"}))
    base = f"http://127.0.0.1:{compose.env['RAINCAST_HTTP_PORT']}"
    airflow = Airflow(f"{base}/airflow", compose.env["RAINCAST_AIRFLOW_PASSWORD"])
    wait_for("the three DAGs parsed", lambda: len(airflow.dag_ids()) == 3, timeout=180)
    return airflow, Api(f"{base}/api"), base
