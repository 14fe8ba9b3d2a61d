"""The served model: the registry champion, loaded at start, swapped without downtime.

`ModelHolder.refresh()` resolves the `champion` alias; when it points at a new version it
loads that version, checks it can predict a known row, and only then swaps the reference
that request handlers read (one attribute assignment: requests in flight finish on the
model they started with). Any failure (registry down, broken artifact) is logged and the
current model keeps serving.

A new version first serves through XGBoost; its trees are then compiled to native code in
the background (`raincast.serving.compiled`, cached per host) and, once the compiled
library matches XGBoost on probe rows, the same version is swapped in again with it. A
model that cannot be compiled (no compiler, an old model with a category encoder) keeps
serving through XGBoost; ``/model`` says which evaluator answers and why.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raincast.features import build_matrix
from raincast.models.pyfunc import predict_frame
from raincast.serving.compiled import (
    CompiledTrees,
    CompileError,
    cached_library,
    check_parity,
    compile_trees,
    probe_matrix,
)
from raincast.settings import Settings

log = logging.getLogger(__name__)

ALIAS = "champion"
#: From this many rows a prediction uses every core (below, one thread per request).
ALL_CORES_ROWS = 256

#: A known-good raw row: a freshly loaded model must score it before it is swapped in.
PROBE_ROW = {
    "Date": "2017-06-24",
    "Location": "Sydney",
    "MinTemp": 8.0,
    "MaxTemp": 17.5,
    "Rainfall": 0.2,
    "Humidity9am": 70.0,
    "Humidity3pm": 55.0,
    "Pressure9am": 1020.1,
    "Pressure3pm": 1018.0,
    "WindGustDir": "W",
    "RainToday": "No",
}


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    booster: Any
    threshold: float
    run_id: str | None
    trained_at: str | None
    metrics: dict[str, float]
    batch_booster: Any = None  # a copy using every core, for large batches
    compiled: CompiledTrees | None = None  # the same trees as native code, once built
    compile_error: str | None = None
    loaded_at: float = field(default_factory=time.time)
    #: ``X-Model-Name`` / ``X-Model-Version`` of every 200 prediction, encoded once here
    #: so the hot path only passes them on.
    response_headers: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        headers = model_headers(self.name, self.version)
        object.__setattr__(self, "response_headers", headers)  # frozen: set once, here

    @property
    def evaluator(self) -> str:
        """What evaluates the trees: ``compiled`` (TL2cgen) or ``xgboost``."""
        return "compiled" if self.compiled is not None else "xgboost"

    @property
    def header_dict(self) -> dict[str, str]:
        """`response_headers` as strings, for responses built by FastAPI."""
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.response_headers}

    def predict(self, raw: pd.DataFrame) -> pd.DataFrame:
        """The pipeline's own batch path (pandas features, DMatrix)."""
        return predict_frame(self.booster, raw, self.threshold)

    def predict_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """P(rain) for rows already in model-matrix form; every core from
        `ALL_CORES_ROWS` rows on."""
        large = len(matrix) >= ALL_CORES_ROWS
        if self.compiled is not None:
            return self.compiled.predict(matrix, all_cores=large)
        booster = self.batch_booster if large else self.booster
        return np.asarray(booster.inplace_predict(matrix), dtype=np.float64)

    def predict_records(self, records: list[dict[str, Any]]) -> np.ndarray:
        """P(rain) for a few validated rows without pandas (`features.build_matrix`),
        identical values to the pipeline's path (tests/serving parity)."""
        return self.predict_matrix(build_matrix(records))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "alias": ALIAS,
            "threshold": self.threshold,
            "run_id": self.run_id,
            "trained_at": self.trained_at,
            "loaded_at": datetime.fromtimestamp(self.loaded_at, UTC).isoformat(),
            "metrics": self.metrics,
            "evaluator": self.evaluator,
            "compile_error": self.compile_error,
        }


def model_headers(name: str, version: str) -> tuple[tuple[bytes, bytes], ...]:
    """The ASGI response headers naming a model version (lower-case names, latin-1 values
    as HTTP wants; a character outside it becomes ``?``)."""
    return (
        (b"x-model-name", name.encode("latin-1", "replace")),
        (b"x-model-version", version.encode("latin-1", "replace")),
    )


def compiled_cache_dir(settings: Settings) -> Path:
    """``settings.api_model_cache``, else ``<home>/compiled-models``, else a temp folder
    when the home is read-only (a container's)."""
    configured = settings.api_model_cache
    if configured == Path():  # an empty RAINCAST_API_MODEL_CACHE: not configured
        configured = None
    for candidate in (
        configured or settings.state_dir / "compiled-models",
        Path(tempfile.gettempdir()) / "raincast-compiled-models",
    ):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    raise CompileError("no writable folder for compiled models")


