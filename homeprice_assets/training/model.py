"""The served home-price model: raw sale fields in, price with a calibrated interval out.

``log price = market index(location, month) + trees(features)``. The index (``market_index.py``) carries the
price level and its trend past the last training month; LightGBM learns the quality-adjusted rest, which does
not drift, so its inability to extrapolate no longer costs forward accuracy. The model does its own feature
engineering with ``make_features`` so that serving needs nothing but the raw fields.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from homeprice_assets.features.engineering import (
    FEATURE_VERSION,
    FEATURES,
    INPUT_FIELDS,
    make_features,
)
from homeprice_assets.training.comparables import COMPS_FEATURES, Comparables
from homeprice_assets.training.market_index import IndexParams, MarketIndex
from homeprice_assets.training.splits import month_of, training_split

DEFAULT_PARAMS: dict[str, Any] = {
    # L1 (median) loss: a few non-market sales (family transfers, teardowns) must not pull valuations
    "objective": "regression_l1",
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
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
    "comps_k": 0,  # comparable sales per home for the comp_* features (0: off; no gain measured here)
    # market index settings (see market_index.IndexParams)
    **asdict(IndexParams()),
}
_OWN_KEYS = (
    "num_boost_round",
    "early_stopping_rounds",
    "use_market_index",
    "time_feature",
    "comps_k",
    "refit_on_calibration",
)
INDEX_KEYS = tuple(IndexParams.__dataclass_fields__)


class HomePriceModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: ``predict`` returns ``price``, ``price_lower``, ``price_upper`` for each input row.

    ``sale_date`` may be omitted (or null): the home is then valued as of ``trained_through``, the last month
    the model has seen, the freshest date for which its price level is estimated rather than forecast.
    """

    # Class-level defaults for attributes added after a model may have been pickled: a champion logged by an
    # older release must still load and predict (the class is pickled by reference, its state by value).
    comparables: Comparables | None = None
    _explainer: Any = None

    def __init__(
        self,
        booster: lgb.Booster,
        index: MarketIndex | None,
        feature_names: list[str],
        location_categories: list[str],
        calibration_scores: np.ndarray,
        interval_level: float,
        trained_through: str,
        locations: dict[str, int],
        params: dict[str, Any],
        facts: dict[str, Any] | None = None,
        comparables: Comparables | None = None,
    ) -> None:
        self.booster = booster
        self.index = index
        self.feature_names = list(feature_names)
        self.location_categories = list(location_categories)
        self.calibration_scores = np.sort(np.asarray(calibration_scores, dtype=float))
        self.interval_level = float(interval_level)
        self.trained_through = trained_through
        self.locations = dict(locations)
        self.params = dict(params)
        self.input_fields = list(INPUT_FIELDS)
        self.feature_version = FEATURE_VERSION
        self.facts = dict(facts or {})
        self.comparables = comparables
        self._explainer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_explainer"] = None  # rebuilt on demand; SHAP explainers do not pickle reliably
        return state

    # ---------------------------------------------------------------------------------------------------
    @property
    def reference_date(self) -> pd.Timestamp:
        """ "Today" for requests without ``sale_date``: the first day of the last training month."""
        return pd.Timestamp(f"{self.trained_through}-01")

    def conformal_quantile(self, level: float | None = None) -> float:
        """Split-conformal half-width (log units) for ``level``, with the finite-sample correction."""
        level = self.interval_level if level is None else float(level)
        scores = self.calibration_scores
        n = len(scores)
        if n == 0:
            return float("inf")
        k = int(np.ceil((n + 1) * level))
        return float(scores[min(k, n) - 1])

    def _inputs(self, model_input: pd.DataFrame) -> pd.DataFrame:
        frame = pd.DataFrame(model_input).copy()
        date = pd.to_datetime(frame["sale_date"], errors="coerce") if "sale_date" in frame else None
        if date is None:
            date = pd.Series(pd.NaT, index=frame.index)
        frame["sale_date"] = date.fillna(self.reference_date)
        return frame

    def features(self, model_input: pd.DataFrame) -> pd.DataFrame:
        """The model's feature frame for raw inputs (location as the training categories, comparables)."""
        return self._design(make_features(self._inputs(model_input)))

    def _design(self, feats: pd.DataFrame, self_rows: np.ndarray | None = None) -> pd.DataFrame:
        feats = feats.copy()
        feats["location"] = pd.Categorical(feats["location"].astype(str), categories=self.location_categories)
        if self.comparables is not None:
            comps = self.comparables.transform(feats["latitude"], feats["longitude"], self_rows)
            for i, name in enumerate(COMPS_FEATURES):
                feats[name] = comps[:, i]
        return feats

    def _index(self, feats: pd.DataFrame) -> np.ndarray:
        if self.index is None:
            return np.zeros(len(feats))
        return self.index.value(
            feats["location"].astype(str).to_numpy(), feats["months_since_origin"].to_numpy()
        )

    def predict_log(self, model_input: pd.DataFrame) -> np.ndarray:
        """Log price for raw inputs."""
        feats = self.features(model_input)
        return self.booster.predict(feats[self.feature_names]) + self._index(feats)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Price and interval; ``params={"interval_level": 0.9}`` asks for another coverage level."""
        level = (params or {}).get("interval_level") or self.interval_level
        log_price = self.predict_log(model_input)
        q = self.conformal_quantile(level)
        index = model_input.index if isinstance(model_input, pd.DataFrame) else None
        return pd.DataFrame(
            {
                "price": np.exp(log_price),
                "price_lower": np.exp(log_price - q),
                "price_upper": np.exp(log_price + q),
            },
            index=index,
        )

    # ---------------------------------------------------------------------------------------------------
    def explain(self, df: pd.DataFrame) -> pd.DataFrame:
        """Per-row contributions in log-price units: one column per tree feature, ``market_index``, and
        ``base_value``; each row sums to the predicted log price.

        Uses SHAP's TreeExplainer; LightGBM's built-in TreeSHAP (the same algorithm) is the fallback when
        SHAP cannot read the booster. ``explain.method`` in ``attrs`` says which one ran.
        """
        feats = self.features(df)
        x = feats[self.feature_names]
        method = "shap.TreeExplainer"
        try:
            import shap

            if self._explainer is None:
                self._explainer = shap.TreeExplainer(self.booster)
            values = np.asarray(self._explainer.shap_values(x))
            base = float(np.ravel(self._explainer.expected_value)[0])
            base_values = np.full(len(x), base)
        except Exception:  # pragma: no cover - depends on the SHAP/LightGBM pair
            method = "lightgbm.pred_contrib"
            contrib = self.booster.predict(x, pred_contrib=True)
            values, base_values = contrib[:, :-1], contrib[:, -1]
        out = pd.DataFrame(values, columns=self.feature_names, index=df.index)
        out["market_index"] = self._index(feats)
        out["base_value"] = base_values
        out.attrs["method"] = method
        return out


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
    calibration_months: int = 3,
    early_stopping_months: int = 3,
) -> HomePriceModel:
    """Fit index and trees on ``train`` (a ``feature_table``), calibrate the interval, return the model.

    Order (each step uses only earlier months than the slice it is judged on):
    1. calibration slice = last ``calibration_months`` of ``train``; early-stopping slice = the months before;
    2. index on the rest, trees on log price minus index with early stopping, then refit on rest + ES months;
    3. conformal scores = |log error| on the calibration slice, with the index *forecast* into it, as serving
       will forecast into the months after training;
    4. the index is refit on all of ``train`` (aligned to the old level) so the served level includes the
       newest months; with ``refit_on_calibration`` (default) the trees are refit on all of ``train`` too,
       keeping the scores of the trees that had not seen the calibration months (measured: MdAPE -0.1 to
       -0.3 points, coverage unchanged).
    """
    started = time.perf_counter()
    lgb_params, own, index_params = _split_params(params or {})
    train = train.sort_values("sale_date", kind="stable")
    split = training_split(train, calibration_months, early_stopping_months)
    use_index = bool(own["use_market_index"])
    feature_names = [
        f for f in FEATURES if own["time_feature"] or not use_index or f != "months_since_origin"
    ]
    categories = sorted(train["location"].astype(str).unique())

    def fit_index(frame: pd.DataFrame) -> MarketIndex | None:
        if not use_index:
            return None
        return MarketIndex(params=index_params).fit(frame, np.log(frame["sale_price"].to_numpy()))

    def target(frame: pd.DataFrame, index: MarketIndex | None) -> np.ndarray:
        y = np.log(frame["sale_price"].to_numpy())
        if index is None:
            return y
        return y - index.value(
            frame["location"].astype(str).to_numpy(), frame["months_since_origin"].to_numpy()
        )

    fit_all = split.fit_all
    comps_k = int(own["comps_k"])
    if comps_k:
        feature_names += list(COMPS_FEATURES)
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
    )

    def set_comparables(pool: pd.DataFrame) -> None:
        if comps_k:
            value = target(pool, model.index) - pool["log_living_sf"].to_numpy()
            model.comparables = Comparables(k=comps_k).fit(pool["latitude"], pool["longitude"], value)

    set_comparables(fit_all)
    # Training rows are their own pool: each row's comparables leave the row itself out.
    design = model._design(fit_all[list(FEATURES)], self_rows=np.arange(len(fit_all)))[feature_names]
    y_all = target(fit_all, model.index)
    n_fit = len(split.fit)
    rounds = int(own["num_boost_round"])
    best_iteration = rounds
    if len(split.early_stopping) and own["early_stopping_rounds"]:
        # The index for the early-stopping months is fit on the same rows; its level is a handful of
        # parameters per month, so it barely favours those rows, while the trees never see them.
        dtrain = lgb.Dataset(design.iloc[:n_fit], y_all[:n_fit])
        dvalid = lgb.Dataset(design.iloc[n_fit:], y_all[n_fit:], reference=dtrain)
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
    model.booster = lgb.train(lgb_params, lgb.Dataset(design, y_all), num_boost_round=best_iteration)
    model.params["best_iteration"] = best_iteration

    if len(split.calibration):
        cal = split.calibration
        log_pred = model.predict_log(cal[list(INPUT_FIELDS)])
        model.calibration_scores = np.sort(np.abs(np.log(cal["sale_price"].to_numpy()) - log_pred))
        refit = fit_index(train)
        if refit is not None and model.index is not None:
            # Align the refit index to the one the trees learned against, over the rows they learned from:
            # the index's absolute level is arbitrary, and a shift would bias every prediction.
            loc, t = fit_all["location"].astype(str).to_numpy(), fit_all["months_since_origin"].to_numpy()
            shift = float(np.mean(model.index.value(loc, t) - refit.value(loc, t)))
            refit.month_effect = refit.month_effect + shift
        model.index = refit
        set_comparables(train)  # serving compares with every training sale, the newest included
        if own["refit_on_calibration"]:
            design = model._design(train[list(FEATURES)], self_rows=np.arange(len(train)))[feature_names]
            rounds_all = int(best_iteration * min(len(train) / max(len(fit_all), 1), 1.25))
            model.booster = lgb.train(
                lgb_params, lgb.Dataset(design, target(train, model.index)), num_boost_round=rounds_all
            )

    model.trained_through = month_of(train).max()
    model.locations = {
        str(k): int(v) for k, v in train["location"].astype(str).value_counts().sort_index().items()
    }
    model.facts = {
        "train_rows": len(train),
        "fit_rows": len(fit_all),
        "calibration_rows": len(split.calibration),
        "early_stopping_rows": len(split.early_stopping),
        "ranges": split.ranges(),
        "best_iteration": best_iteration,
        "conformal_half_width_log": model.conformal_quantile(),
        "fit_seconds": round(time.perf_counter() - started, 2),
    }
    return model
