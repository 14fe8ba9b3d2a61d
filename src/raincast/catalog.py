"""The catalog: every file a pipeline step reads or writes, and which step owns it.

One name per artifact (a noun: ``processed``, ``test_metrics``), its path relative to the
project folder, and how it is read and written. Steps load their inputs and save their
outputs through here, never by spelling a path; ``dvc.yaml`` mirrors `STAGES` (the stage's
data deps, outs, metrics and plots), and ``tests/unit/test_catalog.py`` checks that they agree.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from raincast.settings import Settings

Format = Literal["parquet", "json", "text", "csv", "booster"]
#: How DVC tracks an output: cached `outs`, or uncached `metrics`/`plots`/`outs`.
Role = Literal["out", "metric", "plot", "uncached_out"]


@dataclass(frozen=True)
class Artifact:
    name: str
    path: Path
    format: Format
    #: For plots: the columns DVC draws (x, y) and its template.
    plot: dict[str, str] = field(default_factory=dict)

    def at(self, root: Path) -> Path:
        """This artifact's file in the project folder ``root``."""
        return root / self.path


def _a(name: str, path: str, fmt: Format, **plot: str) -> Artifact:
    return Artifact(name, Path(path), fmt, plot)


MANIFEST = _a("store_manifest", "data/raw/store_manifest.json", "json")
PROCESSED = _a("processed", "data/processed/observations.parquet", "parquet")
TRAIN = _a("train", "data/split/train.parquet", "parquet")
VALIDATION = _a("validation", "data/split/validation.parquet", "parquet")
TEST = _a("test", "data/split/test.parquet", "parquet")
WINDOWS = _a("windows", "data/split/windows.json", "json")
DRIFT_REPORT = _a("drift_report", "data/drift/report.html", "text")
DRIFT = _a("drift", "data/drift/drift.json", "json")
BOOSTER = _a("booster", "data/model/model.ubj", "booster")
MODEL_META = _a("model_meta", "data/model/meta.json", "json")
TRAINED = _a("trained", "data/model/train.json", "json")
VALIDATION_METRICS = _a("validation_metrics", "data/metrics/validation.json", "json")
TEST_METRICS = _a("test_metrics", "data/metrics/test.json", "json")
STATION_AUC = _a("station_auc", "data/metrics/station_auc.json", "json")
ROC = _a("roc", "data/plots/roc.csv", "csv", x="fpr", y="tpr")
PR = _a("pr", "data/plots/pr.csv", "csv", x="recall", y="precision")
CALIBRATION = _a("calibration", "data/plots/calibration.csv", "csv", x="predicted", y="observed")
IMPORTANCE = _a(
    "importance",
    "data/plots/importance.csv",
    "csv",
    x="gain",
    y="feature",
    template="bar_horizontal",
)
#: The folders whose files go to the MLflow run as a whole.
DRIFT_DIR = DRIFT.path.parent
PLOTS_DIR = ROC.path.parent

# --- backtest results (outside DVC: `raincast backtest` writes them, the API reads them) -----
# File names inside `Settings.backtest_results_dir` (or the command's --out folder).

#: The result: run metadata, per-policy summary, retrains and the per-day rows.
BACKTEST_RESULT = "backtest.json"
#: The same without the per-day rows (the committed benchmark, ``bench/results``).
BACKTEST_SUMMARY = "backtest_summary.json"
#: The plots: rolling live scores per policy, the retrains, the compute.
BACKTEST_PLOTS = ("backtest_rolling.png", "backtest_retrains.png", "backtest_compute.png")


@dataclass(frozen=True)
class Stage:
    """A DVC stage's data: what it reads, and what it writes in which role."""

    reads: tuple[Artifact, ...]
    writes: tuple[tuple[Artifact, Role], ...]
    #: The params.yaml sections it reads.
    params: tuple[str, ...] = ()


