"""The served booster blends L1 and Huber trees, merged into one booster (``blend``, ``merge_boosters``)."""

from __future__ import annotations

import pickle

import lightgbm as lgb
import numpy as np
import pytest

from homeprice_assets.training.model import (
    DEFAULT_PARAMS,
    _split_params,
    append_trees,
    fit_price_model,
    merge_boosters,
)

from .conftest import Fitted


def _design(fitted: Fitted, rows: int = 3000) -> tuple[object, np.ndarray, np.ndarray]:
    """The default model's design matrix of the first training rows, their log price, and more rows."""
    model = fitted.model
    train = fitted.split.train.head(rows)
    x = model.features(train[list(model.input_fields)])[model.feature_names]
    later = model.features(fitted.inputs.head(300))[model.feature_names]
    return x, np.log(train["sale_price"].to_numpy()), later


def test_merged_booster_predicts_and_explains_the_mean(fitted: Fitted) -> None:
    x, y, later = _design(fitted)
    base = {k: DEFAULT_PARAMS[k] for k in ("learning_rate", "num_leaves", "num_threads", "verbose")}
    boosters = [
        lgb.train({**base, "objective": "regression_l1", "seed": 1}, lgb.Dataset(x, y), 40),
        lgb.train({**base, "objective": "huber", "alpha": 0.15, "seed": 2}, lgb.Dataset(x, y), 25),
        lgb.train({**base, "objective": "regression_l1", "seed": 3}, lgb.Dataset(x, y), 1),
    ]
    each = np.array([b.predict(later) for b in boosters])
    assert np.abs(each[1] - each[0]).max() > 1e-3  # different trees
    merged = merge_boosters(boosters)
    assert merged.num_trees() == 40 + 25 + 1
    np.testing.assert_allclose(merged.predict(later), each.mean(axis=0), rtol=0, atol=1e-10)
    # TreeSHAP of the merged trees (LightGBM's own) sums to its prediction and is the mean of theirs
    contrib = merged.predict(later, pred_contrib=True)
    np.testing.assert_allclose(contrib.sum(axis=1), merged.predict(later), atol=1e-10)
    mean = np.mean([b.predict(later, pred_contrib=True) for b in boosters], axis=0)
    np.testing.assert_allclose(contrib, mean, atol=1e-10)
    # the pandas categories (location) survive, and so does a pickle round trip
    again = pickle.loads(pickle.dumps(merged))
    np.testing.assert_allclose(again.predict(later), merged.predict(later), rtol=0, atol=0)
    assert merge_boosters(boosters[:1]) is boosters[0]


def test_appended_trees_equal_lightgbms_continued_training(fitted: Fitted) -> None:
    """Monthly updates train on the champion's raw scores as init score and append the trees
    (training/update.py): the same booster as LightGBM's ``init_model`` continuation, for the served
    blend (L1 + Huber trees in one booster) and the update's own LightGBM parameters."""
    x, y, later = _design(fitted)
    champion = fitted.model.booster
    params, _, _ = _split_params({k: v for k, v in fitted.model.params.items() if k != "best_iteration"})
    assert params["feature_fraction"] < 1 and params["bagging_fraction"] < 1  # sampling, as updates use
    continued = lgb.train(params, lgb.Dataset(x, y), 20, init_model=champion)
    init = champion.predict(x, raw_score=True, num_threads=0)
    added = lgb.train(params, lgb.Dataset(x, y, init_score=init), 20)
    appended = append_trees(champion, added)
    assert appended.num_trees() == continued.num_trees() == champion.num_trees() + 20
    np.testing.assert_allclose(appended.predict(later), continued.predict(later), rtol=0, atol=1e-12)
    assert np.abs(appended.predict(later) - champion.predict(later)).max() > 1e-3  # it learnt something
    contrib = appended.predict(later, pred_contrib=True)
    np.testing.assert_allclose(contrib, continued.predict(later, pred_contrib=True), atol=1e-12)


def test_the_default_model_serves_one_blended_booster(fitted: Fitted) -> None:
    model = fitted.model
    assert model.params["blend"] == [{"objective": "huber", "alpha": 0.15}]  # the default
    assert model.extra_boosters is None and len(model.boosters) == 1
    plain = fit_price_model(fitted.split.train, {"blend": [], "num_boost_round": 150})
    blended = fit_price_model(fitted.split.train, {"num_boost_round": 150})
    assert plain.params["best_iteration"] == blended.params["best_iteration"]  # the same L1 probe
    # the blend adds as many Huber trees as the served L1 booster has, in the same one booster
    assert blended.booster.num_trees() == 2 * plain.booster.num_trees()
    # the conformal scores come from the calibration-stage trees, which are one L1 fit in both
    np.testing.assert_array_equal(plain.calibration_scores, blended.calibration_scores)
    rows = fitted.inputs.head(200)
    moved = np.abs(blended.predict_log(rows) - plain.predict_log(rows))
    assert 1e-4 < np.median(moved) < 0.05  # another booster's view, not another model


def test_a_blend_entry_must_be_parameters(fitted: Fitted) -> None:
    with pytest.raises(ValueError, match=r"blend: entry 0 \('huber'\) is not a mapping"):
        fit_price_model(fitted.split.train.tail(3000), {"blend": ["huber"], "num_boost_round": 20})
