"""Temporal split: the past trains, the recent past validates, the most recent tests."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest
from testbed.params_file import train_params

from raincast import schema
from raincast.data import store
from raincast.models.train import fit
from raincast.params import SplitParams
from raincast.steps.split import split_by_time
from tests.conftest import RawRows

FIRST, LAST = date(2017, 1, 1), date(2019, 12, 31)


@pytest.fixture(scope="module")
def labelled(raw_rows: RawRows) -> pd.DataFrame:
    """3 years x 3 stations with next-day labels; the last day stays unlabelled and is dropped."""
    df = raw_rows(n_days=(LAST - FIRST).days + 1, start=FIRST)
    df[schema.RAIN_TOMORROW] = store.next_day_labels(df)
    return df[df[schema.RAIN_TOMORROW].notna()].reset_index(drop=True)


def _dates(part: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(part[schema.DATE]).dt.date


def test_relative_split_takes_test_then_validation_from_the_end(labelled: pd.DataFrame) -> None:
    params = SplitParams(test_days=200, validation_days=100, min_train_rows=100)
    train, val, test, windows = split_by_time(labelled, params)
    last = max(_dates(labelled))
    test_start = last - timedelta(days=199)
    val_start = test_start - timedelta(days=100)

    assert min(_dates(test)) == test_start and max(_dates(test)) == last
    assert min(_dates(val)) == val_start and max(_dates(val)) == test_start - timedelta(days=1)
    assert max(_dates(train)) < val_start
    assert max(_dates(train)) < min(_dates(val)) and max(_dates(val)) < min(_dates(test))
    assert not set(train[schema.DATE]) & set(val[schema.DATE])
    assert not set(val[schema.DATE]) & set(test[schema.DATE])
    assert len(train) + len(val) + len(test) == len(labelled)  # nothing lost, nothing twice
    assert windows.test == (test_start.isoformat(), last.isoformat())
    assert windows.validation[0] == val_start.isoformat()
    assert windows.train[0] == FIRST.isoformat()
    assert list(train.index) == list(range(len(train)))  # fresh indexes


def test_absolute_dates_win_over_day_counts(labelled: pd.DataFrame) -> None:
    params = SplitParams(
        validation_start=date(2018, 3, 1),
        test_start=date(2019, 5, 1),
        test_days=7,
        validation_days=7,
        min_train_rows=100,
    )
    train, val, test, windows = split_by_time(labelled, params)
    assert windows.validation == ("2018-03-01", "2019-04-30")
    assert windows.test[0] == "2019-05-01"
    assert windows.train[1] == "2018-02-28"
    assert len(test) > 7 * 3  # far more than test_days would give
    assert max(_dates(train)) < date(2018, 3, 1) <= min(_dates(val))
    assert max(_dates(val)) < date(2019, 5, 1) <= min(_dates(test))


def test_only_test_start_given_puts_validation_before_it(labelled: pd.DataFrame) -> None:
    params = SplitParams(test_start=date(2019, 6, 1), validation_days=30, min_train_rows=100)
    _, _, _, windows = split_by_time(labelled, params)
    assert windows.validation == ("2019-05-02", "2019-05-31")


def test_empty_validation_slice_raises(labelled: pd.DataFrame) -> None:
    gap = labelled[~labelled[schema.DATE].between("2018-06-01", "2018-12-31")]
    params = SplitParams(
        validation_start=date(2018, 6, 1), test_start=date(2019, 1, 1), min_train_rows=100
    )
    with pytest.raises(ValueError, match=r"^validation slice is empty"):
        split_by_time(gap, params)


def test_empty_test_slice_raises(labelled: pd.DataFrame) -> None:
    params = SplitParams(
        validation_start=date(2019, 6, 1), test_start=date(2021, 1, 1), min_train_rows=100
    )
    with pytest.raises(ValueError, match=r"^test slice is empty; check split params"):
        split_by_time(labelled, params)


def test_too_few_train_rows_raises(labelled: pd.DataFrame) -> None:
    params = SplitParams(test_days=365, validation_days=365, min_train_rows=5000)
    with pytest.raises(
        ValueError, match=r"train slice has \d+ rows, fewer than min_train_rows=5000"
    ):
        split_by_time(labelled, params)


def test_validation_start_not_before_test_start_raises(labelled: pd.DataFrame) -> None:
    params = SplitParams(validation_start=date(2019, 6, 1), test_start=date(2019, 6, 1))
    with pytest.raises(ValueError, match="must be before test_start"):
        split_by_time(labelled, params)


def test_no_rows_raises() -> None:
    with pytest.raises(ValueError, match="no labelled rows"):
        split_by_time(schema.empty_frame(), SplitParams())


def test_unlabelled_rows_pass_the_split_but_training_refuses_them(
    labelled: pd.DataFrame,
) -> None:
    # split_by_time does not look at labels: unlabelled rows stay in their slice...
    rows = labelled.copy()
    rows.loc[rows[schema.DATE] == "2017-03-01", schema.RAIN_TOMORROW] = None
    params = SplitParams(test_days=200, validation_days=100, min_train_rows=100)
    train, val, test, _ = split_by_time(rows, params)
    assert len(train) + len(val) + len(test) == len(rows)
    assert train[schema.RAIN_TOMORROW].isna().sum() == 3
    # ...and the trainer refuses to use them rather than treating them as "No".
    with pytest.raises(ValueError, match="unlabelled rows"):
        fit(train, val, train_params(xgb={"n_estimators": 2}))