class ModelHolder:
    """Holds the current champion; thread-safe refresh, lock-free reads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reloads = 0
        self.compile = settings.api_compile

    def refresh(self, force: bool = False) -> str:
        """Load the champion if it changed (or ``force``). Returns what happened."""
        with self._lock:
            try:
                version = self._champion_version()
                if not force and self.current is not None and self.current.version == version:
                    return f"unchanged: version {version}"
                model = self._load(version)
                model.predict(pd.DataFrame([PROBE_ROW]))  # a broken artifact fails here
                model.predict_records([PROBE_ROW])
                model.predict_matrix(build_matrix([PROBE_ROW]))
            except Exception as err:
                self.last_error = f"{type(err).__name__}: {err}"
                kept = self.current.version if self.current else "none"
                log.warning(
                    "champion refresh failed (%s); keeping version %s", self.last_error, kept
                )
                return f"failed: {self.last_error}; serving version {kept}"
            before = self.current.version if self.current else None
            if self.compile:
                model = self._with_cached_library(model)
            self.current = model
            self.last_error = None
            self.reloads += 1
            log.info(
                "serving %s version %s through %s (was %s)",
                model.name,
                model.version,
                model.evaluator,
                before,
            )
        if self.compile and model.compiled is None:
            threading.Thread(
                target=self._compile, args=(model,), name="compile-champion", daemon=True
            ).start()
        return f"loaded: version {model.version} (was {before})"

    def _with_cached_library(self, model: LoadedModel) -> LoadedModel:
        """The model with its compiled trees when this host already built them."""
        try:
            lib = cached_library(compiled_cache_dir(self.settings), _model_json(model))
            if lib is None:
                return model
            return self._attach(model, CompiledTrees.load(lib, model.booster.num_features()))
        except Exception as err:  # a broken cache entry: compile again in the background
            log.warning("cached compiled model unusable (%s)", err)
            return model

    @staticmethod
    def _attach(model: LoadedModel, compiled: CompiledTrees) -> LoadedModel:
        diff = check_parity(compiled, model.booster, probe_matrix())
        log.info("compiled trees match XGBoost (max |diff| %.1e on probe rows)", diff)
        return replace(model, compiled=compiled, compile_error=None)

    def _compile(self, model: LoadedModel) -> None:
        """Compile ``model``'s trees; swap them in if it is still the one serving."""
        t0 = time.perf_counter()
        try:
            lib = compile_trees(_model_json(model), compiled_cache_dir(self.settings))
            upgraded = self._attach(model, CompiledTrees.load(lib, model.booster.num_features()))
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
            log.warning("serving version %s through XGBoost: %s", model.version, reason)
            upgraded = replace(model, compile_error=reason)
        with self._lock:
            if self.current is not None and self.current.version == model.version:
                self.current = upgraded
        log.info(
            "version %s now served through %s (%.1f s to compile)",
            model.version,
            upgraded.evaluator,
            time.perf_counter() - t0,
        )

    def _champion_version(self) -> str:
        from raincast.models import tracking

        client = tracking.configure(self.settings)
        return str(client.get_model_version_by_alias(self.settings.model_name, ALIAS).version)

    def _load(self, version: str) -> LoadedModel:
        import mlflow

        from raincast.models import tracking

        client = tracking.configure(self.settings)
        mv = client.get_model_version(self.settings.model_name, version)
        pyfunc = mlflow.pyfunc.load_model(f"models:/{self.settings.model_name}/{version}")
        inner = pyfunc.unwrap_python_model()
        # One thread per prediction: requests run concurrently on the 2 cores, and
        # XGBoost's thread fan-out costs more than it saves on a handful of rows.
        batch_booster = inner.booster.copy()
        inner.booster.set_param({"nthread": 1})
        metrics: dict[str, float] = {}
        trained_at = None
        if mv.run_id:
            run = client.get_run(mv.run_id)
            metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}
            trained_at = datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat()
        return LoadedModel(
            name=self.settings.model_name,
            version=str(version),
            booster=inner.booster,
            threshold=float(inner.threshold),
            run_id=mv.run_id,
            trained_at=trained_at,
            metrics=metrics,
            batch_booster=batch_booster,
        )

    def wait_compiled(self, timeout: float) -> bool:
        """Until the current model is compiled or failed to (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.current
            if model is not None and (model.compiled is not None or model.compile_error):
                return model.compiled is not None
            time.sleep(0.1)
        return False

    def start_polling(self, interval_s: float) -> threading.Thread:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.refresh()

        thread = threading.Thread(target=loop, name="champion-poll", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def _model_json(model: LoadedModel) -> bytes:
    return bytes(model.booster.save_raw("json"))
