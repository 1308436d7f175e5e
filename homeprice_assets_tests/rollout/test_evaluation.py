"""Ground-truth join, live metrics, the sequential test and the decisions, on real prices."""

import json

import numpy as np
import pandas as pd
import pytest

from homeprice_assets.rollout.evaluation import (
    champion_health,
    compare,
    error_rate_since,
    request_counts_from_metrics,
)
from homeprice_assets.rollout.groundtruth import (
    join_ground_truth,
    live_by_version,
    live_metrics,
    metrics_by_model,
)
from homeprice_assets.rollout.sequential import bootstrap_mdape_difference, msprt
from homeprice_assets.rollout.settings import RollbackRules, RolloutSettings
from homeprice_assets.rollout.state import TAG_LIVE, RolloutState, parse_state


def _pred(parcel, version, role, created, price, valuation=None, rid="r", i=0):
    return {
        "id": i,
        "request_id": rid,
        "created_at": pd.Timestamp(created),
        "model_name": "homeprice",
        "model_version": version,
        "model_role": role,
        "parcel_id": parcel,
        "price": price,
        "price_lower": price * 0.9,
        "price_upper": price * 1.1,
        "valuation_date": pd.Timestamp(valuation) if valuation else pd.NaT,
    }


def test_join_respects_embargo_horizon_and_keeps_the_latest_per_model_and_role() -> None:
    sales = pd.DataFrame(
        {
            "sale_id": ["s1", "s2", "s3"],
            "parcel_id": ["A", "B", None],
            "sale_date": pd.to_datetime(["2014-06-20", "2014-06-10", "2014-06-01"]),
            "sale_month": ["2014-06"] * 3,
            "sale_price": [500_000.0, 400_000.0, 300_000.0],
        }
    )
    preds = pd.DataFrame(
        [
            _pred("A", "1", "champion", "2014-05-01", 480_000, i=1),  # counts (50 days before)
            _pred("A", "1", "champion", "2014-05-10", 490_000, i=2),  # counts, later: kept
            _pred("A", "1", "champion", "2014-06-01", 499_000, i=3),  # inside the embargo: a listed home
            _pred("A", "2", "shadow", "2014-05-10", 450_000, i=4),  # another role: its own row
            _pred("B", "1", "champion", "2013-01-01", 100_000, i=5),  # beyond the 12-month horizon
            # asked "now" (a replay) but priced as of a past date: dated at the valuation date
            _pred("B", "1", "champion", "2026-11-23", 410_000, valuation="2014-04-30", i=6),
        ]
    )
    rows, unmatched = join_ground_truth(sales, preds, embargo_days=30, horizon_months=12)
    got = {(r.sale_id, r.model_version, r.model_role): r.price for r in rows.itertuples()}
    assert got == {
        ("s1", "1", "champion"): 490_000,
        ("s1", "2", "shadow"): 450_000,
        ("s2", "1", "champion"): 410_000,
    }
    assert unmatched == 1  # s3: no parcel, no earlier valuation: counted, not an error
    assert rows.loc[rows["model_role"] == "shadow", "ape"].item() == pytest.approx(0.1)

    empty, n = join_ground_truth(sales, preds.iloc[0:0], 30, 12)
    assert empty.empty and n == 3


def test_live_metrics_by_model() -> None:
    rows = pd.DataFrame(
        {
            "model_version": ["1"] * 4 + ["2"] * 2,
            "model_role": ["champion"] * 4 + ["shadow"] * 2,
            "sale_price": [100.0, 100.0, 100.0, 100.0, 100.0, 100.0],
            "price": [95.0, 105.0, 120.0, 100.0, 150.0, 50.0],
            "price_lower": [90.0, 90.0, 110.0, 90.0, 140.0, 40.0],
            "price_upper": [110.0, 110.0, 130.0, 110.0, 160.0, 60.0],
        }
    )
    m = live_metrics(rows[rows["model_version"] == "1"])
    assert m["n"] == 4 and m["mdape"] == pytest.approx(0.05) and m["ppe10"] == pytest.approx(0.75)
    assert m["median_ratio"] == pytest.approx(1.025) and m["coverage"] == pytest.approx(0.75)
    assert m["cod"] == pytest.approx(100 * np.mean(np.abs(np.array([0.95, 1.05, 1.2, 1.0]) - 1.025)) / 1.025)
    table = metrics_by_model(rows)
    assert list(zip(table["model_version"], table["model_role"], strict=True)) == [
        ("1", "champion"),
        ("2", "shadow"),
    ]
    assert live_metrics(rows.iloc[0:0]) == {"n": 0}


