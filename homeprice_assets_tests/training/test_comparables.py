"""The unpickle shim for the removed comparable-sales feature: a version pickled with it must still load and
answer its two features, or a rollback to such a ``previous`` version would fail."""

from __future__ import annotations

import copy
import pickle

import lightgbm as lgb
import numpy as np
import pytest

from homeprice_assets.training.comparables import COMPS_FEATURES, KM_PER_DEG_LAT, Comparables
from homeprice_assets_tests.training.conftest import Fitted
from homeprice_model.features import frame_columns


def grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Five sales on a north-south line 1 km apart, each worth its row number."""
    lat = 47.6 + np.arange(5) / KM_PER_DEG_LAT
    return lat, np.full(5, -122.3), np.arange(5, dtype=float)


def test_comparables_are_the_nearest_sales_mean_value_and_distance() -> None:
    lat, lon, values = grid()
    comps = Comparables(k=2).fit(lat, lon, values)
    out = comps.transform(lat[[0]], lon[[0]])
    # nearest two to row 0: itself (0 km) and row 1 (1 km)
    np.testing.assert_allclose(out, [[0.5, 0.5]], atol=1e-9)
    # leaving the row itself out: rows 1 and 2
    np.testing.assert_allclose(comps.transform(lat[[0]], lon[[0]], self_rows=np.array([0])), [[1.5, 1.5]])
    # no coordinates: no comparables, not an error
    assert np.isnan(comps.transform(np.array([np.nan]), np.array([np.nan]))).all()
    # fewer sales than k: nothing to average
    assert np.isnan(Comparables(k=8).fit(lat, lon, values).transform(lat, lon)).all()


def test_a_model_pickled_with_comparables_loads_and_prices(fitted: Fitted) -> None:
    """A whole model as an older release pickled it (trees split on the two comparables features, the
    fitted ``Comparables`` on the model) still loads and prices through both serving paths, and its
    comparables reach the trees; without them the missing feature is named."""
    train = fitted.split.train.tail(3000)
    legacy = copy.copy(fitted.model)
    legacy.feature_names = [*fitted.model.feature_names, *COMPS_FEATURES]
    ppsf = np.log(train["sale_price"].to_numpy() / train["living_sf"].to_numpy())
    legacy.comparables = Comparables(k=8).fit(train["latitude"], train["longitude"], ppsf)
    x = legacy.design_matrix(legacy.feature_arrays(frame_columns(train), len(train)))
    assert np.isfinite(x[:, -2:]).all()
    target = np.log(train["sale_price"].to_numpy()) - ppsf.mean() - 0.5 * (ppsf - ppsf.mean())
    legacy.booster = lgb.train(
        {"objective": "l2", "num_leaves": 15, "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, target - legacy._index_values(legacy.feature_arrays(frame_columns(train)))),
        num_boost_round=30,
    )
    legacy.extra_boosters = None
    restored = pickle.loads(pickle.dumps(legacy))
    inputs = fitted.inputs.head(50)
    priced = restored.predict(None, inputs)["price"].to_numpy()
    assert np.isfinite(priced).all() and (priced > 0).all()
    np.testing.assert_allclose(restored.predict_columns(frame_columns(inputs))["price"], priced, rtol=1e-9)
    elsewhere = copy.copy(restored)  # the same homes with other comparables' values: other prices
    elsewhere.comparables = Comparables(k=8).fit(train["latitude"], train["longitude"], ppsf + 1.0)
    assert not np.allclose(elsewhere.predict(None, inputs)["price"].to_numpy(), priced)
    restored.comparables = None  # a model of today: the features are gone, and saying so names the feature
    with pytest.raises(KeyError, match="comp_log_ppsf"):
        restored.predict(None, inputs)
