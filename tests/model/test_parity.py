"""Train/serve parity: the pandas-free online feature path (`build_matrix`, used by the
API and by the logged model for small frames) equals the pipeline's `build_features`
value for value, and so do the predictions (to 1e-6)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from raincast import schema
from raincast.features import FEATURE_COLUMNS, build_features, build_matrix, label_vector
from raincast.models.pyfunc import SMALL_FRAME_ROWS, RainModel, predict_frame
from raincast.sources.synthetic import SyntheticSource

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "weatherAUS.csv.gz"


def _as_matrix(features: pd.DataFrame) -> np.ndarray:
    out = features.copy()
    for c in out.columns:
        if isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = out[c].cat.codes.replace(-1, np.nan).astype("float64")
    return out.to_numpy(dtype="float64")


def _records(raw: pd.DataFrame) -> list[dict[str, object]]:
    return json.loads(raw.to_json(orient="records"))  # what an API client sends (nulls)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    rows = SyntheticSource(seed=5).fetch(date(2020, 1, 1), date(2020, 12, 31))
    return rows.drop(columns=[schema.RAIN_TOMORROW]).reset_index(drop=True)


def _assert_same(expected: np.ndarray, got: np.ndarray) -> None:
    assert expected.shape == got.shape
    assert np.array_equal(np.isnan(expected), np.isnan(got))
    assert np.array_equal(np.nan_to_num(expected), np.nan_to_num(got))


def test_build_matrix_equals_build_features_on_synthetic_rows(raw: pd.DataFrame) -> None:
    _assert_same(_as_matrix(build_features(raw)), build_matrix(_records(raw)))


@pytest.mark.needs_data
def test_build_matrix_equals_build_features_on_real_rows() -> None:
    if not SHARED.exists():
        pytest.skip(f"real data not found at {SHARED}")
    real = schema.read_weather_csv(SHARED).sample(20_000, random_state=0)
    real = real.drop(columns=[schema.RAIN_TOMORROW]).reset_index(drop=True)
    _assert_same(_as_matrix(build_features(real)), build_matrix(_records(real)))


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    labelled = SyntheticSource(seed=6).fetch(date(2019, 1, 1), date(2019, 12, 31))
    labelled = labelled[labelled[schema.RAIN_TOMORROW].notna()]
    return xgb.train(
        {"objective": "binary:logistic", "max_depth": 5, "max_cat_to_onehot": 1, "nthread": 1},
        xgb.DMatrix(build_features(labelled), label_vector(labelled), enable_categorical=True),
        60,
    )


def test_predictions_match_between_paths_and_the_logged_model(
    raw: pd.DataFrame, booster: xgb.Booster
) -> None:
    batch = predict_frame(booster, raw, 0.3)["probability"].to_numpy()
    online = booster.inplace_predict(build_matrix(_records(raw)))
    assert np.max(np.abs(batch - online)) <= 1e-6
    model = RainModel()
    model.booster, model.threshold = booster, 0.3
    small = raw.head(SMALL_FRAME_ROWS)
    fast = model.predict(None, small)
    assert np.max(np.abs(fast["probability"].to_numpy() - batch[: len(small)])) <= 1e-6
    assert (fast["label"] == np.where(batch[: len(small)] >= 0.3, "Yes", "No")).all()


def test_small_frames_with_bad_rows_still_fail_clearly(
    raw: pd.DataFrame, booster: xgb.Booster
) -> None:
    from raincast.features import FeatureError

    model = RainModel()
    model.booster, model.threshold = booster, 0.3
    bad = raw.head(3).assign(Location=["Sydney", "Atlantis", "Perth"])
    with pytest.raises(FeatureError, match="unknown station"):
        model.predict(None, bad)
    assert len(FEATURE_COLUMNS) == build_matrix(_records(raw.head(1))).shape[1]
