"""The unpickle shim for the removed comparable-sales feature: a version pickled with it must still load and
answer its two features, or a rollback to such a ``previous`` version would fail."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from homeprice_assets.training.comparables import KM_PER_DEG_LAT, Comparables
from homeprice_model.model import HomePriceModel


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


def test_a_model_pickled_with_comparables_answers_its_features() -> None:
    lat, lon, values = grid()
    legacy = object.__new__(HomePriceModel)
    legacy.comparables = pickle.loads(pickle.dumps(Comparables(k=2).fit(lat, lon, values)))
    feats = {"latitude": lat[[4]], "longitude": lon[[4]]}
    np.testing.assert_allclose(legacy._extra(feats, "comp_log_ppsf"), [3.5])
    np.testing.assert_allclose(legacy._extra(feats, "comp_dist_km"), [0.5], atol=1e-9)
    legacy.comparables = None  # a model of today: the features are gone, and saying so names the feature
    with pytest.raises(KeyError, match="comp_log_ppsf"):
        legacy._extra(feats, "comp_log_ppsf")
