"""One home through the pyfunc: the shortcuts its path takes give the answers of the general path."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest

from homeprice_model import INPUT_FIELDS
from homeprice_model.features import frame_columns

from .conftest import Small


def test_market_index_of_one_home_equals_the_array_path(small: Small) -> None:
    """``MarketIndex.value`` on one row (Python floats) against two rows (NumPy), every location and a
    month grid from before training to past the forecast horizon; damped, and with a single knot."""
    index = small.model.index
    damped = copy.deepcopy(index)
    damped.params = dataclasses.replace(index.params, damping=0.9, max_horizon=5)
    one_knot = copy.deepcopy(index)
    one_knot.knots = index.knots[:1]
    one_knot.location_dev = {k: v[:1] for k, v in index.location_dev.items()}
    months = np.arange(index.first_month - 30, index.last_month + 40, 0.5)
    for idx in (index, damped, one_knot):
        for loc in [*list(idx.location_dev)[:15], "nowhere"]:
            one = [idx.value(np.array([loc], dtype=object), np.array([t]))[0] for t in months]
            two = [idx.value(np.array([loc, loc], dtype=object), np.array([t, t]))[0] for t in months]
            np.testing.assert_allclose(one, two, rtol=0, atol=1e-12)


def _variants(row: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The same home in the dtypes callers hand the pyfunc."""
    numeric = [c for c in row.columns if c not in ("location", "sale_date")]
    return {
        "as trained": row,
        "object columns": row.astype(object),
        "nullable numbers, text": row.astype({c: "Float64" for c in numeric}).astype({"location": "string"}),
        "dates as text": row.assign(sale_date=row["sale_date"].dt.strftime("%Y-%m-%d")),
        "integer areas": row.assign(living_sf=row["living_sf"].round().astype("int64")),
        "a missing value": row.assign(beds=np.nan, lot_sf=None),
        "no date": row.drop(columns="sale_date"),
        "reordered, with an extra column": row[row.columns[::-1]].assign(note="x"),
    }


@pytest.mark.parametrize("i", [0, 7])
def test_one_home_in_any_dtype_prices_as_its_columns(small: Small, i: int) -> None:
    row = small.inputs.iloc[[i]]
    for name, frame in _variants(row).items():
        cols = frame_columns(frame)
        assert set(cols) == set(frame.columns) & {*INPUT_FIELDS, "parcel_id"}, name
        expected = small.model.predict_columns({c: frame[c].to_list() for c in cols})
        got = small.model.predict(None, frame)
        for c in ("price", "price_lower", "price_upper"):
            np.testing.assert_allclose(got[c].to_numpy(), expected[c], rtol=1e-12, err_msg=name)
        assert got.index.equals(frame.index), name
