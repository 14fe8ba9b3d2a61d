"""### weather_retrain

Runs when new observations arrive (the `raincast://weather/observations` Asset) **or**
daily at 06:00 Australia/Sydney as a safety net. The first task, **due**
(`raincast retrain-due`), lets every Asset-triggered or manual run through; a
time-triggered run goes on only when one of these holds, otherwise it is skipped:

1. there is no champion;
2. the champion is at least `retrain.max_age_days` old (params.yaml, default 30);
3. the live trigger: `retrain.breaches_needed` (3) of the champion's last
   `retrain.of_last` (5) scored `retrain.live_window_days`-day (7) windows in
   `live_scores` have live F1 or ROC AUC below `retrain.live_floor`. Only windows scored
   on the current champion alone count; a window with one observed class is skipped.

The task log says which rule decided and why (the breached windows' dates and values).

Then one task per DVC stage, each `raincast dvc repro --single-item <stage>` (`dvc repro`
after dropping run-locks a killed task container left behind; DVC skips a stage
whose inputs did not change, so re-running the same data adds no model version), **push**
(`raincast dvc push`: data and model outputs reach the DVC remote before a model can be champion),
and **promote**: champion vs challenger on the same test slice, alias moved only if the gate
in params.yaml passes (`promote.gate: enforce`; `dry_run` and `off` record the verdict and
promote anyway). Every task that touches DVC or the registry is in the
`raincast_dvc` pool (one slot) and the DAG allows one active run.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, chain
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable
from assets import OBSERVATIONS
from raincast_tasks import (
    DEFAULT_ARGS,
    DVC_POOL,
    START_DATE,
    TIMEZONE,
    raincast_task,
    schedule_setting,
)

#: The retrain tasks: the stages of dvc.yaml, in its order. A constant, not read from
#: dvc.yaml at parse time (the DAG processor's image has no checkout): a test checks that
#: the two agree, so a stage added to dvc.yaml without its task fails CI, not production.
PIPELINE_STAGES = ("process", "split", "drift", "train", "evaluate")


#: The time-based safety net (`RAINCAST_RETRAIN_SCHEDULE=none`: Asset-triggered only).
SAFETY_NET_CRON = schedule_setting("RAINCAST_RETRAIN_SCHEDULE", "0 6 * * *")

with DAG(
    dag_id="weather_retrain",
    doc_md=__doc__,
    schedule=(
        AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(SAFETY_NET_CRON, timezone=TIMEZONE), assets=OBSERVATIONS
        )
        if SAFETY_NET_CRON
        else OBSERVATIONS
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["raincast", "training"],
):
    tasks = [
        raincast_task(
            "due",
            ["raincast", "retrain-due", "--run-type", "{{ dag_run.run_type }}"],
            execution_timeout=timedelta(minutes=5),
        )
    ]
    for stage in PIPELINE_STAGES:
        tasks.append(
            raincast_task(
                stage,
                ["raincast", "dvc", "repro", "--single-item", stage],
                pool=DVC_POOL,
                execution_timeout=timedelta(hours=2 if stage == "train" else 1),
            )
        )
    # Data and model outputs reach the DVC remote before a model can become champion.
    push = ["raincast", "dvc", "push"]
    for task_id, command in (("push", push), ("promote", ["raincast", "promote"])):
        tasks.append(
            raincast_task(task_id, command, pool=DVC_POOL, execution_timeout=timedelta(minutes=30))
        )
    chain(*tasks)
