"""MLflow wiring: where runs go, and lineage facts about the code and data."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from raincast.settings import Settings


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured server (or the embedded SQLite file) and the experiment."""
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if client.get_experiment_by_name(settings.experiment) is None:
        # Embedded mode keeps artifacts in a local folder; a tracking server decides its own.
        location = settings.artifact_root if not uri.startswith("http") else None
        client.create_experiment(settings.experiment, artifact_location=location)
    mlflow.set_experiment(settings.experiment)
    return client


def git_sha(project_dir: Path) -> str:
    """HEAD commit (with '-dirty' when the tree has changes), or 'unknown' outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=project_dir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project_dir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def file_md5(path: Path) -> str:
    """MD5 of a file, the same digest DVC records for an output."""
    h = hashlib.md5()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