def test_live_by_version_pools_roles_over_the_latest_months() -> None:
    """What the services export per version: the last ``window`` months with matched sales, one row per
    sale and version (a shadow valuation and a later champion valuation of the same sale count once)."""

    def row(sale, month, version, role, valued, price):
        return {
            "sale_id": sale,
            "sale_month": month,
            "model_version": version,
            "model_role": role,
            "valued_at": pd.Timestamp(valued),
            "created_at": pd.Timestamp(valued),
            "sale_price": 100.0,
            "price": price,
            "price_lower": price * 0.9,
            "price_upper": price * 1.1,
        }

    rows = pd.DataFrame(
        [
            row("a", "2014-01", "1", "champion", "2013-11-01", 50.0),  # outside a 2-month window
            row("b", "2014-02", "1", "champion", "2014-01-01", 95.0),
            row("c", "2014-03", "1", "champion", "2014-02-01", 130.0),
            row("c", "2014-03", "2", "shadow", "2014-01-15", 80.0),  # superseded by its later valuation
            row("c", "2014-03", "2", "champion", "2014-02-10", 104.0),
        ]
    )
    live = live_by_version(rows, window_months=2)
    assert live["1"]["n"] == 2 and live["1"]["mdape"] == pytest.approx(0.175)
    assert live["1"]["months"] == ["2014-02", "2014-03"]
    assert live["2"] == {
        "n": 1,
        "mdape": pytest.approx(0.04),
        "ppe10": 1.0,
        "median_ratio": pytest.approx(1.04),
        "cod": 0.0,
        "coverage": 1.0,
        "months": ["2014-03"],
    }
    assert live_by_version(rows.iloc[0:0], 3) == {}
    # the registry tag the services read on their poll round-trips into the state
    tag = json.dumps({"evaluated_at": "x", "versions": live})
    assert parse_state({"champion": "2"}, {TAG_LIVE: tag}).live == json.loads(tag)["versions"]
    assert parse_state({}, {TAG_LIVE: "not json"}).live == {}


def test_msprt_stays_quiet_without_a_difference_and_crosses_with_one() -> None:
    rng = np.random.default_rng(3)
    # under "no difference" the boundary is crossed in at most ~alpha of streams, looked at after every pair
    crossed = sum(msprt(rng.standard_t(3, 2000), 0.05, 0.01).crossed_at is not None for _ in range(200))
    assert crossed <= 200 * 0.05
    better = msprt(rng.normal(-0.03, 0.1, 2000), 0.05, 0.01)
    worse = msprt(rng.normal(0.03, 0.1, 2000), 0.05, 0.01)
    assert better.direction == -1 and worse.direction == 1 and better.crossed_at < 2000
    assert better.statistic >= better.boundary


def test_bootstrap_interval_covers_the_true_difference() -> None:
    rng = np.random.default_rng(1)
    champion = np.abs(rng.normal(0, 0.12, 3000))
    candidate = champion * 0.8
    low, high = bootstrap_mdape_difference(candidate, champion, paired=True, samples=500)
    true = np.median(candidate) - np.median(champion)
    assert low <= true <= high < 0
    low2, high2 = bootstrap_mdape_difference(candidate, champion, paired=False, samples=500)
    assert high2 - low2 > high - low  # arms resampled apart: wider


def _gt(bundled_sales: pd.DataFrame, version: str, role: str, noise: float, started: str, seed: int):
    """Real 2014 sale prices, 'predicted' with a given relative error, as ground-truth rows."""
    sales = bundled_sales.head(3000)
    y = pd.to_numeric(sales["sale_price"]).to_numpy(float)
    p = y * np.exp(np.random.default_rng(seed).normal(0, noise, len(y)))
    return pd.DataFrame(
        {
            "sale_id": np.arange(len(y)).astype(str),
            "sale_date": pd.Timestamp("2014-06-01") + pd.to_timedelta(np.arange(len(y)) % 28, unit="D"),
            "sale_month": "2014-06",
            "sale_price": y,
            "model_version": version,
            "model_role": role,
            "created_at": pd.Timestamp(started) + pd.Timedelta(hours=1),
            "price": p,
            "price_lower": p * np.exp(-1.2816 * noise),  # an honest 80% interval
            "price_upper": p * np.exp(1.2816 * noise),
            "ape": np.abs(p - y) / y,
            "abs_log_error": np.abs(np.log(p / y)),
        }
    )


