"""`raincast airflow`'s setup reads the DVC pool from the DAGs' one definition."""

from __future__ import annotations

from pathlib import Path

import pytest

from raincast import local_airflow
from raincast.settings import Settings

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_the_pool_is_the_one_the_dags_define() -> None:
    assert local_airflow.dvc_pool(DAGS) == "raincast_dvc"


def test_a_dags_folder_without_the_constant_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / local_airflow.DAG_CONSTANTS).write_text('OTHER_POOL = "x"\n')
    with pytest.raises(LookupError, match="no DVC_POOL constant"):
        local_airflow.dvc_pool(tmp_path)


def test_the_admin_password_is_the_settings_one_or_generated_once(tmp_path: Path) -> None:
    given = Settings(project_dir=tmp_path, home=tmp_path / "var", airflow_password="from-env")
    assert local_airflow.admin_password(given) == "from-env"
    unset = Settings(project_dir=tmp_path, home=tmp_path / "var", airflow_password=None)
    generated = local_airflow.admin_password(unset)
    assert generated not in ("", "from-env")
    assert local_airflow.admin_password(unset) == generated  # kept under var/


def test_airflow_keeps_a_log_level_set_by_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(project_dir=tmp_path, home=tmp_path / "var", airflow_password="x")
    monkeypatch.delenv("AIRFLOW__LOGGING__LOGGING_LEVEL", raising=False)
    assert local_airflow.airflow_env(settings)["AIRFLOW__LOGGING__LOGGING_LEVEL"] == "INFO"
    monkeypatch.setenv("AIRFLOW__LOGGING__LOGGING_LEVEL", "DEBUG")
    monkeypatch.setenv("AIRFLOW__API__PORT", "9999")
    env = local_airflow.airflow_env(settings, port=8181)
    assert env["AIRFLOW__LOGGING__LOGGING_LEVEL"] == "DEBUG"
    assert env["AIRFLOW__API__PORT"] == "8181"  # the local wiring wins over the environment
