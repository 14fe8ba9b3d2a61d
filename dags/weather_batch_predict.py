"""### weather_batch_predict

Runs after every observations update (the `raincast://weather/observations` Asset):

1. **predict**: `raincast predict` scores every station's newest observation day D with
   the current champion and writes tomorrow's (D+1) rain probabilities, with the model
   version, to the `predictions` table (re-running adds nothing).
2. **score**: `raincast score` compares earlier predictions with the outcomes that just
   arrived and stores live F1, ROC AUC and base rate over rolling windows in `live_scores`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG
from assets import OBSERVATIONS
from raincast_tasks import DEFAULT_ARGS, START_DATE, raincast_task

with DAG(
    dag_id="weather_batch_predict",
    doc_md=__doc__,
    schedule=OBSERVATIONS,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["raincast", "prediction", "monitoring"],
):
    predict = raincast_task(
        "predict", ["raincast", "predict"], execution_timeout=timedelta(minutes=20)
    )
    score = raincast_task("score", ["raincast", "score"], execution_timeout=timedelta(minutes=20))
    predict >> score