#: The DVC stages, in pipeline order; each is `raincast <name>` and a module in `raincast.steps`.
STAGES: dict[str, Stage] = {
    "process": Stage(reads=(MANIFEST,), writes=((PROCESSED, "out"),)),
    "split": Stage(
        reads=(PROCESSED,),
        writes=((TRAIN, "out"), (VALIDATION, "out"), (TEST, "out"), (WINDOWS, "metric")),
        params=("split",),
    ),
    "drift": Stage(
        reads=(PROCESSED, WINDOWS),
        writes=((DRIFT_REPORT, "out"), (DRIFT, "metric")),
        params=("drift",),
    ),
    "train": Stage(
        reads=(DRIFT, TRAIN, VALIDATION, WINDOWS),
        writes=(
            (BOOSTER, "out"),
            (MODEL_META, "out"),
            (TRAINED, "uncached_out"),
            (VALIDATION_METRICS, "metric"),
        ),
        params=("train",),
    ),
    "evaluate": Stage(
        reads=(TEST, BOOSTER, TRAINED),
        writes=(
            (TEST_METRICS, "metric"),
            (STATION_AUC, "metric"),
            (ROC, "plot"),
            (PR, "plot"),
            (CALIBRATION, "plot"),
            (IMPORTANCE, "plot"),
        ),
    ),
}


# --- readers and writers ---------------------------------------------------------------------


def load_frame(root: Path, artifact: Artifact) -> pd.DataFrame:
    """A parquet artifact as a DataFrame; a missing file names the step that makes it."""
    return pd.read_parquet(_existing(root, artifact))


def load_json(root: Path, artifact: Artifact) -> Any:
    return json.loads(_existing(root, artifact).read_text())


def save_frame(root: Path, artifact: Artifact, frame: pd.DataFrame) -> Path:
    path = _parent(root, artifact)
    frame.to_parquet(path, index=False)
    return path


def save_json(root: Path, artifact: Artifact, body: Any) -> Path:
    path = _parent(root, artifact)
    path.write_text(json.dumps(body, indent=2, sort_keys=True, default=str) + "\n")
    return path


def save_text(root: Path, artifact: Artifact, text: str) -> Path:
    path = _parent(root, artifact)
    path.write_text(text)
    return path


def save_csv(root: Path, artifact: Artifact, frame: pd.DataFrame) -> Path:
    path = _parent(root, artifact)
    frame.to_csv(path, index=False)
    return path


def producer(artifact: Artifact) -> str:
    """The step that writes ``artifact`` (the manifest: `validate`, outside DVC)."""
    for name, stage in STAGES.items():
        if any(written is artifact for written, _ in stage.writes):
            return name
    return "validate"


def _existing(root: Path, artifact: Artifact) -> Path:
    path = artifact.at(root)
    if not path.exists():
        raise FileNotFoundError(
            f"{artifact.path} does not exist yet: run `raincast {producer(artifact)}` first"
        )
    return path


def _parent(root: Path, artifact: Artifact) -> Path:
    path = artifact.at(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --- the landing area (outside DVC: one parquet file per fetched date, under the home) ------

#: Key of the landing metadata inside the parquet file's schema metadata.
_META_KEY = b"raincast.landing"


class LandingError(ValueError):
    """A landing file cannot be read; the message names it and says to fetch again."""


def landing_paths(settings: Settings, logical_date: date) -> tuple[Path, Path]:
    """The landing file of a date and its human-readable metadata (validate reads the
    metadata embedded in the parquet file; the JSON is for people and older tools)."""
    base = settings.landing_dir / logical_date.isoformat()
    return base.with_suffix(".parquet"), base.with_suffix(".json")


def replace_atomically(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` (same folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_landing(path: Path, df: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Write a landing file: the rows and their metadata in one parquet file, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()}
    )
    replace_atomically(path, lambda tmp: pq.write_table(table, tmp))


def load_landing(settings: Settings, logical_date: date) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The landed batch of a date and its metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data_path, meta_path = landing_paths(settings, logical_date)
    again = f"fetch it again (`raincast fetch --date {logical_date}`)"
    if not data_path.exists():
        raise FileNotFoundError(
            f"nothing fetched for {logical_date} ({data_path} is missing): "
            f"run `raincast fetch --date {logical_date}`"
        )
    try:
        table = pq.read_table(data_path)
        embedded = (table.schema.metadata or {}).get(_META_KEY)
        meta = json.loads(embedded) if embedded else json.loads(meta_path.read_text())
        lacking = [k for k in ("source", "start", "end") if k not in meta]
        if lacking:
            raise KeyError(f"metadata lacks {lacking}")
        date.fromisoformat(meta["start"])
        date.fromisoformat(meta["end"])
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError) as err:
        raise LandingError(
            f"landing file {data_path} is unreadable ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'}); {again}"
        ) from None
    return table.to_pandas(), meta
