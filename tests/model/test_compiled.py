"""Compiled trees for serving (`raincast.serving.compiled`): the pipeline's model compiles,
predicts what XGBoost predicts (1e-6) on synthetic and real rows, is compiled once per host,
and every way compiling can fail leaves XGBoost serving."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from testbed.params_file import train_params

from raincast import schema
from raincast.features import build_features, build_matrix, label_vector
from raincast.models.train import fit
from raincast.serving import compiled as comp
from tests.helpers import labelled_rows

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "weatherAUS.csv.gz"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs a C compiler (gcc)")


def _records(raw: pd.DataFrame) -> list[dict[str, object]]:
    return json.loads(raw.drop(columns=[schema.RAIN_TOMORROW], errors="ignore").to_json(
        orient="records"
    ))  # fmt: skip


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    stations = ("Sydney", "Perth", "Darwin", "Hobart", "Uluru", "Cairns")
    raw = labelled_rows(stations, 8, date(2019, 1, 1), date(2020, 12, 31))
    return raw.drop(columns=["source"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def booster(rows: pd.DataFrame) -> xgb.Booster:
    """A model from the pipeline's own `fit` (depth 5, up to 40 rounds)."""
    train, val = rows[rows[schema.DATE] < "2020-07-01"], rows[rows[schema.DATE] >= "2020-07-01"]
    params = train_params(
        seed=1, early_stopping_rounds=10, xgb={"n_estimators": 40, "max_depth": 5, "n_jobs": 1}
    )
    return fit(train, val, params).booster


@pytest.fixture(scope="module")
def library(booster: xgb.Booster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return comp.compile_trees(bytes(booster.save_raw("json")), tmp_path_factory.mktemp("cache"))


def test_the_pipeline_model_compiles_and_predicts_like_xgboost(
    booster: xgb.Booster, library: Path, rows: pd.DataFrame
) -> None:
    trees = comp.CompiledTrees.load(library)
    matrix = build_matrix(_records(rows))
    expected = booster.inplace_predict(matrix)
    for all_cores in (False, True):
        got = trees.predict(matrix, all_cores=all_cores)
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) <= 1e-6
    assert comp.check_parity(trees, booster, comp.probe_matrix()) <= comp.PARITY_TOLERANCE
    one = trees.predict(matrix[:1])
    assert abs(float(one[0]) - float(expected[0])) <= 1e-6


@pytest.mark.needs_data
def test_compiled_predictions_equal_xgboost_on_real_rows(
    booster: xgb.Booster, library: Path
) -> None:
    if not SHARED.exists():
        pytest.skip(f"real data not found at {SHARED}")
    real = schema.read_weather_csv(SHARED).sample(20_000, random_state=1)
    matrix = build_matrix(_records(real))
    trees = comp.CompiledTrees.load(library, booster.num_features())
    got = trees.predict(matrix, all_cores=True)
    assert np.max(np.abs(got - booster.inplace_predict(matrix))) <= 1e-6
    # The row-by-row path (small requests) runs the same generated code: same bits.
    head = matrix[:3000]
    assert np.array_equal(trees.predict_direct(head), trees.predict_with_predictor(head))


