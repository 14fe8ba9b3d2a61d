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
    http_timeout_s: float = Field(
        default=30.0, gt=0, description="Read timeout of one HTTP socket operation (s)."
    )
    http_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Connect timeout of one HTTP attempt (s)."
    )
    http_deadline_s: float = Field(
        default=60.0,
        gt=0,
        description="Upper bound on one Open-Meteo request, retries, waits and body included.",
    )
    http_retries: int = Field(default=5, ge=0, description="Retries of a transient failure.")
    http_cache_ttl_s: int = 6 * 3600
    http_max_reply_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Largest Open-Meteo reply accepted (bytes)."
    )
    store_lock_timeout_s: float = Field(
        default=600.0,
        ge=0,
        description="How long validate/run wait for another writer's store lock (0: not at all).",
    )
    allow_mixed_sources: bool = Field(
        default=False,
        description="Let real and synthetic rows share one store (off: such a write is refused).",
    )

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
