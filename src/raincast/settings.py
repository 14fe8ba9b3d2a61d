"""Infrastructure settings from the environment (``RAINCAST_*``); tunables live in params.yaml."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where raincast keeps its state and which servers it talks to.

    Defaults are the embedded, one-machine setup: everything under ``var/`` in the
    project directory, MLflow on a SQLite file, no server to start by hand.
    """

    model_config = SettingsConfigDict(env_prefix="RAINCAST_", env_file=".env", extra="ignore")

    project_dir: Path = Field(
        default_factory=Path.cwd, description="Folder with dvc.yaml and params.yaml."
    )
    home: Path | None = Field(
        default=None, description="Runtime state folder; default <project_dir>/var."
    )
    store_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the raw store; default SQLite under home."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default SQLite under home."
    )
    mlflow_artifact_root: str | None = Field(
        default=None, description="Artifact root for new experiments (embedded mode only)."
    )
    experiment: str = "raincast"
    model_name: str = "rain-tomorrow"
    openmeteo_url: str = "https://api.open-meteo.com/v1/forecast"
    openmeteo_archive_url: str = "https://archive-api.open-meteo.com/v1/archive"
    http_timeout_s: float = 30.0
    http_retries: int = 5
    http_cache_ttl_s: int = 6 * 3600

    @cached_property
    def state_dir(self) -> Path:
        return (self.home or self.project_dir / "var").resolve()

    @property
    def data_dir(self) -> Path:
        """DVC-managed stage outputs (processed data, models, metrics, plots)."""
        return self.project_dir / "data"

    @property
    def landing_dir(self) -> Path:
        return self.state_dir / "landing"

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "http-cache"

    @property
    def raw_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.state_dir / 'raincast.db'}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or (self.state_dir / "mlartifacts").as_uri()

    @property
    def lock_dir(self) -> Path:
        return self.state_dir / "locks"
