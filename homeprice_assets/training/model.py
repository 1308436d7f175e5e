"""Fitting the served home-price model (the model itself lives in ``homeprice_model``).

``log price = market index(location, month) + trees(features)``. The index carries the price level and its
trend past the last training month; LightGBM learns the quality-adjusted rest, which does not drift, so its
inability to extrapolate no longer costs forward accuracy.

``HomePriceModel`` is re-exported here for the pipeline, and so that versions pickled before the model code
moved to ``homeprice_model`` (class path ``homeprice_assets.training.model.HomePriceModel``) keep loading:
unpickling them yields ``homeprice_model.model.HomePriceModel``, whose class-level defaults fill the
attributes they lack (``bounds`` None: only locations are checked; ``input_fields``: every input field).
Keep this module importable while such versions may be served or rolled back to.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy import sparse

from homeprice_assets.training.splits import month_of, split_tail, training_split
from homeprice_model.features import COORDINATE_FEATURES, COORDINATE_INPUTS, FEATURES, INPUT_FIELDS
from homeprice_model.hedonic import HedonicOffset
from homeprice_model.market_index import HEDONIC_COLUMNS, QUADRATIC_COLUMNS, IndexParams, MarketIndex
from homeprice_model.model import BOUNDED_FIELDS, HomePriceModel
from homeprice_model.repeat_sales import (
    PARCEL_INPUT,
    REPEAT_FEATURES,
    LastSales,
    previous_sales,
    repeat_features,
)

__all__ = ["DEFAULT_PARAMS", "HomePriceModel", "fit_hedonic", "fit_price_model", "training_bounds"]

DEFAULT_PARAMS: dict[str, Any] = {
    # L1 (median) loss: a few non-market sales (family transfers, teardowns) must not pull valuations
    "objective": "regression_l1",
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_data_in_leaf": 20,
    # Half the features per tree: with the repeat-sales features, forward MdAPE -0.14 (2016) and -0.17
    # points (2015) against 0.8 (bench/forward_bench.py); 127 leaves gained no more on average at 2x the time.
    "feature_fraction": 0.5,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_boost_round": 2000,
    "early_stopping_rounds": 100,
    "seed": 7,
    # One thread: on small data two threads gain little, and when other jobs share the cores LightGBM's
    # OpenMP spin-waiting made 2-thread fits 5-20x slower here (measured 111 s and 530 s against 25 s).
    "num_threads": 1,
    "verbose": -1,
    # homeprice settings (not LightGBM's)
    "use_market_index": True,
    "time_feature": True,  # months_since_origin as a tree feature, on top of the index (residual drift)
    # Refit the trees on the calibration months too once the conformal scores are taken: the newest sales
    # then inform the model; the scores, from trees that saw less, stay (slightly conservative).
    "refit_on_calibration": True,
    # The parcel's previous sale, carried forward by the index (homeprice_model/repeat_sales.py), when the
    # training rows have ``parcel_id``.
    "repeat_sales": True,
    # How per-horizon interval widths are made non-decreasing (HomePriceModel.horizon_half_widths):
    # "cummax" (running maximum) or "isotonic". Isotonic brought 2015 forward coverage from 81.7% (one
    # quarter at 83.2%) to 80.0% (79.2-81.5%) but 2016's third quarter to 77.4% (78.1% with cummax).
    "horizon_monotone": "cummax",
    # The served trees are fit this many times, with seeds seed, seed+1, ..., and averaged
    # (HomePriceModel.extra_boosters). Forward MdAPE 8.40 -> 8.35% (2015) and 8.52 -> 8.45% (2016), PPE10
    # +0.5 points both years, COD -0.08/-0.09, at about twice the fit time and 2.6x the one-home serving
    # time (1.15 -> 2.98 ms on the 2016 model; bench/forward_bench.py); 5 seeds gained no more. The
    # early-stopping probe stays one fit, and so do the calibration-stage trees unless
    # bagging_seeds_calibration: their conformal scores are then slightly conservative (bagged scores
    # cut 2016's third-quarter coverage to 77.8%). Off by default: the gain is about the spread between
    # single seeds (8.40-8.47% / 8.50-8.67%), and the one-home serving time is a target of its own (<= 1 ms).
    "bagging_seeds": 1,
    "bagging_seeds_calibration": False,
    # Trees learn log price minus the index minus a linear hedonic part (homeprice_model/hedonic.py, fit by
    # ``fit_hedonic`` on the months before the calibration slice). Forward MdAPE 2015 / 2016, mean of seeds
    # 7-9: 8.41 / 8.53% -> 8.35 / 8.37%, PPE10 +0.4 / +0.8 points, COD -0.06 / -0.09 (bench/forward_bench.py).
    # Models logged before it have none (``HomePriceModel.hedonic`` is None) and price as they did.
    "hedonic_offset": True,
    # Boosters with other objectives fit next to the served L1 trees (same rows and rounds), each given as
    # a LightGBM parameter override; the served booster is the mean of all, merged into one booster
    # (``merge_boosters``: one call per prediction and per TreeSHAP, and monthly updates can still add
    # trees to it). A Huber booster (alpha 0.15): forward MdAPE 2015 / 2016, seeds 7 / 8 / 9: 8.41 / 8.32 /
    # 8.33 -> 8.33 / 8.29 / 8.32%, 8.37 / 8.31 / 8.42 -> 8.30 / 8.28 / 8.31%; PPE10 +0.3 points and COD
    # -0.09 both years (bench/forward_bench.py); one home through the MLflow pyfunc 0.79 -> 0.94 ms (2016
    # model, 1172 -> 2344 trees).
    # Huber alone was no better than L1 in 2016: the two err differently and their mean gains. As with
    # bagging, only the served trees are blended (the calibration-stage trees stay one L1 fit unless
    # ``bagging_seeds_calibration``). [] or None: L1 only, as models logged before.
    "blend": [{"objective": "huber", "alpha": 0.15}],
    # market index settings (see market_index.IndexParams)
    **asdict(IndexParams()),
}
_OWN_KEYS = (
    "num_boost_round",
    "early_stopping_rounds",
    "use_market_index",
    "time_feature",
    "refit_on_calibration",
    "repeat_sales",
    "horizon_monotone",
    "bagging_seeds",
    "bagging_seeds_calibration",
    "hedonic_offset",
    "blend",
)
INDEX_KEYS = tuple(IndexParams.__dataclass_fields__)
# Margins around the observed range when no configured bounds are given: about 11 km, and a factor of 2.
COORDINATE_MARGIN_DEG = 0.1
AREA_FACTOR = 2.0


def training_bounds(train: pd.DataFrame, bounds: Mapping[str, float] | Any | None = None) -> dict[str, float]:
    """The request bounds a model records (``HomePriceModel.bounds``).

    ``bounds`` (the configuration's ``data.bounds``, a mapping or an object with those attributes) wins:
    ingestion admitted exactly that range. Fields it does not give come from the training rows' observed
    range, widened by a margin. Coordinates the data lacks are not bounded.
    """

    def given(key: str) -> float | None:
        if bounds is None:
            return None
        value = bounds.get(key) if isinstance(bounds, Mapping) else getattr(bounds, key, None)
        return None if value is None else float(value)

    out: dict[str, float] = {}
    for column, (lo_key, hi_key) in BOUNDED_FIELDS.items():
        values = (
            pd.to_numeric(train[column], errors="coerce").dropna()
            if column in train
            else pd.Series(dtype=float)
        )
        if not len(values):
            continue
        lo, hi = float(values.min()), float(values.max())
        if column == "living_sf":
            lo, hi = lo / AREA_FACTOR, hi * AREA_FACTOR
        else:
            lo, hi = lo - COORDINATE_MARGIN_DEG, hi + COORDINATE_MARGIN_DEG
        out[lo_key] = lo if given(lo_key) is None else given(lo_key)
        out[hi_key] = hi if given(hi_key) is None else given(hi_key)
    return out


def fit_hedonic(frame: pd.DataFrame, log_price: np.ndarray, ridge: float = 1.0) -> HedonicOffset | None:
    """The covariate part of a ridge regression of ``log_price`` on the index's hedonic covariates.

    Covariates as ``MarketIndex`` takes them (standardised, squares of size, lot and grade); location and
    month dummies enter the regression so that place and time do not leak into the coefficients, and are
    dropped after (the index and the trees carry them). None when ``frame`` has none of the covariates.
    """
    columns = tuple(c for c in HEDONIC_COLUMNS if c in frame and frame[c].notna().any())
    if not columns:
        return None
    h = frame[list(columns)].to_numpy(dtype=float)
    median = np.nanmedian(h, axis=0)
    h = np.where(np.isnan(h), median, h)
    mean, scale = h.mean(axis=0), h.std(axis=0)
    scale[scale == 0] = 1.0
    z = (h - mean) / scale
    curved = tuple(i for i, c in enumerate(columns) if c in QUADRATIC_COLUMNS)
    x = np.column_stack([z, z[:, list(curved)] ** 2])
    centre = x.mean(axis=0)
    # one-hot location and month as sparse columns: the normal equations stay small at any row count
    rows = np.arange(len(frame))
    dummies = []
    for values in (frame["location"].astype(str), frame["months_since_origin"].astype(int)):
        codes, levels = pd.factorize(values, sort=True)
        dummies.append(
            sparse.csr_matrix((np.ones(len(codes)), (rows, codes)), shape=(len(codes), len(levels)))
        )
    a = sparse.hstack([sparse.csr_matrix(x - centre), *dummies]).tocsr()
    n_dummies = a.shape[1] - x.shape[1]
    penalty = np.r_[np.full(x.shape[1], ridge), np.full(n_dummies, 1e-3)]
    gram = (a.T @ a).toarray() + np.diag(penalty)
    beta = np.linalg.solve(gram, a.T @ np.asarray(log_price, dtype=float))
    coef = beta[: x.shape[1]]
    return HedonicOffset(columns, median, mean, scale, curved, coef, float(-centre @ coef))


def merge_boosters(boosters: Sequence[lgb.Booster]) -> lgb.Booster:
    """One booster whose raw output is the mean of ``boosters``': their trees in turn, leaf values / k.

    Predictions equal the mean of the boosters' to rounding (about 1e-13 in log price), and TreeSHAP on the
    merged trees is the mean of theirs. See ``_joined`` for the format.
    """
    if len(boosters) == 1:
        return boosters[0]
    return _joined(boosters, len(boosters))


def append_trees(first: lgb.Booster, then: lgb.Booster) -> lgb.Booster:
    """``first``'s trees followed by ``then``'s: what LightGBM's ``init_model`` continuation returns when
    ``then`` was trained with ``first``'s raw predictions as its init score (not for ``linear_tree``
    models: LightGBM fits a booster's first tree without its linear part, a continued one's with it)."""
    return _joined([first, then], 1)


def _joined(boosters: Sequence[lgb.Booster], divide_by: int) -> lgb.Booster:
    """The trees of ``boosters`` in turn as one booster, leaf values divided by ``divide_by``.

    Written through LightGBM's text model format (the trees of each, renumbered; ``tree_sizes`` dropped, so
    LightGBM reads the trees in turn); the header, parameters and pandas categories are the first booster's,
    and all must be fit on the same features.
    """
    texts = [b.model_to_string() for b in boosters]
    first = texts[0]
    head = re.sub(r"(?m)^tree_sizes=.*\n", "", first[: first.index("\nTree=0\n") + 1])
    tail = first[first.index("end of trees") :]
    trees: list[str] = []
    for text in texts:
        body = text[text.index("\nTree=0\n") + 1 : text.index("end of trees")]
        trees += [t for t in re.split(r"(?m)^(?=Tree=\d+$)", body) if t.strip()]
    out = []
    for number, tree in enumerate(trees):
        lines = tree.rstrip("\n").split("\n")
        lines[0] = f"Tree={number}"
        for i, line in enumerate(lines):
            key, _, values = line.partition("=")
            if divide_by != 1 and key in ("leaf_value", "internal_value") and values:
                lines[i] = f"{key}=" + " ".join(repr(float(v) / divide_by) for v in values.split(" "))
        out.append("\n".join(lines) + "\n\n")
    return lgb.Booster(model_str=head + "\n" + "".join(out) + tail)


# -------------------------------------------------------------------------------------------------------
def _split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], IndexParams]:
    merged = {**DEFAULT_PARAMS, **(params or {})}
    index_params = IndexParams(**{k: merged.pop(k) for k in INDEX_KEYS if k in merged})
    own = {k: merged.pop(k) for k in _OWN_KEYS}
    return merged, own, index_params


def fit_price_model(
    train: pd.DataFrame,
    params: dict[str, Any] | None = None,
    *,
    interval_level: float = 0.8,
    calibration_months: int = 12,
    early_stopping_months: int = 3,
    bounds: Mapping[str, float] | Any | None = None,
) -> HomePriceModel:
    """Fit index and trees on ``train`` (a ``feature_table``), calibrate the interval, return the model.

    Order (each step uses only earlier months than the slice it is judged on):
    1. calibration slice = last ``calibration_months`` of ``train``; early-stopping slice = the months before;
    2. index on the rest, trees on log price minus index with early stopping, then refit on rest + ES months;
    3. conformal scores = |log error| on the calibration slice, with the index *forecast* into it, as serving
       will forecast into the months after training; each score keeps its horizon (months after the cut),
       so the interval widens with the horizon as the error does (``HomePriceModel.horizon_half_widths``).
       A history too short for ``calibration_months`` gets a shorter calibration slice (half of the
       months left after early stopping, at least one), recorded in ``facts["calibration_months"]``;
    4. the index is refit on all of ``train`` (aligned to the old level) so the served level includes the
       newest months; with ``refit_on_calibration`` (default) the trees are refit on all of ``train`` too,
       keeping the scores of the trees that had not seen the calibration months (measured: MdAPE -0.1 to
       -0.3 points, coverage unchanged).

    Coordinates are used when the training rows have them (``input_fields`` and ``feature_names`` say
    so); ``bounds`` (the configuration's ``data.bounds``) is recorded for request checks, see
    ``training_bounds``.
    """
    started = time.perf_counter()
    lgb_params, own, index_params = _split_params(params or {})
    train = train.sort_values("sale_date", kind="stable")
    span = len(month_of(train).unique())
    calibration_months = max(1, min(calibration_months, (span - early_stopping_months) // 2))
    hedonic = None
    if own["hedonic_offset"]:  # from the rows before the calibration slice, as the trees scored on it
        head = split_tail(train, calibration_months)[0]
        hedonic = fit_hedonic(head, np.log(head["sale_price"].to_numpy()))

    def offset(frame: pd.DataFrame) -> np.ndarray | float:
        return 0.0 if hedonic is None else hedonic.value(frame)

    repeat = bool(own["repeat_sales"]) and PARCEL_INPUT in train and bool(train[PARCEL_INPUT].notna().any())
    if repeat:  # each sale's previous sale of the same parcel, in an earlier month only (net of the offset)
        prev_month, prev_price = previous_sales(
            train[PARCEL_INPUT],
            train["months_since_origin"],
            np.log(train["sale_price"].to_numpy()) - offset(train),
        )
        train = train.assign(_prev_month=prev_month, _prev_log_price=prev_price)
    split = training_split(train, calibration_months, early_stopping_months)
    use_index = bool(own["use_market_index"])
    coordinates = all(c in train and train[c].notna().any() for c in COORDINATE_INPUTS)
    feature_names = [
        f
        for f in FEATURES
        if (own["time_feature"] or not use_index or f != "months_since_origin")
        and (coordinates or f not in COORDINATE_FEATURES)
    ]
    input_fields = [c for c in INPUT_FIELDS if coordinates or c not in COORDINATE_INPUTS]
    if repeat:
        feature_names += list(REPEAT_FEATURES)
        input_fields.append(PARCEL_INPUT)
    categories = sorted(train["location"].astype(str).unique())

    def fit_index(frame: pd.DataFrame) -> MarketIndex | None:
        if not use_index:
            return None
        return MarketIndex(params=index_params).fit(frame, np.log(frame["sale_price"].to_numpy()))

    def target(frame: pd.DataFrame, index: MarketIndex | None) -> np.ndarray:
        y = np.log(frame["sale_price"].to_numpy()) - offset(frame)
        if index is None:
            return y
        return y - index.value(
            frame["location"].astype(str).to_numpy(), frame["months_since_origin"].to_numpy()
        )

    def last_sales(frame: pd.DataFrame) -> LastSales | None:
        if not repeat:
            return None
        return LastSales.from_sales(
            frame[PARCEL_INPUT],
            frame["months_since_origin"],
            np.log(frame["sale_price"].to_numpy()) - offset(frame),
        )

    def design(frame: pd.DataFrame) -> pd.DataFrame:
        table = frame.reindex(columns=list(FEATURES))
        if repeat:  # against the model's current index, as serving computes them
            table = table.assign(
                **repeat_features(
                    frame["_prev_month"].to_numpy(),
                    frame["_prev_log_price"].to_numpy(),
                    frame["months_since_origin"].to_numpy(dtype=float),
                    frame["location"].astype(str).to_numpy(),
                    model.index,
                )
            )
        return model._design(table)[feature_names]

    seeds = max(int(own["bagging_seeds"]), 1)

    blend = []
    for i, b in enumerate(own["blend"] or ()):
        if not isinstance(b, Mapping):
            raise ValueError(f"blend: entry {i} ({b!r}) is not a mapping of LightGBM parameters")
        blend.append(dict(b))

    def fit_trees(x: pd.DataFrame, y: np.ndarray, rounds: int, n: int = 1, served: bool = True) -> None:
        """``model.booster`` (and ``extra_boosters`` when ``n`` > 1: bagging) on ``x``, ``y``.

        With ``served`` and a ``blend``, the blend's boosters are fit too and all are merged into one.
        """
        seed = int(lgb_params.get("seed", 0))
        boosters = [
            lgb.train({**lgb_params, "seed": seed + i}, lgb.Dataset(x, y), num_boost_round=rounds)
            for i in range(n)
        ]
        if served and blend:
            others = [
                lgb.train(
                    {**lgb_params, **b, "seed": seed + n + i}, lgb.Dataset(x, y), num_boost_round=rounds
                )
                for i, b in enumerate(blend)
            ]
            boosters = [merge_boosters(boosters + others)]
        model.booster = boosters[0]
        model.extra_boosters = boosters[1:] or None

    fit_all = split.fit_all
    model = HomePriceModel(
        booster=None,  # type: ignore[arg-type]
        index=fit_index(fit_all),
        feature_names=feature_names,
        location_categories=categories,
        calibration_scores=np.zeros(0),
        interval_level=interval_level,
        trained_through=month_of(fit_all).max(),
        locations={},
        params={**lgb_params, **own, **index_params.__dict__},
        input_fields=input_fields,
        bounds=training_bounds(train, bounds),
        horizon_monotone=str(own["horizon_monotone"]),
    )
    model.hedonic = hedonic

    design_all = design(fit_all)
    y_all = target(fit_all, model.index)
    n_fit = len(split.fit)
    rounds = int(own["num_boost_round"])
    best_iteration = rounds
    if len(split.early_stopping) and own["early_stopping_rounds"]:
        # The index for the early-stopping months is fit on the same rows; its level is a handful of
        # parameters per month, so it barely favours those rows, while the trees never see them.
        dtrain = lgb.Dataset(design_all.iloc[:n_fit], y_all[:n_fit])
        dvalid = lgb.Dataset(design_all.iloc[n_fit:], y_all[n_fit:], reference=dtrain)
        probe = lgb.train(
            lgb_params,
            dtrain,
            num_boost_round=rounds,
            valid_sets=[dvalid],
            callbacks=[lgb.early_stopping(int(own["early_stopping_rounds"]), verbose=False)],
        )
        best_iteration = max(int(probe.best_iteration or rounds), 1)
        # More rows after refitting on fit + ES months: scale the rounds up by the row ratio (capped).
        best_iteration = int(best_iteration * min(len(fit_all) / max(n_fit, 1), 1.25))
    # Bagged here only if these trees are served; otherwise the conformal scores come from one booster
    # (slightly conservative, as with refit_on_calibration).
    served_now = not (len(split.calibration) and own["refit_on_calibration"])
    bag_now = served_now or bool(own["bagging_seeds_calibration"])
    fit_trees(design_all, y_all, best_iteration, seeds if bag_now else 1, bag_now)
    model.params["best_iteration"] = best_iteration

    if len(split.calibration):
        cal = split.calibration
        model.last_sales = last_sales(fit_all)  # calibration homes see only sales before the cut
        log_pred = model.predict_log(cal[input_fields])
        model.set_calibration(
            np.abs(np.log(cal["sale_price"].to_numpy()) - log_pred),
            cal["months_since_origin"].to_numpy(dtype=float) - model.reference_month,
        )
        refit = fit_index(train)
        if refit is not None and model.index is not None:
            # Align the refit index to the one the trees learned against, over the rows they learned from:
            # the index's absolute level is arbitrary, and a shift would bias every prediction.
            loc, t = fit_all["location"].astype(str).to_numpy(), fit_all["months_since_origin"].to_numpy()
            shift = float(np.mean(model.index.value(loc, t) - refit.value(loc, t)))
            refit.month_effect = refit.month_effect + shift
        model.index = refit
        if own["refit_on_calibration"]:
            rounds_all = int(best_iteration * min(len(train) / max(len(fit_all), 1), 1.25))
            fit_trees(design(train), target(train, model.index), rounds_all, seeds)

    model.last_sales = last_sales(train)  # serving: every parcel's last training sale

    model.trained_through = month_of(train).max()
    model.locations = {
        str(k): int(v) for k, v in train["location"].astype(str).value_counts().sort_index().items()
    }
    model.facts = {
        "train_rows": len(train),
        "fit_rows": len(fit_all),
        "calibration_rows": len(split.calibration),
        "calibration_months": calibration_months,
        "early_stopping_rows": len(split.early_stopping),
        "ranges": split.ranges(),
        "best_iteration": best_iteration,
        "conformal_half_width_log": model.conformal_quantile(),
        "fit_seconds": round(time.perf_counter() - started, 2),
    }
    return model
