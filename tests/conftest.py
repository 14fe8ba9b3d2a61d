"""Shared, small fixtures: synthetic raw rows, isolated settings and the real-data folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from raincast.settings import Settings
from raincast.sources.synthetic import SyntheticSource

STATIONS: tuple[str, ...] = ("Darwin", "Perth", "Sydney")

#: The container stack (tests/e2e/stack) runs only under `make test-stack`, which sets this.
collect_ignore = [] if os.environ.get("RAINCAST_STACK_TESTS") == "1" else ["e2e/stack"]

RawRows = Callable[..., pd.DataFrame]


@pytest.fixture(scope="session")
def raw_rows() -> RawRows:
    """Factory: conformed weatherAUS rows for ``n_days`` days from ``start`` at ``stations``."""

    def make(
        n_days: int = 3,
        stations: Sequence[str] = STATIONS,
        start: date = date(2020, 1, 1),
        seed: int = 0,
    ) -> pd.DataFrame:
        source = SyntheticSource(seed=seed, stations=stations)
        return source.fetch(start, start + timedelta(days=n_days - 1))

    return make


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose state (store, landing area, locks) lives under tmp_path."""
    return Settings(project_dir=tmp_path, home=tmp_path / "var", store_url=None)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (the real weatherAUS files); skips the test when it is absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip("../shared/data not present: real-data tests need the weatherAUS files")
    return path
