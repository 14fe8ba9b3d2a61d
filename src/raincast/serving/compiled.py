"""The champion's trees compiled to native code for serving (Treelite + TL2cgen + gcc).

XGBoost's ``inplace_predict`` has a fixed cost of ~0.6 ms per call (measured on the real
champion, 296 depth-8 trees, one row, one thread), while walking the trees takes a few
microseconds. Treelite reads the XGBoost model and TL2cgen writes it out as C (one
``if``/``else`` nest per tree), which gcc turns into a shared library. A few rows call the
library's per-row ``predict`` directly through ctypes (TL2cgen's Predictor adds ~20 us of
fixed cost per call, more than walking the trees); larger matrices go through the
Predictor on one or every core. Both give the same numbers as XGBoost to float32 rounding
(max |diff| ~7e-7 on the real test slice; every compiled library is checked against
XGBoost on probe rows, through both paths, before it serves, see `check_parity`).

Compiling takes tens of seconds of CPU (gcc on ~9 MB of C), so libraries are cached on
disk by model content, one compile per host under a file lock (every API worker of the
host shares it), and the API compiles in the background while XGBoost answers
(`raincast.serving.model`). Without Treelite/TL2cgen or a C compiler, `compile_trees`
raises `CompileError` and the API keeps serving with XGBoost.

Treelite 4.8 refuses XGBoost models that carry pandas' category encoder; models trained
on `raincast.features.model_matrix` (integer category codes) carry none.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

log = logging.getLogger(__name__)

#: gcc optimisation level for the generated C. Measured on the real champion (2 cores):
#: -O0 compiles in ~11 s but walks ~2x slower; -O1 ~30 s; -O2/-O3 take 70-110 s for
#: batch throughput within noise of -O1.
COMPILER_OPTIONS: tuple[str, ...] = ("-O1",)
#: The C translation units per model (compiled in parallel by gcc processes).
TRANSLATION_UNITS = 8
#: Largest |compiled - XGBoost| probability accepted on the probe rows (float32 rounding
#: of a sum of ~300 leaves is ~1e-7; a wrong split would show as far more).
PARITY_TOLERANCE = 1e-6
#: Niceness of the compiler processes, so serving keeps the CPU while gcc runs.
COMPILER_NICENESS = 10


class CompileError(RuntimeError):
    """The model could not be compiled (library, compiler or model not supported)."""


#: Up to this many rows a prediction calls the library's per-row ``predict`` directly
#: (ctypes, ~5 us of overhead per call); from here on TL2cgen's Predictor, whose fixed
#: cost (~20-40 us: DMatrix, its thread pool) is repaid by its batch loop.
DIRECT_ROWS = 32
#: TL2cgen's ``union Entry`` marks a missing feature with the integer -1.
_MISSING = -1


@dataclass(frozen=True)
class CompiledTrees:
    """A compiled model: P(rain) per row of the model matrix, on one or on every core.

    A few rows go straight to the generated C function ``predict(union Entry*, int,
    float*)`` (re-entrant: no state outside its arguments); larger matrices go through
    TL2cgen's Predictor. A Predictor may be used by one thread at a time (its docs), so
    each thread gets its own pair (one thread for small requests, every core for large
    batches). Both paths give the same float32 sums (tests/model/test_compiled.py)."""

    library: Path
    _local: threading.local = field(default_factory=threading.local, repr=False)

    @classmethod
    def load(cls, library: Path, features: int | None = None) -> CompiledTrees:
        """Open ``library``; `CompileError` when it is unusable or was built for another
        number of features than ``features``."""
        compiled = cls(library)
        compiled._predictor(all_cores=False)  # fails here if the library is unusable
        built_for = int(compiled._native.get_num_feature())
        if features is not None and built_for != features:
            raise CompileError(f"{library.name} takes {built_for} features, not {features}")
        return compiled

    @functools.cached_property
    def _native(self) -> ctypes.CDLL:
        native = ctypes.CDLL(str(self.library))
        native.predict.restype = None
        native.predict.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        native.get_num_feature.restype = ctypes.c_int32
        return native

    def _predictor(self, all_cores: bool) -> Any:
        import tl2cgen

        key = "all" if all_cores else "one"
        predictor = getattr(self._local, key, None)
        if predictor is None:
            nthread = (os.cpu_count() or 1) if all_cores else 1
            predictor = tl2cgen.Predictor(str(self.library), nthread=nthread)
            setattr(self._local, key, predictor)
        return predictor

    def predict(self, matrix: np.ndarray, all_cores: bool = False) -> np.ndarray:
        """P(rain) for the rows of ``matrix`` (float64, `FEATURE_COLUMNS` order)."""
        if len(matrix) <= DIRECT_ROWS:
            return self.predict_direct(matrix)
        return self.predict_with_predictor(matrix, all_cores)

    def predict_direct(self, matrix: np.ndarray) -> np.ndarray:
        """Row by row through the generated ``predict``: the entries are the matrix as
        float32 (what the trees compare) with -1 in place of each NaN (missing)."""
        entries = np.ascontiguousarray(matrix, dtype=np.float32)
        entries.view(np.int32)[np.isnan(entries)] = _MISSING
        out = np.zeros(len(entries), dtype=np.float32)  # predict adds to it
        row, step, result = entries.ctypes.data, entries.strides[0], out.ctypes.data
        predict = self._native.predict
        for i in range(len(entries)):
            predict(row + i * step, 0, result + 4 * i)
        return out.astype(np.float64)

    def predict_with_predictor(self, matrix: np.ndarray, all_cores: bool = False) -> np.ndarray:
        import tl2cgen

        out = self._predictor(all_cores).predict(tl2cgen.DMatrix(matrix, dtype="float64"))
        return out.reshape(len(matrix)).astype(np.float64)


def _versions() -> str:
    try:
        return f"treelite {version('treelite')} tl2cgen {version('tl2cgen')}"
    except PackageNotFoundError as err:
        raise CompileError(f"{err.name} is not installed (pip extra `serve`)") from None


def library_key(model_bytes: bytes) -> str:
    """Cache key of a compiled library: the model's bytes, the tool versions, the flags."""
    h = hashlib.sha256(model_bytes)
    h.update(f"{_versions()} {' '.join(COMPILER_OPTIONS)} {TRANSLATION_UNITS}".encode())
    return h.hexdigest()[:32]


