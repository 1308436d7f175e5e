"""A hedonic market index: the log price level by month and location, with a trend forecast for later months.

Trees cannot extrapolate: a model trained through December sees no price above December's level, so in a
rising market every forward valuation is too low. The price model therefore learns log price *minus* this
index (quality-adjusted) and adds the index back, extrapolated by its recent trend, for months after training.

The index is one penalised least-squares fit (sparse normal equations, well under a second on 40k sales):

    log price ~ hedonic covariates + location + month effect(t) + location deviation(location, t)

``month effect`` is a per-month coefficient with a roughness penalty on its differences (so thin months are
smoothed); the location deviation is a piecewise-linear spline in time per location with a ridge penalty (so
small locations fall back on the city-wide index).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

HEDONIC_COLUMNS: tuple[str, ...] = (
    "log_living_sf",
    "log_lot_sf",
    "bldg_grade",
    "beds",
    "baths",
    "age",
    "eff_age",
    "renovated",
    "waterfront",
    "latitude",
    "longitude",
    "grade_x_log_living",
)
QUADRATIC_COLUMNS: tuple[str, ...] = ("log_living_sf", "log_lot_sf", "bldg_grade")


@dataclass
class IndexParams:
    """Penalties and forecast settings (defaults chosen by forward error on 2013-2016 cut-offs)."""

    month_smoothing: float = 200.0  # penalty on month-to-month changes of the city-wide index
    difference_order: int = 2  # 1: random walk (flat at the end); 2: local linear trend
    # Shrinks location deviations (in time) towards the city-wide index. 300 against 30: forward MdAPE
    # 2015 8.50 -> 8.40%, 2016 8.62 -> 8.52% (bench/forward_bench.py); local trends are mostly noise
    # the trees then read as level (100: 8.49/8.62%, 1000: 8.47/8.64%).
    location_ridge: float = 300.0
    knot_months: int = 6  # spacing of the location spline knots
    trend_months: int = 24  # months used to estimate the forecast slope
    damping: float = 1.0  # per-month damping of the forecast slope (1 = straight line)
    max_horizon: int = 24  # the forecast stops rising after this many months
    seasonal: bool = True  # month-of-year effects (spring sells dearer than winter), repeated in forecasts
    seasonal_ridge: float = 10.0
    # Huber reweighting passes, so that sales far off the market (non-arm's-length) count less
    robust_iterations: int = 2
    huber_delta: float = 0.2  # log-price residual beyond which a sale is down-weighted
    # At most this many sales (a seeded uniform sample) enter the fit: the index has about a thousand
    # coefficients, and its normal equations cost rows x nonzeros^2 per Huber pass (30 s of a 1M-sale
    # update, most of it here). None: every sale. The bundled data (43k) is never sampled.
    max_rows: int | None = 250_000


@dataclass
class MarketIndex:
    """Fitted index; ``value(location, t)`` is the log level for absolute month numbers ``t``."""

    params: IndexParams = field(default_factory=IndexParams)
    first_month: int = 0
    last_month: int = 0
    month_effect: np.ndarray = field(default_factory=lambda: np.zeros(0))
    knots: np.ndarray = field(default_factory=lambda: np.zeros(0))
    location_dev: dict[str, np.ndarray] = field(default_factory=dict)
    slope: float = 0.0
    seasonal_effect: np.ndarray = field(default_factory=lambda: np.zeros(12))
    fit_rows: int = 0  # sales the fit used (fewer than given when sampled, see IndexParams.max_rows)

    # ----------------------------------------------------------------------------------------------------
    def fit(self, features: pd.DataFrame, log_price: np.ndarray) -> MarketIndex:
        """Estimate the index from a feature table (``make_features`` output) and log prices."""
        p = self.params
        log_price = np.asarray(log_price, dtype=float)
        if p.max_rows is not None and len(features) > p.max_rows:
            keep = np.sort(np.random.default_rng(0).choice(len(features), int(p.max_rows), replace=False))
            features, log_price = features.iloc[keep], log_price[keep]
        self.fit_rows = len(features)
        t = features["months_since_origin"].to_numpy(dtype=int)
        self.first_month, self.last_month = int(t.min()), int(t.max())
        n_months = self.last_month - self.first_month + 1
        locations = features["location"].astype(str).to_numpy()
        loc_levels = np.array(sorted(set(locations)))
        loc_code = np.searchsorted(loc_levels, locations)
        n = len(features)

        # Covariates the data has (a source without coordinates, or without grades, still gets an index).
        present = [c for c in HEDONIC_COLUMNS if c in features and features[c].notna().any()]
        hed = features[present].astype(float)
        hed = hed.fillna(hed.median()).fillna(0.0)
        hed = ((hed - hed.mean()) / hed.std(ddof=0).replace(0, 1)).to_numpy()
        # Quadratic terms let the hedonic part bend (price per square foot falls with size, grade is convex).
        curved = [i for i, c in enumerate(present) if c in QUADRATIC_COLUMNS]
        hed = np.column_stack([hed, hed[:, curved] ** 2])

        self.knots = np.unique(
            np.append(np.arange(self.first_month, self.last_month + 1, p.knot_months), self.last_month)
        ).astype(float)
        basis = _hat_basis(t.astype(float), self.knots)  # n x K
        n_knots = basis.shape[1]

        rows = np.arange(n)
        blocks = [
            sparse.csr_matrix(np.column_stack([np.ones(n), hed])),
            sparse.csr_matrix((np.ones(n), (rows, loc_code)), shape=(n, len(loc_levels))),
            sparse.csr_matrix((np.ones(n), (rows, t - self.first_month)), shape=(n, n_months)),
        ]
        # location x knot interactions
        lb_rows = np.repeat(rows, n_knots)
        lb_cols = (loc_code[:, None] * n_knots + np.arange(n_knots)[None, :]).ravel()
        blocks.append(
            sparse.csr_matrix((basis.ravel(), (lb_rows, lb_cols)), shape=(n, len(loc_levels) * n_knots))
        )
        moy = (t % 12) if p.seasonal else np.zeros(n, dtype=int)
        blocks.append(sparse.csr_matrix((np.full(n, float(p.seasonal)), (rows, moy)), shape=(n, 12)))
        x = sparse.hstack(blocks).tocsr()

        sizes = [blocks[0].shape[1], len(loc_levels), n_months, len(loc_levels) * n_knots, 12]
        offsets = np.cumsum([0, *sizes])
        penalty = np.zeros((offsets[-1], offsets[-1]))
        penalty[np.arange(offsets[-1]), np.arange(offsets[-1])] = 1e-4
        m0, m1 = offsets[2], offsets[3]
        d = np.diff(np.eye(n_months), n=p.difference_order, axis=0) if n_months > p.difference_order else None
        if d is not None:
            penalty[m0:m1, m0:m1] += p.month_smoothing * d.T @ d
        idx = np.arange(offsets[3], offsets[4])
        penalty[idx, idx] += p.location_ridge
        sea = np.arange(offsets[4], offsets[5])
        penalty[sea, sea] += p.seasonal_ridge

        weights = np.ones(n)
        for _ in range(1 + max(p.robust_iterations, 0)):
            xw = x.multiply(weights[:, None]).tocsr()
            beta = np.linalg.solve((xw.T @ x).toarray() + penalty * weights.mean(), xw.T @ log_price)
            resid = np.abs(log_price - x @ beta)
            weights = np.minimum(1.0, p.huber_delta / np.maximum(resid, 1e-9))

        month = beta[m0:m1]
        self.month_effect = month - month[-1]  # level 0 at the last training month; only changes matter
        dev = beta[offsets[3] : offsets[4]].reshape(len(loc_levels), n_knots)
        self.location_dev = {str(loc): dev[i] for i, loc in enumerate(loc_levels)}
        seasonal = beta[offsets[4] : offsets[5]]
        self.seasonal_effect = (seasonal - seasonal.mean()) if p.seasonal else np.zeros(12)
        k = min(p.trend_months, n_months)
        if k >= 3:
            tt = np.arange(k, dtype=float)
            self.slope = float(np.polyfit(tt, self.month_effect[-k:], 1)[0])
        else:
            self.slope = 0.0
        return self

    # ----------------------------------------------------------------------------------------------------
    def city(self, t: np.ndarray) -> np.ndarray:
        """City-wide log level at months ``t`` (flat before training, trend-extrapolated after)."""
        t = np.asarray(t, dtype=float)
        inside = np.clip(t, self.first_month, self.last_month).astype(int) - self.first_month
        out = self.month_effect[inside].copy()
        h = np.clip(t - self.last_month, 0, self.params.max_horizon)
        ahead = h > 0
        if ahead.any():
            phi = self.params.damping
            steps = h[ahead] if phi == 1.0 else phi * (1 - phi ** h[ahead]) / (1 - phi)
            out[ahead] = self.month_effect[-1] + self.slope * steps
        return out + self.seasonal_effect[t.astype(int) % 12]

    def value(self, location: pd.Series | np.ndarray, t: np.ndarray) -> np.ndarray:
        """Log index for each (location, month); unknown locations get the city-wide index."""
        t = np.asarray(t, dtype=float)
        if len(t) == 1 and np.isfinite(t[0]) and len(self.knots):
            # one home: Python floats (a few microseconds) instead of ~20 NumPy calls on 1-element arrays
            loc = np.asarray(location, dtype=object).astype(str)[0]
            return np.array([self._value_one(str(loc), float(t[0]))])
        level = self.city(t)
        basis = _hat_basis(np.clip(t, self.first_month, self.last_month), self.knots)
        locs = np.asarray(location, dtype=object).astype(str)
        if len(locs) <= _FEW:  # one home: a dict lookup per row, not np.unique's sort and a mask per location
            for i, loc in enumerate(locs.tolist()):
                dev = self.location_dev.get(loc)
                if dev is not None:
                    level[i] += basis[i] @ dev
            return level
        for loc in np.unique(locs):
            dev = self.location_dev.get(loc)
            if dev is not None:
                mask = locs == loc
                level[mask] += basis[mask] @ dev
        return level

    def _value_one(self, location: str, t: float) -> float:
        """``value`` of one (location, month) with ``city`` and ``_hat_basis`` written out for a scalar."""
        first, last = self.first_month, self.last_month
        inside = min(max(t, first), last)
        ahead = min(max(t - last, 0.0), self.params.max_horizon)
        if ahead > 0:
            phi = self.params.damping
            steps = ahead if phi == 1.0 else phi * (1 - phi**ahead) / (1 - phi)
            level = float(self.month_effect[-1]) + self.slope * steps
        else:
            level = float(self.month_effect[int(inside) - first])
        level += float(self.seasonal_effect[int(t) % 12])
        dev = self.location_dev.get(location)
        if dev is None:
            return level
        knots = self.knots
        if len(knots) == 1:
            return level + float(dev[0])
        tc = min(max(inside, float(knots[0])), float(knots[-1]))
        j = min(max(bisect.bisect_right(knots.tolist(), tc) - 1, 0), len(knots) - 2)
        lo, hi = float(knots[j]), float(knots[j + 1])
        w = (tc - lo) / (hi - lo)
        return level + ((1 - w) * float(dev[j]) + w * float(dev[j + 1]))

    def table(self, months_ahead: int = 12) -> pd.DataFrame:
        """The index as a tidy table (month number, city level, forecast flag) for reports."""
        t = np.arange(self.first_month, self.last_month + months_ahead + 1)
        return pd.DataFrame({"month": t, "city_log_index": self.city(t), "forecast": t > self.last_month})


_FEW = 16  # up to this many rows, ``value`` loops over rows


def _hat_basis(t: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Piecewise-linear (hat) basis: each row is the linear interpolation weights of ``t`` between knots."""
    n, k = len(t), len(knots)
    out = np.zeros((n, k))
    if k == 1:
        out[:, 0] = 1.0
        return out
    tc = np.clip(t, knots[0], knots[-1])
    j = np.clip(np.searchsorted(knots, tc, side="right") - 1, 0, k - 2)
    w = (tc - knots[j]) / (knots[j + 1] - knots[j])
    out[np.arange(n), j] = 1 - w
    out[np.arange(n), j + 1] = w
    return out
