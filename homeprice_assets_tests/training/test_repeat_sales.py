"""Repeat sales: the parcel's previous sale as a feature, never from the same or a later month."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from homeprice_model.repeat_sales import REPEAT_FEATURES, LastSales, previous_sales, repeat_features

from .conftest import Fitted


def test_previous_sale_is_strictly_earlier_and_per_parcel() -> None:
    parcels = ["a", "b", "a", "a", None, "a", "b"]
    months = [10, 10, 12, 12, 12, 20, 9]
    log_prices = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    prev_month, prev_price = previous_sales(parcels, months, log_prices)
    # a@10 first; both a@12 see only a@10 (not each other); a@20 sees the last of month 12 (row 3)
    np.testing.assert_array_equal(prev_month, [np.nan, 9.0, 10.0, 10.0, np.nan, 12.0, np.nan])
    np.testing.assert_array_equal(prev_price, [np.nan, 7.0, 1.0, 1.0, np.nan, 4.0, np.nan])


def test_last_sales_lookup_small_and_large_paths_and_pickle() -> None:
    table = LastSales.from_sales(["a", "b", "a", None], [10, 11, 15, 16], [1.0, 2.0, 3.0, 4.0])
    assert len(table) == 2
    months, prices = table.lookup(["a", "zz", None, "b"], 4)
    np.testing.assert_array_equal(months, [15.0, np.nan, np.nan, 11.0])
    np.testing.assert_array_equal(prices, [3.0, np.nan, np.nan, 2.0])
    many = ["b", "a", "x"] * 40  # more than the dict path's size: pandas' indexer
    big_months, _ = table.lookup(many, len(many))
    np.testing.assert_array_equal(big_months, [11.0, 15.0, np.nan] * 40)
    again = pickle.loads(pickle.dumps(table))
    assert again._lookup is None and again.lookup(["a"], 1)[0].tolist() == [15.0]
    assert table.lookup(None, 2)[0].tolist() == pytest.approx([np.nan, np.nan], nan_ok=True)


class FlatIndex:
    def value(self, locations: np.ndarray, months: np.ndarray) -> np.ndarray:
        return 0.01 * np.asarray(months, dtype=float)


def test_features_only_for_a_previous_sale_before_the_valued_month() -> None:
    feats = repeat_features(
        np.array([10.0, 20.0, 20.0, np.nan]),
        np.array([12.0, 13.0, 13.0, 14.0]),
        np.array([20.0, 20.0, 30.0, 30.0]),
        np.array(["x"] * 4, dtype=object),
        FlatIndex(),
    )
    np.testing.assert_allclose(feats["prev_sale_resid"], [12.0 - 0.1, np.nan, 13.0 - 0.2, np.nan])
    np.testing.assert_array_equal(feats["months_since_prev_sale"], [10.0, np.nan, 10.0, np.nan])


def test_fitted_model_uses_the_parcels_last_training_sale(fitted: Fitted) -> None:
    model = fitted.model
    assert set(REPEAT_FEATURES) <= set(model.feature_names) and "parcel_id" in model.input_fields
    train, rows = fitted.split.train, fitted.split.validation
    assert len(model.last_sales) == train["parcel_id"].nunique()
    inputs = rows[list(model.input_fields)].reset_index(drop=True)
    repeat = inputs["parcel_id"].isin(set(train["parcel_id"])).to_numpy()
    assert 0.05 < repeat.mean() < 0.5
    with_parcel = model.predict(None, inputs)
    without = model.predict(None, inputs.drop(columns="parcel_id"))
    assert np.allclose(with_parcel["price"][~repeat], without["price"][~repeat], rtol=1e-12)
    assert not np.allclose(with_parcel["price"][repeat], without["price"][repeat])
    # the columnar path takes parcel_id too, and agrees with the batch path
    columns = {c: inputs[c].to_numpy() for c in inputs.columns}
    np.testing.assert_allclose(model.predict_columns(columns)["price"], with_parcel["price"], rtol=1e-9)
    # no leakage: valued in (or before) the month of the parcel's last training sale, it is not used
    i = int(np.flatnonzero(repeat)[0])
    parcel = inputs.loc[i, "parcel_id"]
    last_month = pd.Timestamp(train.loc[train["parcel_id"] == parcel, "sale_date"].max())
    back = inputs.iloc[[i]].assign(sale_date=last_month)
    feats = model.feature_arrays({c: back[c].to_numpy() for c in back.columns})
    assert np.isnan(feats["prev_sale_resid"][0]) and np.isnan(feats["months_since_prev_sale"][0])
    later = model.feature_arrays({c: inputs.iloc[[i]][c].to_numpy() for c in inputs.columns})
    assert later["months_since_prev_sale"][0] >= 1
