"""Behavioural tests of a small trained model: it works, it moves the right way, it is
consistent, and its tuned threshold is worth having."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pytest
from testbed.params_file import train_params

from raincast import schema
from raincast.data import store
from raincast.features import FeatureError, label_vector
from raincast.models.metrics import classification_metrics
from raincast.models.train import FittedModel, best_f1_threshold, fit, predict_proba
from raincast.sources.synthetic import SyntheticSource

STATIONS = (
    "Adelaide", "AliceSprings", "Brisbane", "Cairns", "Canberra",
    "Darwin", "Hobart", "Melbourne", "Perth", "Sydney",
)  # fmt: skip
PARAMS = train_params(
    seed=7,
    early_stopping_rounds=30,
    xgb={
        "n_estimators": 200,
        "learning_rate": 0.1,
        "max_depth": 4,
        "min_child_weight": 5,
        "tree_method": "hist",
        "max_cat_to_onehot": 1,
        "n_jobs": 2,
    },
)


@dataclass(frozen=True)
class Trained:
    model: FittedModel
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


@pytest.fixture(scope="module")
def trained() -> Trained:
    """Train on 2015 to mid-2016, validate on late 2016, test on 2017 (10 stations)."""
    df = SyntheticSource(seed=11, stations=STATIONS).fetch(date(2015, 1, 1), date(2017, 12, 31))
    df[schema.RAIN_TOMORROW] = store.next_day_labels(df)
    df = df[df[schema.RAIN_TOMORROW].notna()].reset_index(drop=True)
    train = df[df[schema.DATE] < "2016-07-01"].reset_index(drop=True)
    validation = df[df[schema.DATE].between("2016-07-01", "2016-12-31")].reset_index(drop=True)
    test = df[df[schema.DATE] >= "2017-01-01"].reset_index(drop=True)
    return Trained(fit(train, validation, PARAMS), train, validation, test)


def _proba(t: Trained, rows: pd.DataFrame) -> np.ndarray:
    return predict_proba(t.model.booster, rows)


def test_minimum_functionality_on_a_later_year(trained: Trained) -> None:
    p = _proba(trained, trained.test)
    assert p.shape == (len(trained.test),)
    assert ((p >= 0) & (p <= 1)).all()
    m = classification_metrics(label_vector(trained.test), p, trained.model.threshold)
    assert m["roc_auc"] > 0.8
    assert m["f1"] > 0.5
    # Early stopping kept a proper ensemble, not a stub or the whole budget by accident.
    assert 5 <= trained.model.best_iteration < 200
    assert trained.model.booster.num_boosted_rounds() == trained.model.best_iteration + 1


def test_rain_today_and_no_rain_today_differ(trained: Trained) -> None:
    p = _proba(trained, trained.test)
    wet = trained.test[schema.RAIN_TODAY] == "Yes"
    dry = trained.test[schema.RAIN_TODAY] == "No"
    assert p[wet.to_numpy()].mean() > p[dry.to_numpy()].mean() + 0.1


def test_more_afternoon_humidity_and_cloud_never_lower_rain_chances(trained: Trained) -> None:
    rows = trained.test
    wetter = rows.copy()
    wetter["Humidity3pm"] = (wetter["Humidity3pm"] + 20).clip(upper=100)
    wetter["Cloud3pm"] = (wetter["Cloud3pm"] + 3).clip(upper=8)
    before, after = _proba(trained, rows), _proba(trained, wetter)

    assert after.mean() > before.mean() + 0.05  # raised on average, clearly
    assert (after > before).mean() > 0.75  # for most rows
    # The mean never goes down, neither for any station nor for any month.
    frame = pd.DataFrame(
        {
            "station": rows[schema.LOCATION],
            "month": rows[schema.DATE].str[:7],
            "delta": after - before,
        }
    )
    assert (frame.groupby("station")["delta"].mean() >= 0).all()
    assert (frame.groupby("month")["delta"].mean() >= 0).all()


def test_drier_afternoon_lowers_rain_chances(trained: Trained) -> None:
    rows = trained.test
    drier = rows.copy()
    drier["Humidity3pm"] = (drier["Humidity3pm"] - 20).clip(lower=0)
    assert _proba(trained, drier).mean() < _proba(trained, rows).mean() - 0.03


def test_one_row_at_a_time_equals_batch(trained: Trained) -> None:
    rows = trained.test.sample(40, random_state=0)
    batch = _proba(trained, rows)
    single = np.array([_proba(trained, rows.iloc[[i]])[0] for i in range(len(rows))])
    np.testing.assert_allclose(single, batch, atol=1e-6, rtol=0)


def test_row_order_and_label_column_do_not_matter(trained: Trained) -> None:
    rows = trained.test.head(200)
    p = _proba(trained, rows)
    shuffled = rows.sample(frac=1.0, random_state=1)
    p_shuffled = pd.Series(_proba(trained, shuffled), index=shuffled.index).sort_index()
    np.testing.assert_allclose(p_shuffled.to_numpy(), p, atol=1e-6, rtol=0)
    unlabelled = rows.drop(columns=[schema.RAIN_TOMORROW])
    np.testing.assert_allclose(_proba(trained, unlabelled), p, atol=1e-6, rtol=0)


def test_station_name_is_required(trained: Trained) -> None:
    rows = trained.test.head(5)
    with pytest.raises(FeatureError, match="Location is required"):
        _proba(trained, rows.drop(columns=[schema.LOCATION]))
    with pytest.raises(FeatureError, match="unknown station"):
        _proba(trained, rows.assign(Location="Springfield"))


def test_only_date_and_location_still_scores(trained: Trained) -> None:
    p = _proba(trained, trained.test[[schema.DATE, schema.LOCATION]].head(10))
    assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()


def test_tuned_threshold_beats_the_default_on_validation(trained: Trained) -> None:
    y = label_vector(trained.validation)
    p = _proba(trained, trained.validation)
    threshold, f1 = best_f1_threshold(y, p)
    assert 0.0 < threshold < 1.0
    at_best = classification_metrics(y, p, threshold)["f1"]
    at_half = classification_metrics(y, p, 0.5)["f1"]
    assert at_best >= at_half
    assert f1 == pytest.approx(at_best, abs=1e-9)
    # fit() stored the same threshold and F1.
    assert trained.model.threshold == pytest.approx(threshold)
    assert trained.model.validation_f1 == pytest.approx(f1)


def test_best_f1_threshold_on_a_tiny_example() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.3, 0.35, 0.8, 0.4, 0.9])
    threshold, f1 = best_f1_threshold(y, p)
    assert threshold == pytest.approx(0.35)  # catches every rain day, one false alarm
    assert f1 == pytest.approx(2 * 0.75 * 1.0 / 1.75)


@pytest.mark.parametrize("max_bin", [32, 1024])
def test_max_bin_from_params_reaches_the_training_matrix(trained: Trained, max_bin: int) -> None:
    """A non-default ``max_bin`` in params.yaml trains (the quantile matrix is binned the same
    way as the booster; before, XGBoost stopped with "Inconsistent `max_bin`"), refit too."""
    params = PARAMS.model_copy(
        update={
            "xgb": PARAMS.xgb.model_copy(update={"max_bin": max_bin}),
            "refit_rounds_factor": 1.1,
        }
    )
    model = fit(trained.train, trained.validation, params)
    config = model.booster.save_config()
    assert f'"max_bin":"{max_bin}"' in config
    p = predict_proba(model.booster, trained.test)
    assert classification_metrics(label_vector(trained.test), p, model.threshold)["roc_auc"] > 0.8
