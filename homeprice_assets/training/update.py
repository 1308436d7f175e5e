"""Monthly warm-start updates: the champion carried forward by one more month of sales, without a full refit.

A full fit (``fit_price_model``) grows three sets of trees (early-stopping probe, calibration stage, served
trees) and the index twice, on the whole window: on a million sales that is most of a lifecycle run, and a
new month changes the answer little. An update instead copies the champion and

1. refits the market index on the whole window (the newest month's prices are what the update is for),
   aligned to the champion's index over the months the champion learned from;
2. adds ``rounds`` trees to the champion's booster, learnt on the last ``months`` months of the window against
   the new index from the champion's scores (LightGBM's ``init_model`` continuation, with the champion scored
   on every core), so the trees correct for what moved recently;
3. keeps the champion's conformal scores (the updated model errs like its parent at the same horizon) and
   its hedonic offset, and rebuilds the parcels' last sales and the request bounds from the whole window.

Measured on the bundled data (2016 valued at its start, as in ``bench/forward_bench.py``; default settings
with the L1 + Huber blend): a full fit through 2015-12 MdAPE 8.30%, coverage 79.7%; the full fit through
2015-11 updated with 2015-12 8.32% (coverage 82.0%), in about 3 s against 13-24 s for the full fit (same
run, load average 3). Over five cut-offs (2013-11 .. 2015-11, each valuing the 2nd to 7th month after its
next month), mean MdAPE: champion left as it was 8.36%, full refit 8.14%, update 8.18% with the trees
learning from 12 months, 8.21% from 6 or 3. Before the blend: 8.41% against 8.37%, and 50 or 100 rounds or
none differed by 0.01 point. Six chained updates from a full fit through 2015-06 (8.89%) reached 8.46%,
coverage 78.9% (8.39% learning from 6 months): updates keep a model near a full refit for a few months,
not for ever, so ``update_plan`` asks for a full refit after ``max_consecutive`` updates, and whenever the
data, the settings or the trigger (drift, live error) say the champion's structure may be stale.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from homeprice_assets.training.model import _split_params, append_trees, training_bounds
from homeprice_assets.training.settings import UpdateSettings
from homeprice_assets.training.splits import month_of
from homeprice_model import MODEL_CODE_VERSION
from homeprice_model.features import COORDINATE_FEATURES, COORDINATE_INPUTS, FEATURES
from homeprice_model.market_index import MarketIndex
from homeprice_model.model import HomePriceModel
from homeprice_model.repeat_sales import (
    PARCEL_INPUT,
    REPEAT_FEATURES,
    LastSales,
    previous_sales,
    repeat_features,
)

# Triggers (``homeprice/trigger`` run tag) that say the champion is wrong, not just a month old.
FULL_REFIT_TRIGGERS = frozenset({"drift", "live_error", "rollback"})


@dataclass(frozen=True)
class UpdatePlan:
    """Whether this run updates the champion or fits from scratch, and why (recorded with the model)."""

    update: bool
    reason: str


def _merged_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    lgb_params, own, index_params = _split_params(dict(params or {}))
    return {**lgb_params, **own, **index_params.__dict__}


def update_plan(
    champion: Any,
    champion_code_version: str | None,
    train: pd.DataFrame,
    params: Mapping[str, Any] | None,
    settings: UpdateSettings,
    trigger: str | None = None,
    force_full: bool = False,
) -> UpdatePlan:
    """Decide between an update of ``champion`` and a full fit on ``train`` (the training set)."""

    def full(reason: str) -> UpdatePlan:
        return UpdatePlan(False, reason)

    if force_full:
        return full("full refit requested")
    if settings.max_consecutive == 0:
        return full("updates are off (training.update.max_consecutive is 0)")
    if champion is None:
        return full("no champion to update")
    if not isinstance(champion, HomePriceModel):
        return full(f"the champion is a {type(champion).__name__}, not a HomePriceModel")
    if champion_code_version != MODEL_CODE_VERSION:
        return full(f"the champion's model code is version {champion_code_version}, now {MODEL_CODE_VERSION}")
    if trigger in FULL_REFIT_TRIGGERS:
        return full(f"triggered by {trigger}")
    done = int(champion.facts.get("updates_since_full", 0))
    if done >= settings.max_consecutive:
        return full(f"{done} updates since the last full refit (training.update.max_consecutive)")
    if champion.extra_boosters:
        return full("the champion is bagged (several boosters): updates add trees to one booster only")
    if champion.index is None:
        return full("the champion has no market index")
    old = {k: v for k, v in champion.params.items() if k != "best_iteration"}
    if old != _merged_params(params):
        return full("the training parameters changed since the champion was fit")
    last = str(month_of(train).max())
    if last <= champion.trained_through:
        return full(f"no months after the champion's {champion.trained_through}")
    locations = set(train["location"].astype(str).unique())
    new_locations = locations - set(champion.location_categories)
    if new_locations:
        return full(
            f"{len(new_locations)} location(s) the champion has never seen, e.g. {min(new_locations)}"
        )
    coordinates = all(c in train and train[c].notna().any() for c in COORDINATE_INPUTS)
    repeat = (
        bool(old.get("repeat_sales")) and PARCEL_INPUT in train and bool(train[PARCEL_INPUT].notna().any())
    )
    expected = [f for f in champion.feature_names if f not in REPEAT_FEATURES]
    if coordinates != any(f in expected for f in COORDINATE_FEATURES) or repeat != any(
        f in champion.feature_names for f in REPEAT_FEATURES
    ):
        return full("the training data's columns (coordinates, parcel ids) differ from the champion's")
    return UpdatePlan(True, f"update {done + 1} of at most {settings.max_consecutive} since a full refit")


def update_price_model(
    champion: HomePriceModel,
    train: pd.DataFrame,
    settings: UpdateSettings,
    *,
    base_version: str | None = None,
    bounds: Mapping[str, float] | Any | None = None,
) -> HomePriceModel:
    """A copy of ``champion`` carried through ``train``'s last month (see the module docstring).

    ``train`` is the whole training set, as ``fit_price_model`` would take it; call only when
    ``update_plan`` says so.
    """
    started = time.perf_counter()
    model: HomePriceModel = pickle.loads(pickle.dumps(champion))  # caches dropped, champion untouched
    lgb_params, _own, index_params = _split_params(
        {k: v for k, v in champion.params.items() if k != "best_iteration"}
    )
    train = train.sort_values("sale_date", kind="stable")
    months = month_of(train)
    log_price = np.log(train["sale_price"].to_numpy(dtype=float))
    location = train["location"].astype(str).to_numpy()
    t = train["months_since_origin"].to_numpy()
    offset = model.hedonic.value(train) if model.hedonic is not None else np.zeros(len(train))

    index = MarketIndex(params=index_params).fit(train, log_price)
    learnt = (months <= champion.trained_through).to_numpy()
    # The index's absolute level is arbitrary: align it with the one the champion's trees learnt against.
    index.month_effect = index.month_effect + float(
        np.mean(champion.index.value(location[learnt], t[learnt]) - index.value(location[learnt], t[learnt]))
    )
    model.index = index

    recent_months = sorted(months.unique())[-settings.months :]
    recent = months.isin(recent_months).to_numpy()
    table = train.loc[recent].reindex(columns=list(FEATURES))
    if any(f in model.feature_names for f in REPEAT_FEATURES):
        prev_month, prev_price = previous_sales(train[PARCEL_INPUT], t, log_price - offset)
        table = table.assign(
            **repeat_features(
                prev_month[recent], prev_price[recent], t[recent].astype(float), location[recent], index
            )
        )
        model.last_sales = LastSales.from_sales(train[PARCEL_INPUT], t, log_price - offset)
    x = model._design(table)[model.feature_names]
    y = log_price[recent] - offset[recent] - index.value(location[recent], t[recent])
    # LightGBM's ``init_model`` continuation would score the champion on these rows with the training
    # threads (one; 8.3 of 19.8 s of a 1M-sale update): the same raw scores on the threads the model predicts
    # with (every core for large batches) as the init score, and the new trees after the champion's, make the
    # same booster.
    init = champion.booster.predict(x, raw_score=True, num_threads=champion.threads_for(len(x)))
    added = lgb.train(lgb_params, lgb.Dataset(x, y, init_score=init), num_boost_round=settings.rounds)
    model.booster = append_trees(champion.booster, added)

    model.trained_through = str(months.max())
    model.bounds = training_bounds(train, bounds)
    model.locations = {str(k): int(v) for k, v in pd.Series(location).value_counts().sort_index().items()}
    first, last = str(months.min()), str(months.max())
    model.facts = {
        **champion.facts,
        "fit_mode": "update",
        "updates_since_full": int(champion.facts.get("updates_since_full", 0)) + 1,
        "update_base_version": base_version,
        "update_rounds": settings.rounds,
        "update_rows": int(recent.sum()),
        "update_months": f"{recent_months[0]}..{recent_months[-1]}",
        "train_rows": len(train),
        "train_range": f"{first}..{last}",
        "best_iteration": int(model.booster.num_trees()),
        "fit_seconds": round(time.perf_counter() - started, 2),
    }
    model.params = dict(champion.params)
    return model