def test_decisions_shadow_promote_ab_stop_and_inconclusive(bundled_sales: pd.DataFrame) -> None:
    started = "2026-11-23T10:00:00+00:00"
    shadow = RolloutState(champion="1", candidate="2", mode="shadow", weight=0.5, started_at=started)
    rows = pd.concat(
        [
            _gt(bundled_sales, "1", "champion", 0.15, started, 1),
            _gt(bundled_sales, "2", "shadow", 0.08, started, 2),
        ]
    )
    settings = RolloutSettings(min_pairs=200)
    result = compare(rows, shadow, settings)
    assert result.decision == "promote" and result.n_pairs == 3000 and result.ci_high < 0
    assert result.mdape_candidate < result.mdape_champion and result.statistic > result.boundary

    ab = RolloutState(champion="1", candidate="3", mode="ab", weight=0.2, started_at=started)
    rows = pd.concat(
        [
            _gt(bundled_sales, "1", "champion", 0.10, started, 1),
            _gt(bundled_sales, "3", "candidate", 0.30, started, 3).head(600),
        ]
    )
    result = compare(rows, ab, settings)
    assert result.decision == "stop" and result.n_pairs == 600 and result.ci_low > 0

    few = compare(rows, ab, RolloutSettings(min_pairs=5000))
    assert few.decision == "inconclusive" and "too few pairs" in few.reason

    # predictions made before the rollout started do not count
    late = RolloutState(
        champion="1", candidate="3", mode="ab", weight=0.2, started_at="2030-01-01T00:00:00+00:00"
    )
    assert compare(rows, late, settings).n_pairs == 0


def test_champion_health_rules(bundled_sales: pd.DataFrame) -> None:
    rows = _gt(bundled_sales, "1", "champion", 0.4, "2026-01-01T00:00:00+00:00", 4)
    rules = RollbackRules(min_sales=30)
    health = champion_health(rows, "1", offline_mdape=0.10, rules=rules)
    assert health.broken and health.month == "2014-06"
    assert any("live MdAPE" in b for b in health.breaches) and any("PPE10" in b for b in health.breaches)
    good = champion_health(
        _gt(bundled_sales, "1", "champion", 0.05, "2026-01-01T00:00:00+00:00", 5), "1", 0.05, rules
    )
    assert not good.broken, good.breaches
    assert not champion_health(rows.head(10), "1", 0.1, rules).judged  # too few sales: not judged
    metrics = (
        'bentoml_service_request_total{endpoint="/predict",http_response_code="200",service_name="h"} 90.0\n'
        'bentoml_service_request_total{endpoint="/predict",http_response_code="503",service_name="h"} 10.0\n'
    )
    rate = error_rate_since(request_counts_from_metrics(metrics), None)  # the first evaluation
    assert rate == pytest.approx(0.1)
    assert champion_health(rows.iloc[0:0], "1", None, rules, error_rate_5xx=rate).broken


def test_the_5xx_rate_is_judged_on_the_requests_since_the_last_evaluation() -> None:
    """One incident (10 of 100 failed) breaches once; 900 clean requests after it do not, although the
    service's counters (since it started) still hold 10 failures in 1,000."""
    assert error_rate_since((100.0, 10.0), None) == pytest.approx(0.1)  # first evaluation: all so far
    assert error_rate_since((1000.0, 10.0), (100.0, 10.0)) == 0.0
    assert error_rate_since((1000.0, 19.0), (100.0, 10.0)) == pytest.approx(0.01)
    assert error_rate_since((50.0, 5.0), (1000.0, 10.0)) == pytest.approx(0.1)  # restarted: from zero
    assert error_rate_since((1000.0, 10.0), (1000.0, 10.0)) is None  # no request since: nothing to judge
    assert error_rate_since(None, (1000.0, 10.0)) is None  # the service did not answer
    counts = request_counts_from_metrics(
        'bentoml_service_request_total{endpoint="/predict",http_response_code="200"} 90.0\n'
        'bentoml_service_request_total{endpoint="/predict",http_response_code="503"} 10.0\n'
        "# HELP something else 3\n"
    )
    assert counts == (100.0, 10.0)
