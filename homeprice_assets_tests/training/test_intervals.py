"""Price intervals that widen with the horizon: scores kept with their months-ahead, widths per horizon."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from homeprice_assets.training import metrics as M
from homeprice_model.model import HomePriceModel

from .conftest import Fitted


def bare_model(
    scores: np.ndarray, horizons: np.ndarray | None, level: float = 0.8, monotone: str = "cummax"
) -> HomePriceModel:
    return HomePriceModel(
        booster=None,  # type: ignore[arg-type]
        index=None,
        feature_names=[],
        location_categories=[],
        calibration_scores=scores,
        interval_level=level,
        trained_through="2015-12",
        locations={},
        params={},
        calibration_horizons=horizons,
        horizon_monotone=monotone,
    )


def test_widths_grow_with_the_horizon_and_follow_the_level() -> None:
    rng = np.random.default_rng(0)
    horizons = np.repeat(np.arange(1, 13), 400).astype(float)
    scores = np.abs(rng.normal(0, 0.10 + 0.01 * horizons))  # error spread grows with months ahead
    model = bare_model(scores, horizons)
    widths = model.horizon_half_widths()
    assert len(widths) == 12
    assert np.all(np.diff(widths) >= 0) and widths[-1] > 1.5 * widths[0]
    # each width is the conformal quantile of the scores within one month of its horizon, up to the
    # isotonic fit's pooling of neighbouring horizons whose quantiles noise put out of order
    near = np.sort(scores[np.abs(horizons - 5) <= 1])
    assert widths[4] == pytest.approx(near[int(np.ceil((len(near) + 1) * 0.8)) - 1], rel=0.03)
    assert np.all(model.horizon_half_widths(0.9) > widths)
    # rows: months since 2010-01; trained through 2015-12 = month 71
    months = np.array([60.0, 71.0, 72.0, 77.0, 83.0, 120.0, np.nan])
    got = model.interval_half_widths(months)
    assert got.tolist() == [widths[0], widths[0], widths[0], widths[5], widths[11], widths[11], widths[0]]
    # scores are sorted with their horizons kept alongside
    assert np.all(np.diff(model.calibration_scores) >= 0)
    assert model.calibration_horizons[np.argmax(model.calibration_scores)] == horizons[np.argmax(scores)]
    with pytest.raises(ValueError, match="calibration_horizons"):
        bare_model(scores, horizons[:10])


def test_isotonic_widths_pool_a_high_early_month_where_the_running_maximum_kept_it() -> None:
    rng = np.random.default_rng(1)
    horizons = np.repeat(np.arange(1, 13), 1000).astype(float)
    spread = np.where(horizons == 1, 0.13, 0.10)  # one noisy wide month first, flat after
    scores = np.abs(rng.normal(0, spread))
    model = bare_model(scores, horizons, monotone="isotonic")
    widths = model.horizon_half_widths()
    assert np.all(np.diff(widths) >= 0)
    old = bare_model(scores, horizons)
    del old.__dict__["horizon_monotone"]  # a model pickled before: the class default, the running maximum
    old = pickle.loads(pickle.dumps(old))
    assert old.horizon_monotone == "cummax"
    running_max = old.horizon_half_widths()
    assert np.all(running_max == running_max[0])  # the first month's width everywhere
    assert widths[-1] < running_max[-1] - 0.01  # pooled: close to the flat months' 0.128 (0.10 x 1.28)
    assert widths[-1] == pytest.approx(0.128, abs=0.01)
    # the fit is the weighted least-squares monotone one: out-of-order pairs become their weighted mean
    from homeprice_model.model import isotonic

    np.testing.assert_allclose(isotonic(np.array([1.0, 3.0, 2.0, 4.0]), np.array([1.0, 1.0, 3.0, 1.0])),
                               [1.0, 2.25, 2.25, 4.0])  # fmt: skip
    with pytest.raises(ValueError, match="horizon_monotone"):
        HomePriceModel(None, None, [], [], scores, 0.8, "2015-12", {}, {}, horizon_monotone="max")  # type: ignore[arg-type]


def test_model_without_horizons_keeps_one_width() -> None:
    scores = np.linspace(0.0, 1.0, 101)
    model = bare_model(scores, None)
    assert model.interval_half_widths(np.array([72.0, 90.0])).tolist() == [model.conformal_quantile()] * 2
    # a model pickled before horizons existed: the attribute is absent, the class default answers
    old = bare_model(scores, np.ones(101))
    del old.__dict__["calibration_horizons"]
    old = pickle.loads(pickle.dumps(old))
    assert old.calibration_horizons is None
    assert old.interval_half_widths(np.array([80.0]))[0] == pytest.approx(old.conformal_quantile())


def test_fitted_model_interval_by_horizon_on_forward_rows(fitted: Fitted) -> None:
    model = fitted.model
    assert model.facts["calibration_months"] == 12
    assert sorted(set(model.calibration_horizons)) == list(range(1, 13))
    pred = model.predict(None, fitted.inputs)
    months = pd.to_datetime(fitted.inputs["sale_date"]).dt.month.to_numpy()  # 2016-01..03: 1..3 ahead
    half = np.log(pred["price_upper"] / pred["price"]).to_numpy()
    widths = model.horizon_half_widths()
    np.testing.assert_allclose(half, widths[months - 1], rtol=1e-12)
    np.testing.assert_allclose(np.log(pred["price"] / pred["price_lower"]), half, rtol=1e-9)
    coverage = M.coverage(fitted.split.validation["sale_price"], pred["price_lower"], pred["price_upper"])
    assert 0.76 <= coverage <= 0.86
    wider = model.predict(None, fitted.inputs, params={"interval_level": 0.9})
    assert (wider["price_upper"] > pred["price_upper"]).all()
