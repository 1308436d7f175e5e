from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from homeprice_assets.training import metrics as M

Y = np.array([100.0, 200.0, 400.0, 1000.0])
P = np.array([110.0, 150.0, 400.0, 1300.0])  # errors: +10%, -25%, 0%, +30%


def test_accuracy_metrics_by_hand() -> None:
    m = M.price_metrics(Y, P)
    assert m["rmse"] == pytest.approx(np.sqrt((10**2 + 50**2 + 0 + 300**2) / 4))
    assert m["mae"] == pytest.approx((10 + 50 + 0 + 300) / 4)
    assert m["mape"] == pytest.approx((0.10 + 0.25 + 0 + 0.30) / 4)
    assert m["mdape"] == pytest.approx((0.10 + 0.25) / 2)
    assert m["ppe10"] == pytest.approx(0.5)  # 0% and exactly 10% count as within
    assert m["ppe20"] == pytest.approx(0.5)
    ss_res, ss_tot = 10**2 + 50**2 + 300**2, float(np.sum((Y - Y.mean()) ** 2))
    assert m["r2"] == pytest.approx(1 - ss_res / ss_tot)
    assert M.r2(Y, Y) == 1.0


def test_interval_and_churn_by_hand() -> None:
    lower, upper = np.array([90, 210, 300, 900.0]), np.array([120, 260, 500, 1100.0])
    assert M.coverage(Y, lower, upper) == pytest.approx(0.75)  # 200 is below its interval
    widths = (upper - lower) / P  # 30/110, 50/150, 200/400, 200/1300
    assert M.median_relative_width(lower, upper, P) == pytest.approx(np.median(widths))
    # moves of +10% (not > 10%), -25%, 0%, +30% relative to the first model
    assert M.churn(Y, P, 0.10) == pytest.approx(0.5)
    out = M.evaluate(Y, pd.DataFrame({"price": P, "price_lower": lower, "price_upper": upper}))
    assert out["interval_coverage"] == pytest.approx(0.75)


def test_error_by_group() -> None:
    frame = M.error_by(Y, P, ["2016-01", "2016-01", "2016-02", "2016-02"], "month")
    assert list(frame["month"]) == ["2016-01", "2016-02"]
    assert frame["n"].tolist() == [2, 2]
    assert frame["mdape"].tolist() == pytest.approx([0.175, 0.15])
    assert frame["ppe10"].tolist() == pytest.approx([0.5, 0.5])
