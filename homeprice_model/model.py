"""The served home-price model: raw sale fields in, price with a calibrated interval out.

``log price = market index(location, month) + trees(features)``. The index (``market_index.py``) carries the
price level and its trend past the last training month; LightGBM learns the quality-adjusted rest, which does
not drift. The model does its own feature engineering (``features.feature_columns``) so that serving needs
nothing but the raw fields.

Two entry points share one columnar core: ``predict`` (the MLflow pyfunc contract, a DataFrame in and out)
and ``predict_columns`` (a mapping of arrays in, arrays out), which prices one home in tens of microseconds
because no DataFrame is built and no schema is enforced; a service calls it after its own validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from homeprice_model.features import (
    COORDINATE_INPUTS,
    FEATURE_VERSION,
    INPUT_FIELDS,
    REQUIRED_INPUTS,
    TIME_ORIGIN,
    feature_columns,
    frame_columns,
)
from homeprice_model.hedonic import HedonicOffset
from homeprice_model.market_index import MarketIndex
from homeprice_model.repeat_sales import PARCEL_INPUT, REPEAT_FEATURES, LastSales, repeat_features

_ONE_THREAD_ROWS = 2_000
EXPLAIN_METHOD = "TreeSHAP (LightGBM pred_contrib)"
_SMALL = 64  # up to this many rows, plain dict lookups beat pandas' hashing
PRICE_COLUMNS: tuple[str, ...] = ("price", "price_lower", "price_upper")
# Bounds a model records (``HomePriceModel.bounds``): input field -> (minimum key, maximum key).
BOUNDED_FIELDS: dict[str, tuple[str, str]] = {
    "living_sf": ("min_living_sf", "max_living_sf"),
    "latitude": ("min_latitude", "max_latitude"),
    "longitude": ("min_longitude", "max_longitude"),
}


class RequestError(ValueError):
    """A request the model must not price; the message names the field, the rows and the reason."""


class UnknownLocationError(RequestError):
    """A request names a location the model was not trained on."""


class OutOfBoundsError(RequestError):
    """A request's value lies outside the range the model was trained on."""


