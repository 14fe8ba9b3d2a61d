"""process: the labelled rows of the raw store, exported for the DVC pipeline."""

from __future__ import annotations

import logging

import pandas as pd

from raincast import catalog, schema
from raincast.data import store
from raincast.params import Params
from raincast.settings import Settings

log = logging.getLogger(__name__)


def labelled_rows(observations: pd.DataFrame) -> pd.DataFrame:
    """The rows whose next-day label is known, with the schema columns and their source."""
    labelled = observations[observations[schema.RAIN_TOMORROW].notna()]
    return labelled[[*schema.COLUMNS, "source"]].reset_index(drop=True)


def run(settings: Settings, params: Params | None = None) -> int:
    """Export the labelled rows of the raw store to `catalog.PROCESSED`; their count."""
    observations = store.read_observations(store.connect(settings.raw_store_url))
    labelled = labelled_rows(observations)
    catalog.save_frame(settings.project_dir, catalog.PROCESSED, labelled)
    log.info("processed %d labelled rows of %d", len(labelled), len(observations))
    return len(labelled)
