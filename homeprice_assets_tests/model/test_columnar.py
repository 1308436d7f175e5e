"""The columnar single-home path equals the DataFrame (batch) path on real rows, to 1e-9."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from homeprice_assets.training.tracking import coerce_inputs
from homeprice_model import FEATURES, INPUT_FIELDS, feature_columns, make_features
from homeprice_model.features import frame_columns
from homeprice_model.model import _ONE_THREAD_ROWS

from .conftest import Small

PRICES = ("price", "price_lower", "price_upper")


def columns_of(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy() for c in frame.columns}


def assert_same(batch: pd.DataFrame, columns: dict[str, np.ndarray]) -> None:
    for c in PRICES:
        np.testing.assert_allclose(columns[c], batch[c].to_numpy(), rtol=1e-9, atol=0)


def test_columns_equal_batch_on_validation_rows(small: Small) -> None:
    rows = small.inputs
    assert len(rows) > 500
    assert_same(small.model.predict(None, rows), small.model.predict_columns(columns_of(rows)))
    # an independent reference: LightGBM's own pandas path (categorical location), averaged over the
    # bagged boosters, plus the index and the hedonic offset
    model = small.model
    assert len(model.boosters) == 3  # bagging_seeds
    feats = model.features(rows)
    trees = np.mean([b.predict(feats[model.feature_names]) for b in model.boosters], axis=0)
    reference = trees + model.index.value(
        feats["location"].astype(str).to_numpy(), feats["months_since_origin"].to_numpy()
    )
    assert model.hedonic is not None  # on by default
    reference = reference + model.hedonic.value(feats)
    np.testing.assert_allclose(model.predict_log_columns(columns_of(rows)), reference, rtol=1e-12)
    # TreeSHAP of the bagged boosters (their mean) with the index and the offset sums to the log price
    contrib = model.explain(rows.head(300))
    np.testing.assert_allclose(contrib.sum(axis=1), reference[:300], rtol=0, atol=1e-9)
    # and row by row, as the service prices single homes (small-frame and single-row paths)
    batch = small.model.predict(None, rows.head(40))
    for i in range(40):
        one = small.model.predict_columns({c: [rows[c].iloc[i]] for c in INPUT_FIELDS})
        np.testing.assert_allclose(one["price"], batch["price"].iloc[[i]], rtol=1e-9)
        assert one["price_lower"][0] < one["price"][0] < one["price_upper"][0]


def test_a_large_batch_on_every_core_prices_as_small_batches(small: Small) -> None:
    """Above ``_ONE_THREAD_ROWS`` rows LightGBM predicts on every core; each row must price as in a
    one-thread batch."""
    rows = small.train[list(INPUT_FIELDS)].reset_index(drop=True)
    assert len(rows) > 2 * _ONE_THREAD_ROWS
    whole = small.model.predict_log_columns(columns_of(rows))
    step = _ONE_THREAD_ROWS // 2
    chunks = [rows.iloc[i : i + step] for i in range(0, len(rows), step)]
    parts = [small.model.predict_log_columns(columns_of(chunk)) for chunk in chunks]
    np.testing.assert_allclose(whole, np.concatenate(parts), rtol=1e-12, atol=0)


def test_missing_optional_fields_and_no_sale_date(small: Small) -> None:
    rows = small.inputs.head(300).copy()
    rows.loc[rows.index[::3], "beds"] = np.nan
    rows.loc[rows.index[1::4], "lot_sf"] = np.nan
    rows.loc[rows.index[::5], "sale_date"] = pd.NaT
    sparse = rows.drop(columns=["bldg_grade", "eff_age"])
    batch = small.model.predict(None, sparse)
    assert_same(batch, small.model.predict_columns(columns_of(sparse)))
    # lists with None, as JSON decodes them
    as_lists = {c: [None if pd.isna(v) else v for v in sparse[c].tolist()] for c in sparse.columns}
    assert_same(batch, small.model.predict_columns(as_lists))
    undated = sparse.drop(columns="sale_date")
    at_reference = sparse.assign(sale_date=small.model.reference_date)
    assert_same(small.model.predict(None, at_reference), small.model.predict_columns(columns_of(undated)))
    assert_same(small.model.predict(None, undated), small.model.predict_columns(columns_of(undated)))
    # dates as ISO text (a JSON request) read as the same months
    texts = sparse.assign(sale_date=sparse["sale_date"].dt.strftime("%Y-%m-%d"))
    assert_same(batch, small.model.predict_columns(columns_of(texts)))
    assert np.isfinite(batch["price"]).all()


def test_feature_columns_equal_make_features(small: Small) -> None:
    rows = small.validation
    table = make_features(rows)
    assert list(table.columns) == list(FEATURES)
    cols = feature_columns(columns_of(rows[[c for c in INPUT_FIELDS]]))
    for name in FEATURES:
        if name == "location":
            assert (cols[name] == table[name].to_numpy()).all()
        else:
            np.testing.assert_array_equal(cols[name], table[name].to_numpy(dtype=float))
    # a frame's arrays read straight from its blocks are the values of its columns
    few, many = frame_columns(rows.head(3)), {c: rows[c].head(3).to_numpy() for c in INPUT_FIELDS}
    for name in FEATURES:
        a, b = feature_columns(few)[name], feature_columns(many)[name]
        assert (a == b).all() if name == "location" else np.array_equal(a, b, equal_nan=True)


def test_loaded_pyfunc_equals_the_columnar_path(small: Small, saved: Path) -> None:
    pyfunc = mlflow.pyfunc.load_model(str(saved))
    inner = pyfunc.unwrap_python_model()
    rows = coerce_inputs(small.inputs.head(200))
    served = pyfunc.predict(rows)
    assert_same(served, inner.predict_columns(columns_of(rows)))
    one = pyfunc.predict(rows.head(1))
    assert_same(one, small.model.predict_columns({c: rows[c].to_numpy()[:1] for c in rows.columns}))


def test_unknown_location_and_empty_input(small: Small) -> None:
    row = {c: [v] for c, v in small.inputs.iloc[0].items()}
    out = small.model.predict_columns({**row, "location": ["nowhere"], "lot_sf": [None]})
    assert np.isfinite(out["price"]).all()
    empty = small.model.predict_columns({c: [] for c in INPUT_FIELDS})
    assert set(empty) == {"price", "price_lower", "price_upper"}
    assert all(len(v) == 0 for v in empty.values())


@pytest.mark.parametrize("level", [0.5, 0.95])
def test_interval_level_on_both_paths(small: Small, level: float) -> None:
    rows = small.inputs.head(50)
    batch = small.model.predict(None, rows, params={"interval_level": level})
    assert_same(batch, small.model.predict_columns(columns_of(rows), interval_level=level))


def test_renovated_is_unknown_when_either_age_is_missing() -> None:
    """A home whose data has no effective age is not "never renovated": the trees route it as missing."""
    cols = feature_columns(
        {"age": [50.0, 50.0, 50.0, np.nan, None], "eff_age": [20.0, 50.0, np.nan, 20.0, 20.0]}
    )
    np.testing.assert_array_equal(cols["renovated"], [1.0, 0.0, np.nan, np.nan, np.nan])
    assert cols["renovated"].dtype == float
