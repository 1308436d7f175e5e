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


# ------------------------------------------------------------------------------------------ ratio study
def test_ratio_study_by_hand() -> None:
    # ratios 1.1, 0.75, 1.0, 1.3: median 1.05
    study = M.ratio_study(Y, P)
    assert study["n"] == 4
    assert study["median_ratio"] == pytest.approx(1.05)
    deviations = np.abs(np.array([1.1, 0.75, 1.0, 1.3]) - 1.05)
    assert study["cod"] == pytest.approx(100 * deviations.mean() / 1.05)
    mean_ratio = np.mean([1.1, 0.75, 1.0, 1.3])
    assert study["prd"] == pytest.approx(mean_ratio / (P.sum() / Y.sum()))
    # PRB by hand: OLS slope of (ratio - median) / median on log2(value proxy)
    proxy = np.log2(0.5 * P / 1.05 + 0.5 * Y)
    z = (P / Y - 1.05) / 1.05
    slope = np.polyfit(proxy, z, 1)[0]
    assert study["prb"] == pytest.approx(slope)
    assert study["prb_low"] < study["prb"] < study["prb_high"]


def test_iaao_bands_and_equity_directions() -> None:
    rng = np.random.default_rng(0)
    y = np.exp(rng.normal(13, 0.5, 4000))
    fair = y * np.exp(rng.normal(0, 0.08, len(y)))
    fair_study = M.ratio_study(y, fair)
    assert all(M.within_iaao(fair_study).values())
    assert abs(fair_study["prb"]) < 0.02
    # Regressive: cheap homes valued high, dear homes low (valuation pulled towards the mean).
    regressive = np.exp(np.log(np.median(y)) + 0.7 * (np.log(fair) - np.log(np.median(y))))
    study = M.ratio_study(y, regressive)
    assert study["prd"] > 1.03 and study["prb"] < -0.05
    assert M.within_iaao(study) == {"median_ratio": True, "cod": True, "prd": False, "prb": False}
    # Progressive: the other way round.
    progressive = np.exp(np.log(np.median(y)) + 1.3 * (np.log(fair) - np.log(np.median(y))))
    study = M.ratio_study(y, progressive)
    assert study["prd"] < 0.98 and study["prb"] > 0.05


def test_cod_matches_live_metrics_definition() -> None:
    from homeprice_assets.rollout.groundtruth import live_metrics

    rows = pd.DataFrame({"sale_price": Y, "price": P, "price_lower": P * 0.9, "price_upper": P * 1.1})
    live = live_metrics(rows)
    assert M.cod(Y, P) == pytest.approx(live["cod"])
    assert M.median_ratio(Y, P) == pytest.approx(live["median_ratio"])


def test_ratio_study_by_group_and_value_deciles() -> None:
    deciles = M.deciles(np.arange(100, 0, -1, dtype=float))
    assert deciles.tolist() == [d for d in range(10, 0, -1) for _ in range(10)]
    # the value proxy: half valuation (over the median ratio), half price; its deciles cut the strata
    proxy = M.value_proxy(Y, P)
    assert proxy == pytest.approx(0.5 * P / 1.05 + 0.5 * Y)
    assert M.value_deciles(Y, P, n=4).tolist() == [1, 2, 3, 4]
    frame = M.ratio_study_by(Y, P, ["b", "a", "b", "a"], "location")
    assert frame["location"].tolist() == ["a", "b"]
    assert frame["n"].tolist() == [2, 2]
    assert frame.loc[0, "median_ratio"] == pytest.approx(np.median([0.75, 1.3]))
    assert np.isnan(frame.loc[0, "prb"])  # too few sales for a regression


def test_ratio_study_refuses_bad_input_naming_it() -> None:
    with pytest.raises(ValueError, match="positive"):
        M.ratio_study([100.0, 0.0], [100.0, 90.0])
    with pytest.raises(ValueError, match="differ in length"):
        M.cod([100.0, 200.0], [100.0])
    with pytest.raises(ValueError, match="location"):
        M.ratio_study_by(Y, P, ["a"], "location")
    empty = M.ratio_study([], [])
    assert empty["n"] == 0 and np.isnan(empty["cod"])
