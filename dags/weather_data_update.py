"""### weather_data_update

Daily at 00:00 Australia/Sydney for the day that just ended (logical date D):

1. **fetch**: `raincast fetch --date D` from `$RAINCAST_SOURCE` (default `openmeteo`)
   into the landing area. No fallback: an unreachable source fails the task (and retries).
   On an empty store it fetches the history before D too (param `load_history`, on by
   default): how a fresh deployment bootstraps. csv/replay sources load every earlier row,
   Open-Meteo `history.openmeteo_days` of params.yaml from its archive endpoint.
2. **validate**: `raincast validate --date D` loads good rows into the raw store,
   quarantines bad ones with a reason, and fails when more than
   `validate.max_invalid_share` of the batch is bad.

Only `validate` has the `raincast://weather/observations` Asset as outlet, so a failed
validation emits no event and triggers no retrain. Catch-up is off by default; backfill a
range with `airflow backfill create --dag-id weather_data_update --from-date ... --to-date ...`.
`RAINCAST_UPDATE_SCHEDULE` changes the cron (`none`: triggered runs only).
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, Param
from airflow.timetables.interval import CronDataIntervalTimetable
from assets import OBSERVATIONS
from raincast_tasks import (
    DEFAULT_ARGS,
    OBSERVATION_DAY,
    START_DATE,
    TIMEZONE,
    raincast_task,
    schedule_setting,
)

#: `RAINCAST_UPDATE_SCHEDULE=none` leaves only manual / API-triggered runs.
UPDATE_CRON = schedule_setting("RAINCAST_UPDATE_SCHEDULE", "@daily")

with DAG(
    dag_id="weather_data_update",
    doc_md=__doc__,
    schedule=(
        # Data-interval semantics: the run for day D starts once D is over (Sydney time).
        CronDataIntervalTimetable(UPDATE_CRON, timezone=TIMEZONE) if UPDATE_CRON else None
    ),
    start_date=START_DATE,
    catchup=os.environ.get("RAINCAST_CATCHUP", "false").lower() == "true",
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["raincast", "data"],
    params={
        "load_history": Param(
            True,
            type="boolean",
            description="On an empty store, fetch the history before the logical date too.",
        )
    },
):
    fetch = raincast_task(
        "fetch",
        [
            "raincast",
            "fetch",
            "--date",
            OBSERVATION_DAY,
            "--source",
            os.environ.get("RAINCAST_SOURCE", "openmeteo"),
            # (double quotes only in Jinja: the local runner single-quotes each argument)
            '{{ "--history-if-empty" if params.load_history else "--no-history-if-empty" }}',
        ],
        execution_timeout=timedelta(minutes=20),
    )
    validate = raincast_task(
        "validate",
        ["raincast", "validate", "--date", OBSERVATION_DAY],
        outlets=[OBSERVATIONS],
        execution_timeout=timedelta(minutes=20),
    )
    fetch >> validate
