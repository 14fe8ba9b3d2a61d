"""The production deployment, running: docker compose (docker-compose.yml + stand-ins for
upstream images, deploy/compose.standins.yml) driven through nginx on 127.0.0.1.

The tests run in file order and share one stack: the bootstrap cycle, the API, health and
isolation, a second day whose trainer container is killed mid-`dvc repro`, monitoring,
then restarts. A test that needs an earlier step's result fails when that step did."""

from __future__ import annotations

import gzip
import json
import os
import signal
import time
from datetime import date
from typing import Any

import pytest
import requests
from testbed.stack.engine import REPO, project_images
from testbed.stack.harness import (
    bring_up,
    prometheus,
    psql,
    s3_keys,
    unhealthy,
    wait_for,
    wait_healthy,
)
from tests.e2e.stack.conftest import DATA, Stack
from tests.observability.promql import dashboard_exprs

# The first test also pays for the session fixture: cold image builds and `up` (5-11 min on
# 2 cores, more when the host is shared); each wait inside has its own, shorter bound.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]

D1, D2 = date(2017, 6, 24), date(2017, 6, 25)  # the last two days of weatherAUS.csv.gz
MODEL = "rain-tomorrow"
USER, PASSWORD = "alice", "stack-test-password-1"
ROW = {
    "Date": "2017-06-25",
    "Location": "Sydney",
    "Humidity3pm": 88,
    "Rainfall": 5.0,
    "RainToday": "Yes",
}
#: A dry and a stormy afternoon: the champion must tell them apart (and both labels reach
#: the dashboards' prediction panels).
DRY = {"Date": "2017-01-10", "Location": "Perth", "Humidity3pm": 15, "Cloud3pm": 0,
       "Sunshine": 12.0, "Pressure3pm": 1022.0, "Rainfall": 0.0, "RainToday": "No"}  # fmt: skip
WET = {"Date": "2017-06-25", "Location": "Sydney", "Humidity3pm": 99, "Cloud3pm": 8,
       "Sunshine": 0.0, "Pressure3pm": 1001.0, "Rainfall": 40.0, "RainToday": "Yes",
       "WindGustSpeed": 70, "Temp3pm": 12.0}  # fmt: skip
