"""Infrastructure settings from the environment (``RAINCAST_*``); tunables live in params.yaml.

The one home of every ``RAINCAST_*`` variable the package reads: the edges (the CLI, the
API's start-up, the UI) build one `Settings` and pass it down; nothing below them reads
``os.environ``. ``.env.example`` documents each variable.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where raincast keeps its state and which servers it talks to.

    Defaults are the embedded, one-machine setup: everything under ``var/`` in the
    project directory, MLflow on a SQLite file, no server to start by hand.
    """

    model_config = SettingsConfigDict(
        env_prefix="RAINCAST_",
        env_file=".env",
        extra="ignore",
        # An empty variable (compose's ``${VAR:-}``) means "not set": the default applies.
        env_ignore_empty=True,
    )

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

    # --- logs, traces, job metrics (every process) ------------------------------------------
    log_level: str = Field(default="INFO", description="Python log level of every process.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per line (Loki/Alloy)."
    )
    otlp_endpoint: str = Field(
        default="", description="OTLP/HTTP traces endpoint (e.g. Tempo's); empty: no tracing."
    )
    trace_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    pushgateway_url: str = Field(
        default="", description="Prometheus Pushgateway for the batch jobs' gauges; empty: off."
    )
    run_id: str = Field(
        default="", description="The orchestrator's run id (Airflow sets it for each task)."
    )

    # --- the API (`raincast serve`, `bentoml serve`) ----------------------------------------
    api_workers: int | Literal["cpu_count"] = Field(
        default=1, description="Worker processes (each holds the model), or cpu_count."
    )
    api_max_concurrency: int | None = Field(
        default=None, gt=0, description="Requests in flight per service; default 16 per worker."
    )
    api_poll_s: float = Field(
        default=30.0,
        ge=0,
        description="How often a worker checks the registry's champion (s); 0: never "
        "(only /admin/reload swaps).",
    )
    api_access_log: bool = False
    api_public_prefix: str = Field(
        default="", description="Path prefix the API is published under (e.g. /api behind nginx)."
    )
    api_compile: bool = Field(default=True, description="Serve the champion as compiled trees.")
    api_model_cache: Path | None = Field(
        default=None, description="Compiled models folder; default <home>/compiled-models."
    )
    api_max_rows: int = Field(default=1000, gt=0, description="Rows per /predict request.")
    api_max_batch_rows: int = Field(
        default=100_000, gt=0, description="Rows per /predict_batch request."
    )
    api_max_body_bytes: int | None = Field(
        default=None, gt=0, description="Caps every path's body limit further (bytes)."
    )
    backtest_dir: Path | None = Field(
        default=None,
        description="Backtest results: `raincast backtest` writes them there, GET /backtest "
        "reads them; default <home>/backtest.",
    )

    # --- tokens and users (the API and `raincast users`) ------------------------------------
    jwt_secret: SecretStr = Field(
        default=SecretStr(""), description="HS256 signing key, at least 32 bytes (required)."
    )
    jwt_ttl_s: str = Field(default="900", description="Token lifetime, 60..86400 s.")
    jwt_issuer: str = "raincast"
    jwt_audience: str = "raincast-api"
    jwt_leeway_s: str = Field(default="30", description="Clock skew allowed, 0..60 s.")
    users_file: Path = Field(
        default=Path("var/users.json"), description="Users and argon2 hashes (JSON)."
    )

    # --- the UI ----------------------------------------------------------------------------
    api_url: str = Field(default="http://127.0.0.1:3000", description="Where the UI finds the API.")
    api_timeout_s: float = Field(default=60.0, gt=0)

    # --- `raincast up` / `raincast airflow` (the one-machine deployment) --------------------
    airflow_password: SecretStr | None = None
    mlflow_port: int = 5000
    airflow_port: int = 8080
    api_port: int = 3000
    ui_port: int = 8501
    prometheus_port: int = 9090
    pushgateway_port: int = 9091

    @property
    def api_worker_count(self) -> int:
        """Worker processes as a number (``cpu_count`` resolved on this machine)."""
        if isinstance(self.api_workers, int):
            return self.api_workers
        return os.cpu_count() or 1

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

    @property
    def backtest_results_dir(self) -> Path:
        """Where `raincast backtest` writes by default and the API's ``GET /backtest`` reads."""
        return self.backtest_dir or self.state_dir / "backtest"
