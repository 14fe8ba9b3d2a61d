"""The Airflow Assets raincast exchanges between DAGs, defined once.

`OBSERVATIONS` is updated by `weather_data_update.validate` (only on success) and
consumed by `weather_retrain` and `weather_batch_predict`. Production points the URI at
the real store with `RAINCAST_OBSERVATIONS_ASSET_URI` (e.g. an s3:// or postgres:// URI).
"""

from __future__ import annotations

import os

from airflow.sdk import Asset

OBSERVATIONS_URI = os.environ.get(
    "RAINCAST_OBSERVATIONS_ASSET_URI", "raincast://weather/observations"
)

OBSERVATIONS = Asset(name="raincast_observations", uri=OBSERVATIONS_URI, group="raincast")
