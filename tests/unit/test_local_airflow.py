"""`raincast airflow`'s setup reads the DVC pool from the DAGs' one definition."""

from __future__ import annotations

from pathlib import Path

import pytest

from raincast import local_airflow

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_the_pool_is_the_one_the_dags_define() -> None:
    assert local_airflow.dvc_pool(DAGS) == "raincast_dvc"


def test_a_dags_folder_without_the_constant_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / local_airflow.DAG_CONSTANTS).write_text('OTHER_POOL = "x"\n')
    with pytest.raises(LookupError, match="no DVC_POOL constant"):
        local_airflow.dvc_pool(tmp_path)