def test_rows_up_to_the_direct_limit_skip_the_predictor(
    booster: xgb.Booster, library: Path, rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    trees = comp.CompiledTrees.load(library)
    matrix = build_matrix(_records(rows))[: comp.DIRECT_ROWS + 1]
    expected = booster.inplace_predict(matrix)

    def no_predictor(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Predictor was used")

    monkeypatch.setattr(comp.CompiledTrees, "predict_with_predictor", no_predictor)
    small = trees.predict(matrix[: comp.DIRECT_ROWS])
    assert np.max(np.abs(small - expected[: comp.DIRECT_ROWS])) <= 1e-6
    with pytest.raises(AssertionError, match="Predictor was used"):
        trees.predict(matrix)


def test_a_library_built_for_other_features_is_refused(booster: xgb.Booster, library: Path) -> None:
    features = booster.num_features()
    assert comp.CompiledTrees.load(library, features).library == library
    with pytest.raises(comp.CompileError, match=f"takes {features} features, not {features + 1}"):
        comp.CompiledTrees.load(library, features + 1)


def test_a_second_compile_of_the_same_model_is_the_cached_library(
    booster: xgb.Booster, library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tl2cgen

    def no_compiling(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(tl2cgen, "export_lib", no_compiling)
    model_json = bytes(booster.save_raw("json"))
    assert comp.compile_trees(model_json, library.parent) == library
    assert comp.cached_library(library.parent, model_json) == library
    assert comp.cached_library(library.parent, model_json + b" ") is None


def test_a_model_carrying_pandas_category_encoder_is_refused_clearly(
    rows: pd.DataFrame, tmp_path: Path
) -> None:
    # How models were trained before: pandas categoricals, so XGBoost stores an encoder.
    old = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(build_features(rows), label_vector(rows), enable_categorical=True),
        5,
    )
    with pytest.raises(comp.CompileError, match="Treelite cannot read"):
        comp.compile_trees(bytes(old.save_raw("json")), tmp_path)


def test_a_compile_that_was_killed_is_not_tried_again(
    booster: xgb.Booster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gcc needs ~0.5 GB per job: in a container under its memory limit the OOM killer can
    take the whole API down mid-compile. The marker left behind stops a crash loop."""
    import tl2cgen

    model_json = bytes(booster.save_raw("json"))
    marker = tmp_path / f"{comp.library_key(model_json)}.attempt"
    marker.touch()  # what a killed compile leaves
    monkeypatch.setattr(tl2cgen, "export_lib", lambda *a, **k: pytest.fail("compiled again"))
    with pytest.raises(comp.CompileError, match="earlier compile of this model did not finish"):
        comp.compile_trees(model_json, tmp_path)
    marker.unlink()  # the operator's way to try again: a handled failure leaves no marker
    monkeypatch.setattr(tl2cgen, "export_lib", _raise_tl2cgen_error)
    with pytest.raises(comp.CompileError, match="compiling the trees failed"):
        comp.compile_trees(model_json, tmp_path)
    assert not marker.exists()


def _raise_tl2cgen_error(*args: object, **kwargs: object) -> None:
    import tl2cgen

    raise tl2cgen.TL2cgenError("gcc: fatal error")


def test_no_compiler_is_a_compile_error(
    booster: xgb.Booster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(comp.shutil, "which", lambda _: None)
    with pytest.raises(comp.CompileError, match="no C compiler"):
        comp.compile_trees(bytes(booster.save_raw("json")), tmp_path)


@pytest.mark.parametrize("path", ["predict_direct", "predict_with_predictor"])
def test_compiled_trees_that_disagree_with_xgboost_are_refused(
    booster: xgb.Booster, library: Path, path: str
) -> None:
    skew = getattr(comp.CompiledTrees, path)

    def skewed(self: comp.CompiledTrees, matrix: np.ndarray, *args: object) -> np.ndarray:
        return skew(self, matrix, *args) + 1e-4  # type: ignore[no-any-return]

    Skewed = type("Skewed", (comp.CompiledTrees,), {path: skewed})
    with pytest.raises(comp.CompileError, match="differ from XGBoost"):
        comp.check_parity(Skewed(library), booster, comp.probe_matrix())


# --- the API's model holder ---------------------------------------------------------------


def _holder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from raincast.serving.model import ModelHolder
    from raincast.settings import Settings
    from tests.helpers import train_small_model

    settings = Settings(
        project_dir=tmp_path, home=tmp_path / "var", api_model_cache=tmp_path / "compiled"
    )
    train_small_model(settings, ("Sydney", "Perth"), n_estimators=20)
    return settings, ModelHolder(settings)


def test_the_holder_serves_through_xgboost_then_swaps_in_the_compiled_trees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raincast.serving.model import PROBE_ROW, ModelHolder

    settings, holder = _holder(tmp_path, monkeypatch)
    holder.refresh()
    first = holder.current
    assert first is not None and first.evaluator == "xgboost"
    assert holder.wait_compiled(300), holder.current and holder.current.compile_error
    now = holder.current
    assert now is not None and now.evaluator == "compiled" and now.version == first.version
    rows = [PROBE_ROW, {**PROBE_ROW, "Location": "Perth", "Rainfall": None}]
    assert np.max(np.abs(now.predict_records(rows) - first.predict_records(rows))) <= 1e-6
    assert now.describe()["evaluator"] == "compiled"
    # Another worker of the same host finds the library built: compiled from the start.
    other = ModelHolder(settings)
    other.refresh()
    assert other.current is not None and other.current.evaluator == "compiled"


def test_the_holder_keeps_serving_through_xgboost_when_compiling_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raincast.serving.model import PROBE_ROW

    monkeypatch.setattr(comp.shutil, "which", lambda _: None)
    _, holder = _holder(tmp_path, monkeypatch)
    holder.refresh()
    assert holder.wait_compiled(60) is False
    model = holder.current
    assert model is not None and model.evaluator == "xgboost"
    assert model.compile_error and "no C compiler" in model.compile_error
    assert 0.0 <= float(model.predict_records([PROBE_ROW])[0]) <= 1.0