#: Services built from this repository: their processes must not run as root.
OWN_SERVICES = ("mlflow", "api", "streamlit", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer")  # fmt: skip
#: Prometheus jobs that cannot be up here, and why.
DOWN_BY_DESIGN = {"minio": "the S3 stand-in (moto) has no MinIO metrics endpoint"}
#: Dashboard queries that may be empty after the loop (matched by a part of the query), and why.
EMPTY_BY_DESIGN = {
    "push_failure_time_seconds > 0": "no Pushgateway push failed",
    "max by (job) (raincast_job_last_failure_timestamp_seconds) >": "no pipeline step failed "
    "by itself (the killed trainer was SIGKILLed: a killed process reports nothing)",
    'airflow_ti_finish_total{state="failed"}': "no task ended failed: the killed try was retried",
    'http_response_code=~"5..': "no request failed with a 5xx",
}


def mlflow_get(stack: Stack, path: str, **params: str) -> dict[str, Any]:
    env = stack.compose.env
    r = requests.get(
        f"{stack.base}/mlflow/api/2.0/mlflow/{path}",
        params=params,
        auth=(env.get("MLFLOW_TRACKING_USERNAME", "admin"), env["MLFLOW_TRACKING_PASSWORD"]),
        timeout=30,
    )
    r.raise_for_status()
    return dict(r.json())


def versions(stack: Stack) -> list[str]:
    found = mlflow_get(stack, "model-versions/search", filter=f"name='{MODEL}'")
    return sorted((v["version"] for v in found.get("model_versions", [])), key=int)


def champion(stack: Stack) -> dict[str, Any]:
    return dict(
        mlflow_get(stack, "registered-models/alias", name=MODEL, alias="champion")["model_version"]
    )


def store_rows(stack: Stack) -> tuple[int, int, str]:
    ((rows, inserted, newest),) = psql(
        stack.compose,
        "raincast",
        "SELECT (SELECT count(*) FROM observations), "
        "(SELECT coalesce(sum(inserted), 0) FROM validation_runs WHERE status = 'ok'), "
        '(SELECT max("Date") FROM observations)',
    )
    return int(rows), int(inserted), newest


def daily_update(stack: Stack, day: date) -> tuple[str, str, str]:
    """Trigger weather_data_update for ``day`` and return (update, retrain, batch) run ids
    once the update succeeded and its Asset event started the other two."""
    af = stack.airflow
    known = {
        dag: {r["dag_run_id"] for r in af.runs(dag)}
        for dag in ("weather_retrain", "weather_batch_predict")
    }
    run = af.trigger("weather_data_update", day)
    af.wait_run("weather_data_update", run, timeout=900)
    retrain = af.wait_new_run("weather_retrain", known["weather_retrain"], timeout=120)
    batch = af.wait_new_run("weather_batch_predict", known["weather_batch_predict"], timeout=120)
    return run, retrain, batch


# --- 1. the bootstrap cycle -----------------------------------------------------------------


def _source_rows(day: date) -> int:
    """Rows the replayed weatherAUS file holds for ``day`` (what the source sends)."""
    with gzip.open(DATA / "weatherAUS.csv.gz", "rt") as f:
        return sum(1 for line in f if line.startswith(f"{day.isoformat()},"))


def test_first_update_loads_the_history_and_the_asset_event_retrains_in_containers(
    stack: Stack,
) -> None:
    af = stack.airflow
    started = time.monotonic()
    update, retrain, batch = daily_update(stack, D1)
    run = af.wait_run("weather_retrain", retrain, timeout=1800)
    stack.timings["bootstrap_cycle_s"] = time.monotonic() - started
    assert run["run_type"] == "asset_triggered"
    tasks = af.tasks("weather_retrain", retrain)
    assert list(tasks) and {t["operator"] for t in tasks.values()} == {"DockerOperator"}
    assert {t["state"] for t in tasks.values()} == {"success"}
    assert set(tasks) == {
        "due",
        "process",
        "split",
        "drift",
        "train",
        "evaluate",
        "push",
        "promote",
    }
    # The fetch of an empty store took the whole history before D1 (the DAG's bootstrap).
    fetch_log = af.log("weather_data_update", update, "fetch", 1)
    assert "the store is empty: fetching its history from 2007-11-01" in fetch_log, fetch_log[
        -2000:
    ]
    rows, inserted, newest = store_rows(stack)
    assert rows == inserted > 140_000 and newest == str(D1)
    # batch predict ran on the same event, before any champion: skipped, not failed.
    done = af.wait_run("weather_batch_predict", batch, timeout=600)
    assert af.tasks("weather_batch_predict", batch)["predict"]["state"] == "skipped", done
    stack.facts["rows_d1"] = rows


def test_champion_is_in_the_registry_on_postgres_with_artifacts_in_s3(stack: Stack) -> None:
    champ = champion(stack)
    assert champ["version"] == "1" and versions(stack) == ["1"]
    run = mlflow_get(stack, "runs/get", run_id=champ["run_id"])["run"]
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:")
    ((count,),) = psql(stack.compose, "mlflow", "SELECT count(*) FROM model_versions")
    assert count == "1"  # the registry really is the PostgreSQL backend store
    # MLflow 3 keeps a logged model under <experiment>/models/<model id>/artifacts/.
    model_id = champ["source"].removeprefix("models:/")
    keys = s3_keys(stack.compose, "mlflow")
    assert any(model_id in k and k.endswith("/MLmodel") for k in keys), (model_id, keys[:20])
    assert any(model_id in k and k.endswith("/model.ubj") for k in keys), model_id
    assert s3_keys(stack.compose, "dvc"), "dvc push left the S3 remote empty"


# --- 2. serving through nginx -----------------------------------------------------------------


def test_api_serves_the_champion_with_a_jwt_through_nginx(stack: Stack) -> None:
    wait_for("the API /readyz", stack.api.ready, timeout=120)
    add = stack.compose(
        "run", "--rm", "-T", "api", "raincast", "users", "add", USER, "--role", "admin",
        "--password-stdin", input=PASSWORD + "\n", timeout=180,
    )  # fmt: skip
    assert "added admin alice" in add.stdout, add.stdout + add.stderr
    token = stack.api.token(USER, PASSWORD)
    r = stack.api.predict(token, [ROW])
    assert r.status_code == 200, r.text
    (pred,) = r.json()["predictions"]
    assert pred["model_version"] == "1" and 0.0 <= pred["probability"] <= 1.0
    both = stack.api.predict(token, [DRY, WET])
    assert both.status_code == 200, both.text
    assert [p["label"] for p in both.json()["predictions"]] == ["No", "Yes"], both.text
    bad = stack.api.predict(token + "x", [ROW])
    assert bad.status_code == 401  # also feeds the auth-failure panel
    reload = requests.post(
        f"{stack.api.base}/admin/reload", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert reload.status_code == 200 and reload.json()["model_version"] == "1", reload.text
    ui = requests.get(stack.base + "/", timeout=30)
    assert ui.status_code == 200 and "<title>Streamlit</title>" in ui.text
    health = requests.get(stack.base + "/_stcore/health", timeout=30)
    assert health.status_code == 200 and health.text == "ok"


def test_the_ui_image_talks_to_the_api_only(stack: Stack) -> None:
    """The UI container has its pages and Streamlit, and none of the pipeline's libraries:
    no store driver, MLflow, XGBoost or DVC, and no store URL."""
    probe = (
        "import importlib.util, os\n"
        "import raincast.ui.app, raincast.ui.client, raincast.ui.charts\n"
        "gone = [m for m in ('psycopg2', 'sqlalchemy', 'mlflow', 'xgboost', 'dvc', 'sklearn')\n"
        "        if importlib.util.find_spec(m) is None]\n"
        "print(','.join(gone), os.environ.get('RAINCAST_STORE_URL', '-'))\n"
    )
    out = stack.compose.exec("streamlit", "python", "-c", probe, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["psycopg2,sqlalchemy,mlflow,xgboost,dvc,sklearn", "-"], out.stdout


def test_swagger_behind_the_api_prefix_points_its_calls_at_the_prefix(stack: Stack) -> None:
    spec = requests.get(stack.base + "/api/openapi.json", timeout=30).json()
    assert spec["servers"][0]["url"] == "/api", spec.get("servers")
    docs = requests.get(stack.base + "/api/docs", timeout=30)
    assert docs.status_code == 200 and "/api/openapi.json" in docs.text


def test_every_service_is_healthy_and_our_images_run_as_non_root(stack: Stack) -> None:
    # The API's healthcheck failed until the first champion: it turns healthy at its next
    # probe (every 30 s) after /readyz answers 200.
    wait_healthy(stack.compose, timeout=180)
    assert unhealthy(stack.compose, set()) == []
    engine = stack.compose.engine
    for image in project_images():
        user = engine("image", "inspect", "--format", "{{.Config.User}}", image.tag).stdout.strip()
        assert user and user.split(":")[0] not in ("0", "root"), (image.tag, user)
    for service in OWN_SERVICES:
        uid = stack.compose.exec(service, "id", "-u").stdout.strip()
        assert uid != "0", service


def test_only_the_scheduler_can_reach_the_docker_socket_proxy(stack: Stack) -> None:
    probe = (
        "import socket, sys\n"
        "try:\n"
        "    socket.create_connection(('docker-socket-proxy', 2375), timeout=3).close()\n"
        "except OSError as err:\n"
        "    print('unreachable:', err); sys.exit(3)\n"
        "print('reachable')\n"
    )
    for service in ("streamlit", "api", "mlflow", "airflow-apiserver", "airflow-dag-processor"):
        out = stack.compose.exec(service, "python", "-c", probe, check=False)
        assert out.returncode == 3 and "unreachable" in out.stdout, (service, out.stdout)
    out = stack.compose.exec("airflow-scheduler", "python", "-c", probe, check=False)
    assert out.returncode == 0 and "reachable" in out.stdout, out.stdout + out.stderr


# --- 3. the next day, with the trainer container killed mid-run -------------------------------


def test_a_trainer_killed_mid_repro_is_retried_and_nothing_is_duplicated(stack: Stack) -> None:
    af, compose = stack.airflow, stack.compose
    # Tomorrow's predictions from today's champion (D1 -> D2), scored when D2 arrives.
    batch = af.trigger("weather_batch_predict")
    af.wait_run("weather_batch_predict", batch, timeout=600)
    started = time.monotonic()
    _, retrain, batch = daily_update(stack, D2)

    def running_train() -> str | None:
        for c in compose.task_containers():
            if c["Config"]["Labels"].get("io.raincast.task") == "train" and c["State"]["Running"]:
                return str(c["Id"])
        return None

    container = wait_for("the train task's container", running_train, timeout=600, every=1)
    time.sleep(8)  # inside the fit, before anything is registered
    compose.engine("kill", container)
    run = af.wait_run("weather_retrain", retrain, timeout=1800)
    stack.timings["daily_cycle_with_kill_s"] = time.monotonic() - started
    train = af.tasks("weather_retrain", retrain)["train"]
    assert train["state"] == "success" and int(train["try_number"]) == 2, train
    assert run["state"] == "success"
    assert versions(stack) == ["1", "2"]  # one version for the day, none from the killed try
    ((count,),) = psql(compose, "mlflow", "SELECT count(*) FROM model_versions")
    assert count == "2"
    rows, inserted, newest = store_rows(stack)
    ((rows_in, accepted, quarantined, day_rows),) = psql(
        compose, "raincast",
        "SELECT rows_in, accepted, quarantined, "
        "(SELECT count(*) FROM observations WHERE \"Date\" = '2017-06-25') "
        "FROM validation_runs WHERE logical_date = '2017-06-25' AND status = 'ok'",
    )  # fmt: skip
    sent = _source_rows(D2)  # 48 stations reported on the last day
    assert int(rows_in) == sent == int(accepted) + int(quarantined), (rows_in, sent)
    assert rows == inserted == stack.facts["rows_d1"] + int(day_rows) and newest == str(D2)
    assert int(day_rows) == int(accepted)
    # batch predict on the same event: tomorrow's predictions in PostgreSQL, and D2's scored.
    af.wait_run("weather_batch_predict", batch, timeout=600)
    ((predicted, versions_used),) = psql(
        compose, "raincast",
        "SELECT count(*), string_agg(DISTINCT model_version, ',') FROM predictions "
        "WHERE target_date = '2017-06-26'",
    )  # fmt: skip
    # one prediction per station observed on D2 (48 of the 49 reported that day)
    assert int(predicted) == int(day_rows) and versions_used in ("1", "2"), (
        predicted,
        versions_used,
    )
    ((scored,),) = psql(compose, "raincast", "SELECT count(*) FROM live_scores")
    assert int(scored) > 0


# --- 4. monitoring ------------------------------------------------------------------------------


def test_prometheus_scrapes_every_target_it_is_configured_for(stack: Stack) -> None:
    def targets() -> dict[str, str]:
        active = prometheus(stack.compose, "targets")["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}

    found = wait_for(
        "every scrape target up",
        lambda: (
            (t := targets())
            and all(h == "up" for j, h in t.items() if j not in DOWN_BY_DESIGN)
            and t
        ),
        timeout=120,
        every=5,
    )
    assert set(found) >= {"raincast-api", "pushgateway", "airflow", "postgres", "prometheus"}
    assert {j for j, h in found.items() if h != "up"} <= set(DOWN_BY_DESIGN)


def test_every_dashboard_query_has_data_after_the_loop(stack: Stack) -> None:
    empty = []
    for board in sorted((REPO / "dashboards").glob("*.json")):
        for title, expr in dashboard_exprs(json.loads(board.read_text())):
            query = expr.replace("$__rate_interval", "1h").replace("$__range", "1h")
            result = prometheus(stack.compose, "query", query=query)["result"]
            if not result and not any(part in expr for part in EMPTY_BY_DESIGN):
                empty.append(f"{board.name}: {title}: {expr}")
    assert empty == [], "\n".join(empty)


# --- 5. restarts ------------------------------------------------------------------------------


def test_a_killed_api_container_comes_back_with_the_same_champion(stack: Stack) -> None:
    compose = stack.compose
    token = stack.api.token(USER, PASSWORD)
    before = stack.api.model(token)["version"]
    api = compose.container("api")
    started = time.monotonic()
    # SIGKILL from the host, as the OOM killer would (`docker kill` counts as a manual stop,
    # which no restart policy undoes).
    os.kill(int(api["State"]["Pid"]), signal.SIGKILL)
    wait_for(
        "the api container restarted",
        lambda: compose.container("api")["RestartCount"] > api["RestartCount"],
        timeout=120,
    )
    wait_for("the API /readyz again", stack.api.ready, timeout=180)
    stack.timings["api_restart_s"] = time.monotonic() - started
    assert stack.api.model(stack.api.token(USER, PASSWORD))["version"] == before


def test_down_and_up_keeps_rows_registry_artifacts_and_users(stack: Stack) -> None:
    compose = stack.compose
    rows_before = store_rows(stack)
    champ_before = champion(stack)["version"]
    # As an operator would: let running task containers finish (they hold the network).
    wait_for(
        "no task container running",
        lambda: not any(c["State"]["Running"] for c in compose.task_containers()),
        timeout=900,
        every=5,
    )
    started = time.monotonic()
    compose("down", "--timeout", "30", timeout=600)
    assert compose.containers() == []
    bring_up(compose)
    wait_healthy(compose, timeout=600)  # the API included: it reloaded the champion from S3
    stack.timings["down_up_s"] = time.monotonic() - started
    assert store_rows(stack) == rows_before
    assert champion(stack)["version"] == champ_before and versions(stack) == ["1", "2"]
    token = stack.api.token(USER, PASSWORD)  # users.json survived on its volume
    r = stack.api.predict(token, [ROW])
    assert r.status_code == 200 and r.json()["predictions"][0]["model_version"] == champ_before