def cached_library(cache_dir: Path, model_bytes: bytes) -> Path | None:
    """The compiled library of this model if this host already built it."""
    try:
        lib = cache_dir / f"{library_key(model_bytes)}.so"
    except CompileError:
        return None
    return lib if lib.exists() else None


def compile_trees(model_json: bytes, cache_dir: Path) -> Path:
    """Compile an XGBoost model (its JSON) to a shared library in ``cache_dir``, or return
    the one already there. One compile per host: concurrent callers wait on a file lock."""
    key = library_key(model_json)
    if shutil.which("gcc") is None:
        raise CompileError("no C compiler (gcc) on PATH")
    cache_dir.mkdir(parents=True, exist_ok=True)
    lib = cache_dir / f"{key}.so"
    with FileLock(str(cache_dir / f"{key}.lock"), timeout=900):
        if lib.exists():
            return lib
        # A compile that was killed (out of memory: gcc needs ~0.5 GB per job) leaves this
        # marker: the next start serves through XGBoost instead of crash-looping.
        attempt = cache_dir / f"{key}.attempt"
        if attempt.exists():
            raise CompileError(
                f"an earlier compile of this model did not finish (killed, e.g. out of "
                f"memory); serving through XGBoost. Delete {attempt} to try again"
            )
        attempt.touch()
        # Any error below is handled (CompileError): the marker goes. Only a killed process
        # leaves it behind.
        try:
            _compile_into(model_json, lib, cache_dir, key)
        finally:
            attempt.unlink(missing_ok=True)
    log.info("compiled the model's trees to %s", lib)
    return lib


def _compile_into(model_json: bytes, lib: Path, cache_dir: Path, key: str) -> None:
    """Treelite reads the model, TL2cgen writes C, gcc builds ``lib`` (atomic rename)."""
    try:
        import tl2cgen
        import treelite
    except ImportError as err:
        raise CompileError(f"{err.name} is not installed (pip extra `serve`)") from None
    try:
        model = treelite.frontend.from_xgboost_json(model_json.decode())
    except treelite.TreeliteError as err:
        raise CompileError(f"Treelite cannot read this model: {err}") from None
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".{key}.") as tmp:
        built = Path(tmp) / "model.so"

        def export() -> None:
            tl2cgen.export_lib(
                model,
                toolchain="gcc",
                libpath=str(built),
                params={"parallel_comp": TRANSLATION_UNITS},
                nthread=os.cpu_count() or 1,
                options=list(COMPILER_OPTIONS),
            )

        try:
            _at_low_priority(export)
        except tl2cgen.TL2cgenError as err:
            raise CompileError(f"compiling the trees failed: {err}") from None
        os.replace(built, lib)  # atomic: readers never see half a library


def _at_low_priority(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a thread of its own at `COMPILER_NICENESS`: on Linux niceness is per
    thread and the compiler processes that thread starts inherit it."""
    failure: list[BaseException] = []

    def run() -> None:
        # Not Linux or not allowed: compile at normal priority.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), COMPILER_NICENESS)
        try:
            fn()
        except BaseException as err:
            failure.append(err)

    thread = threading.Thread(target=run, name="compile-trees")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def check_parity(compiled: CompiledTrees, booster: Any, matrix: np.ndarray) -> float:
    """Max |compiled - XGBoost| on ``matrix`` through both compiled paths (row by row and
    the Predictor); `CompileError` above `PARITY_TOLERANCE`."""
    expected = np.asarray(booster.inplace_predict(matrix), dtype=np.float64)
    diff = max(
        float(np.max(np.abs(compiled.predict_direct(matrix) - expected))),
        float(np.max(np.abs(compiled.predict_with_predictor(matrix) - expected))),
    )
    if not diff <= PARITY_TOLERANCE:
        raise CompileError(f"compiled trees differ from XGBoost by {diff:.2e} on probe rows")
    return diff


def probe_matrix(rows: int = 256, seed: int = 0) -> np.ndarray:
    """Model-matrix rows drawn across every input's range, categories and missing values:
    enough paths through the trees to catch a compiled split that differs."""
    from raincast import schema
    from raincast.features import build_matrix

    rng = np.random.default_rng(seed)
    stations = schema.station_names()
    records: list[dict[str, object]] = []
    for _ in range(rows):
        row: dict[str, object] = {
            schema.DATE: f"2020-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}",
            schema.LOCATION: stations[rng.integers(len(stations))],
        }
        for col, (lo, hi) in schema.NUMERIC_RANGES.items():
            row[col] = None if rng.random() < 0.2 else float(rng.uniform(lo, hi))
        for col in schema.DIRECTION_COLUMNS:
            points = schema.COMPASS_POINTS
            row[col] = None if rng.random() < 0.2 else points[rng.integers(len(points))]
        records.append(row)
    return build_matrix(records)