def _rows(rows: np.ndarray) -> str:
    return ", ".join(str(r) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")


class HomePriceModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: ``predict`` returns ``price``, ``price_lower``, ``price_upper`` for each input row.

    ``sale_date`` may be omitted (or null): the home is then valued as of ``trained_through``, the last month
    the model has seen, the freshest date for which its price level is estimated rather than forecast.
    """

    # Class-level defaults for attributes added after a model may have been pickled: a champion logged by an
    # older release must still load and predict (the class is pickled by reference, its state by value).
    comparables: Any = None  # removed feature (no gain measured); only models pickled with it set it
    # LightGBM threads for batches over _ONE_THREAD_ROWS rows and for TreeSHAP of two rows or more: 0 is
    # every core (OpenMP's default; OMP_NUM_THREADS caps it). The service sets 1 (``serving_model``).
    predict_threads: int = 0
    _explainer: Any = None
    _codes: dict[str, int] | None = None
    bounds: dict[str, float] | None = None  # training range of BOUNDED_FIELDS; None: logged before bounds
    # Months from the calibration model's last training month to each calibration sale (aligned with
    # ``calibration_scores``); None: one interval width for every horizon (models logged before).
    calibration_horizons: np.ndarray | None = None
    # Each parcel's last training sale, for the repeat-sales features; None: a model without them.
    last_sales: LastSales | None = None
    _horizon_widths: dict[float, np.ndarray] | None = None
    # Boosters fit like ``booster`` with other seeds; the trees' output is the mean over all of them
    # (bagging). None or empty: one booster (models logged before).
    extra_boosters: list[lgb.Booster] | None = None
    # How per-horizon widths are made non-decreasing: "isotonic" (the least-squares monotone fit, weighted
    # by scores per horizon) or "cummax" (the running maximum, biased wide by noise: models logged before).
    horizon_monotone: str = "cummax"
    input_fields: list[str] = list(INPUT_FIELDS)
    # Linear hedonic part of the log price under the trees (homeprice_model/hedonic.py); None: models
    # logged before it, whose trees learned the whole of log price minus the index.
    hedonic: HedonicOffset | None = None

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
        input_fields: list[str] | None = None,
        bounds: Mapping[str, float] | None = None,
        calibration_horizons: np.ndarray | None = None,
        horizon_monotone: str = "cummax",
    ) -> None:
        if horizon_monotone not in ("isotonic", "cummax"):
            raise ValueError(f"horizon_monotone: {horizon_monotone!r} is not 'isotonic' or 'cummax'")
        self.horizon_monotone = horizon_monotone
        self.booster = booster
        self.index = index
        self.feature_names = list(feature_names)
        self.location_categories = list(location_categories)
        self.set_calibration(calibration_scores, calibration_horizons)
        self.interval_level = float(interval_level)
        self.trained_through = trained_through
        self.locations = dict(locations)
        self.params = dict(params)
        self.input_fields = list(input_fields or INPUT_FIELDS)
        self.feature_version = FEATURE_VERSION
        self.facts = dict(facts or {})
        self.bounds = {k: float(v) for k, v in bounds.items()} if bounds else None
        self.comparables = None
        self._explainer: Any = None
        self._codes = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_explainer"] = None  # unused: models pickled before explain used LightGBM's TreeSHAP set it
        state["_codes"] = None  # a cache of location_categories
        state["_horizon_widths"] = None  # a cache of horizon_half_widths
        return state

    # ---------------------------------------------------------------------------------------------------
    @property
    def reference_date(self) -> pd.Timestamp:
        """ "Today" for requests without ``sale_date``: the first day of the last training month."""
        return pd.Timestamp(f"{self.trained_through}-01")

    @property
    def reference_month(self) -> float:
        """``reference_date`` as months since the feature origin."""
        year, month = (int(p) for p in self.trained_through.split("-")[:2])
        return float((year - TIME_ORIGIN.year) * 12 + (month - TIME_ORIGIN.month))

    @property
    def boosters(self) -> list[lgb.Booster]:
        """The boosters whose mean is the trees' part of the log price: ``booster``, ``extra_boosters``."""
        return [self.booster, *(self.extra_boosters or ())]

    def threads_for(self, rows: int) -> int:
        """LightGBM threads to predict ``rows`` rows: one for small batches, ``predict_threads`` above
        ``_ONE_THREAD_ROWS`` (see ``_log_price``)."""
        return 1 if rows <= _ONE_THREAD_ROWS else self.predict_threads

    def tree_values(self, x: Any, num_threads: int = 1) -> np.ndarray:
        """The trees' part of the log price for a design matrix (or frame): the mean over ``boosters``."""
        out = self.booster.predict(x, num_threads=num_threads)
        if self.extra_boosters:
            for booster in self.extra_boosters:
                out = out + booster.predict(x, num_threads=num_threads)
            out = out / (1 + len(self.extra_boosters))
        return out

    @property
    def uses_coordinates(self) -> bool:
        return all(c in self.input_fields for c in COORDINATE_INPUTS)

    def set_calibration(self, scores: Any, horizons: Any = None) -> None:
        """Conformal scores (|log error| on sales the trees never saw), with their horizons when known."""
        scores = np.asarray(scores, dtype=float)
        order = np.argsort(scores, kind="stable")
        self.calibration_scores = scores[order]
        if horizons is not None:
            horizons = np.asarray(horizons, dtype=float)
            if horizons.shape != scores.shape:
                raise ValueError(f"calibration_horizons: {horizons.shape} for {scores.shape} scores")
            self.calibration_horizons = horizons[order]
        else:
            self.calibration_horizons = None
        self._horizon_widths = None

    def horizon_half_widths(self, level: float | None = None) -> np.ndarray:
        """Half-width (log units) for horizons 1..H months after ``trained_through`` (entry h-1).

        Error grows with the horizon (the price level is forecast further), so one width for every horizon
        under-covers late months. Each horizon's width is the split-conformal quantile of the scores taken
        that many months (+-1, for sample size) after the calibration model's cut-off, made non-decreasing
        (``horizon_monotone``). Horizons beyond the calibrated ones keep the last width.

        The running maximum of noisy quantiles is wide by construction: one high early month sets every
        later width (2015: 21.2% at all horizons where the quantiles ranged 18.8-21.2%). ``"isotonic"``
        pools such months with their neighbours instead: forward coverage 2013-2015 came nearer the
        nominal level, but 2016's third quarter fell below 78%, so the default stays ``"cummax"``.
        """
        level = self.interval_level if level is None else float(level)
        cache = self._horizon_widths
        if cache is None:
            cache = self._horizon_widths = {}
        if level not in cache:
            scores, horizons = self.calibration_scores, self.calibration_horizons
            last = int(np.nanmax(horizons)) if horizons is not None and len(horizons) else 0
            widths, counts = [], []
            for h in range(1, max(last, 1) + 1):
                near = scores[np.abs(horizons - h) <= 1] if last else scores
                n = len(near)
                k = int(np.ceil((n + 1) * level))
                widths.append(float(near[min(k, n) - 1]) if n else self.conformal_quantile(level))
                counts.append(max(n, 1))
            if self.horizon_monotone == "isotonic":
                cache[level] = isotonic(np.array(widths), np.array(counts, dtype=float))
            else:
                cache[level] = np.maximum.accumulate(np.array(widths))
        return cache[level]

    def interval_half_widths(self, months: np.ndarray, level: float | None = None) -> np.ndarray:
        """Per-row half-width (log units) for homes valued at ``months`` (months since the origin).

        Months up to ``trained_through`` (or missing) count as horizon 1; models without calibration
        horizons use one width for all rows.
        """
        months = np.asarray(months, dtype=float)
        if self.calibration_horizons is None or not len(self.calibration_horizons):
            return np.full(len(months), self.conformal_quantile(level))
        widths = self.horizon_half_widths(level)
        ahead = months - self.reference_month
        ahead[np.isnan(ahead)] = 1.0  # no date: valued at the reference month
        return widths[np.clip(ahead, 1, len(widths)).astype(int) - 1]

    def conformal_quantile(self, level: float | None = None) -> float:
        """Split-conformal half-width (log units) for ``level``, with the finite-sample correction."""
        level = self.interval_level if level is None else float(level)
        scores = self.calibration_scores
        n = len(scores)
        if n == 0:
            return float("inf")
        k = int(np.ceil((n + 1) * level))
        return float(scores[min(k, n) - 1])

    # --------------------------------------------------------------------------- the columnar core
    def _location_codes(self, locations: np.ndarray) -> np.ndarray:
        """Category codes as LightGBM's pandas path makes them (unknown -> NaN)."""
        if len(locations) > _SMALL:  # hashed in C for batches
            codes = pd.Categorical(locations, categories=self.location_categories).codes.astype(np.float64)
            codes[codes < 0] = np.nan
            return codes
        lookup = self._codes
        if lookup is None:
            lookup = self._codes = {c: i for i, c in enumerate(self.location_categories)}
        return np.array([lookup.get(loc, np.nan) for loc in locations], dtype=np.float64)

    def feature_arrays(self, columns: Mapping[str, Any], n: int | None = None) -> dict[str, np.ndarray]:
        """Features of raw input columns, with a missing ``sale_date`` valued at ``reference_month``."""
        feats = feature_columns(columns, n)
        months = feats["months_since_origin"]
        missing = np.isnan(months)
        if missing.any():
            months[missing] = self.reference_month
        if REPEAT_FEATURES[0] in self.feature_names:
            # The parcel's last training sale, if it came before the valued month (``parcel_id`` optional).
            parcels = columns.get(PARCEL_INPUT)
            if self.last_sales is not None and parcels is not None:
                prev_months, prev_prices = self.last_sales.lookup(parcels, len(months))
                feats.update(repeat_features(prev_months, prev_prices, months, feats["location"], self.index))
            else:  # no parcel given (or no sales kept): no previous sale, as repeat_features would find
                feats.update({name: np.full(len(months), np.nan) for name in REPEAT_FEATURES})
        return feats

    def design_matrix(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        """(rows x ``feature_names``) float64 matrix for ``Booster.predict``; location as its code."""
        cols = [
            self._location_codes(feats[name]) if name == "location" else self._extra(feats, name)
            for name in self.feature_names
        ]
        return np.column_stack(cols) if cols else np.zeros((0, 0))

    def _extra(self, feats: Mapping[str, np.ndarray], name: str) -> np.ndarray:
        if name in feats:
            return np.asarray(feats[name], dtype=np.float64)
        if self.comparables is not None and name in ("comp_log_ppsf", "comp_dist_km"):
            # Only a model pickled with the removed comparables feature gets here.
            comps = self.comparables.transform(feats["latitude"], feats["longitude"])
            return comps[:, ("comp_log_ppsf", "comp_dist_km").index(name)]
        raise KeyError(f"feature {name!r} is not computed by this release of homeprice_model")

    def _index_values(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        if self.index is None:
            return np.zeros(len(feats["location"]))
        return self.index.value(feats["location"], feats["months_since_origin"])

    def _hedonic_values(self, feats: Mapping[str, np.ndarray]) -> np.ndarray | float:
        return 0.0 if self.hedonic is None else self.hedonic.value(feats)

    def predict_log_columns(self, columns: Mapping[str, Any], n: int | None = None) -> np.ndarray:
        """Log price for raw input columns (arrays, lists or scalars, one entry per home)."""
        return self._log_price(columns, n)[0]

    def _log_price(self, columns: Mapping[str, Any], n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(log price, valued month) for raw input columns."""
        feats = self.feature_arrays(columns, n)
        x = self.design_matrix(feats)
        if not len(x):
            return np.zeros(0), np.zeros(0)
        # One thread for small batches: OpenMP's thread start-up and spin-waiting cost more than the trees
        # (measured on one row: 0.06 ms with one thread, 0.28 ms with the default). Large batches use
        # ``predict_threads`` (every core unless set): prediction is one parallel loop over rows, with none
        # of training's per-iteration spin-waiting (training keeps ``num_threads``). 20,000 rows, 876
        # trees, 2 cores: 1.26 s on one thread, 0.64 s on two, 0.95-1.04 s with the other core busy.
        log_price = self.tree_values(x, num_threads=self.threads_for(len(x))) + self._index_values(feats)
        log_price = log_price + self._hedonic_values(feats)
        return log_price, feats["months_since_origin"]

    def _priced(
        self, log_price: np.ndarray, months: np.ndarray, level: float | None
    ) -> dict[str, np.ndarray]:
        q = self.interval_half_widths(months, level)
        return {
            "price": np.exp(log_price),
            "price_lower": np.exp(log_price - q),
            "price_upper": np.exp(log_price + q),
        }

    def predict_columns(
        self, columns: Mapping[str, Any], interval_level: float | None = None
    ) -> dict[str, np.ndarray]:
        """``price``, ``price_lower``, ``price_upper`` arrays for raw input columns.

        The fast path: no DataFrame, no schema enforcement. Callers validate first (see
        ``check_request``); results equal ``predict``'s on the same rows.
        """
        return self._priced(*self._log_price(columns), interval_level)

    # --------------------------------------------------------------------------- request checks
    def unknown_locations(self, locations: Any) -> np.ndarray:
        """Boolean mask of rows whose location the model never saw."""
        locations = np.atleast_1d(np.asarray(locations, dtype=object))
        if len(locations) > _SMALL:
            return ~pd.Series(locations).isin(list(self.locations)).to_numpy()
        known = self.locations
        return np.array([loc not in known for loc in locations], dtype=bool)

    def check_request(self, columns: Mapping[str, Any]) -> None:
        """Refuse rows the model must not price: unknown locations, values outside the training bounds.

        Raises ``UnknownLocationError`` / ``OutOfBoundsError`` naming the field, the values and the rows.
        Models logged before bounds were recorded (``bounds`` None) check locations only.
        """
        from homeprice_model.features import as_numbers, as_text

        raw_locations = np.atleast_1d(np.asarray(columns["location"], dtype=object))
        n = len(raw_locations)
        if n <= _SMALL and self._request_ok(columns, raw_locations):
            return  # the common case, one home valid, in plain Python; otherwise the checks below say why
        locations = as_text(columns["location"], n)
        bad = self.unknown_locations(locations)
        if bad.any():
            unknown = sorted(set(locations[bad]))
            shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise UnknownLocationError(
                f"location: unknown location(s) {shown} in row(s) {_rows(np.flatnonzero(bad))}; the model "
                f"knows {len(self.locations)} (see /locations)"
            )
        for field, lo, hi in self._bounds_given(columns):
            values = as_numbers(columns[field], n)
            with np.errstate(invalid="ignore"):
                out = (values < lo) | (values > hi)  # NaN (not given) is not out of bounds
            if out.any():
                rows = np.flatnonzero(out)
                raise OutOfBoundsError(
                    f"{field}: {values[rows[0]]:g} in row(s) {_rows(rows)} is outside the model's training "
                    f"range {lo:g}..{hi:g}"
                )

    def _bounds_given(self, columns: Mapping[str, Any]) -> list[tuple[str, float, float]]:
        """(field, low, high) of each bounded field the request gives and the model has bounds for."""
        bounds = self.bounds or {}
        return [
            (field, bounds[lo_key], bounds[hi_key])
            for field, (lo_key, hi_key) in BOUNDED_FIELDS.items()
            if columns.get(field) is not None and lo_key in bounds
        ]

    def _request_ok(self, columns: Mapping[str, Any], locations: np.ndarray) -> bool:
        """True when every row passes ``check_request``'s checks, in Python scalars: one home costs a
        few microseconds instead of ~20 in NumPy (per request in the service). False is not an error:
        it sends the rows through the array checks, which find and name the problem."""
        from homeprice_model.features import as_numbers

        known = self.locations
        if not all(type(loc) is str and loc in known for loc in locations.tolist()):
            return False  # a missing or non-text location: the array path decides what it is
        return not any(
            v < lo or v > hi  # NaN (not given) compares False: not out of bounds
            for field, lo, hi in self._bounds_given(columns)
            for v in as_numbers(columns[field], len(locations)).tolist()
        )

    # --------------------------------------------------------------------------- the pyfunc contract
    def features(self, model_input: pd.DataFrame) -> pd.DataFrame:
        """The model's feature frame for raw inputs (location as the training categories)."""
        frame = pd.DataFrame(model_input)
        feats = self.feature_arrays(frame_columns(frame), n=len(frame))
        return self._design(pd.DataFrame(feats, index=frame.index))

    def _design(self, feats: pd.DataFrame) -> pd.DataFrame:
        """``feats`` (a feature table) with ``location`` as the training categories, for LightGBM/SHAP."""
        feats = feats.copy()
        feats["location"] = pd.Categorical(feats["location"].astype(str), categories=self.location_categories)
        return feats

    def predict_log(self, model_input: pd.DataFrame) -> np.ndarray:
        """Log price for raw input rows (a DataFrame)."""
        frame = pd.DataFrame(model_input)
        return self.predict_log_columns(frame_columns(frame), n=len(frame))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Price and interval; ``params={"interval_level": 0.9}`` asks for another coverage level."""
        level = (params or {}).get("interval_level") or self.interval_level
        if isinstance(model_input, Mapping):
            return _price_frame(self.predict_columns(model_input, level), None)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        out = self._priced(*self._log_price(frame_columns(frame), n=len(frame)), level)
        return _price_frame(out, frame.index)

    # ---------------------------------------------------------------------------------------------------
    def explain(self, df: pd.DataFrame) -> pd.DataFrame:
        """Per-row contributions in log-price units: one column per tree feature, ``market_index``, and
        ``base_value``; each row sums to the predicted log price. A model with a ``hedonic`` offset adds
        each column's share of it to that feature's tree contribution (``HedonicOffset.contributions``) and
        its constant to ``base_value``.

        TreeSHAP (path-dependent, exact) as LightGBM computes it (``pred_contrib``): the very call SHAP's
        TreeExplainer makes for a LightGBM booster, without the explainer's Python copy of every tree, which
        cost as much as the explaining (1.2 of 5.9 s for 1,000 homes on an 876-tree model). With several
        boosters (bagging) the contributions are the mean of each booster's: SHAP values add up linearly.
        ``explain.method`` in ``attrs`` names the algorithm.
        """
        frame = pd.DataFrame(df)
        feats = self.feature_arrays(frame_columns(frame), n=len(frame))
        x = self._design(pd.DataFrame(feats, index=frame.index))[self.feature_names]
        # TreeSHAP costs milliseconds a row (predicting, microseconds): more threads pay from two rows up.
        threads = 1 if len(x) <= 1 else self.predict_threads
        contrib = np.mean(
            [b.predict(x, pred_contrib=True, num_threads=threads) for b in self.boosters], axis=0
        )
        values, base_values = contrib[:, :-1], contrib[:, -1]
        out = pd.DataFrame(values, columns=self.feature_names, index=frame.index)
        out["market_index"] = self._index_values(feats)
        if self.hedonic is not None:
            parts, constant = self.hedonic.contributions(feats)
            base_values = base_values + constant
            for column, part in parts.items():
                if column in out:
                    out[column] = out[column].to_numpy() + part
                else:  # a column the trees do not use: its share stays in the base value
                    base_values = base_values + part
        out["base_value"] = base_values
        out.attrs["method"] = EXPLAIN_METHOD
        return out


def isotonic(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to ``values`` in weighted least squares (pool adjacent
    violators)."""
    blocks: list[list[float]] = []  # [mean, weight, length]
    for v, w in zip(values.tolist(), weights.tolist(), strict=True):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            top, below = blocks.pop(), blocks.pop()
            weight = top[1] + below[1]
            blocks.append([(top[0] * top[1] + below[0] * below[1]) / weight, weight, top[2] + below[2]])
    return np.array([mean for mean, _, length in blocks for _ in range(int(length))], dtype=float)


_PRICE_INDEX = pd.Index(PRICE_COLUMNS)  # built once: converting the column list cost more than the frame


def _price_frame(out: Mapping[str, np.ndarray], index: pd.Index | None) -> pd.DataFrame:
    """The price columns as one float block (cheaper than from a dict), over the built column index."""
    return pd.DataFrame(
        np.column_stack([out[c] for c in PRICE_COLUMNS]), columns=_PRICE_INDEX, index=index, copy=False
    )


def required_inputs(model: HomePriceModel) -> tuple[str, ...]:
    """The inputs ``model`` cannot price without."""
    return tuple(c for c in REQUIRED_INPUTS if c in model.input_fields)
