"""Valuation metrics: accuracy in money and in percent, interval quality, and stability between versions.

Percent errors (MdAPE, PPE10/20) are what appraisal standards and users judge; RMSE/MAE in currency weigh
expensive homes most. All functions take plain arrays and are NaN-free by contract (callers drop rows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _arrays(*xs: object) -> list[np.ndarray]:
    return [np.asarray(x, dtype=float) for x in xs]


def rmse(y: object, pred: object) -> float:
    y, pred = _arrays(y, pred)
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def mae(y: object, pred: object) -> float:
    y, pred = _arrays(y, pred)
    return float(np.mean(np.abs(pred - y)))


def r2(y: object, pred: object) -> float:
    y, pred = _arrays(y, pred)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return float(1 - np.sum((y - pred) ** 2) / ss_tot) if ss_tot > 0 else float("nan")


def ape(y: object, pred: object) -> np.ndarray:
    """Absolute percentage error of each prediction, as a fraction of the sale price."""
    y, pred = _arrays(y, pred)
    return np.abs(pred - y) / y


def mape(y: object, pred: object) -> float:
    return float(np.mean(ape(y, pred)))


def mdape(y: object, pred: object) -> float:
    return float(np.median(ape(y, pred)))


def ppe(y: object, pred: object, within: float) -> float:
    """Share of predictions within ``within`` (e.g. 0.10) of the sale price."""
    return float(np.mean(ape(y, pred) <= within + 1e-12))


def coverage(y: object, lower: object, upper: object) -> float:
    """Share of sale prices inside their interval."""
    y, lower, upper = _arrays(y, lower, upper)
    return float(np.mean((y >= lower) & (y <= upper)))


def median_relative_width(lower: object, upper: object, pred: object) -> float:
    """Median of (upper - lower) / price: how wide a typical interval is, in percent of the price."""
    lower, upper, pred = _arrays(lower, upper, pred)
    return float(np.median((upper - lower) / pred))


def churn(pred_a: object, pred_b: object, threshold: float = 0.10) -> float:
    """Share of homes whose valuation moves more than ``threshold`` (relative to ``pred_a``)."""
    a, b = _arrays(pred_a, pred_b)
    return float(np.mean(np.abs(b - a) / a > threshold + 1e-12))


def price_metrics(y: object, pred: object) -> dict[str, float]:
    """The standard accuracy set, as logged to MLflow and gated on by promotion."""
    y, pred = _arrays(y, pred)
    return {
        "rmse": rmse(y, pred),
        "mae": mae(y, pred),
        "r2": r2(y, pred),
        "mape": mape(y, pred),
        "mdape": mdape(y, pred),
        "ppe10": ppe(y, pred, 0.10),
        "ppe20": ppe(y, pred, 0.20),
        "median_log_error": float(np.median(np.log(pred / y))),
        "n": float(len(y)),
    }


def interval_metrics(y: object, lower: object, upper: object, pred: object) -> dict[str, float]:
    return {
        "interval_coverage": coverage(y, lower, upper),
        "interval_median_width": median_relative_width(lower, upper, pred),
    }


def evaluate(y: object, predictions: pd.DataFrame) -> dict[str, float]:
    """Metrics for a prediction frame (``price`` and, when present, ``price_lower``/``price_upper``)."""
    out = price_metrics(y, predictions["price"])
    if {"price_lower", "price_upper"} <= set(predictions.columns):
        out.update(
            interval_metrics(y, predictions["price_lower"], predictions["price_upper"], predictions["price"])
        )
    return out


def error_by(y: object, pred: object, groups: object, name: str = "group") -> pd.DataFrame:
    """MdAPE, PPE10, median signed log error and count per group (month, location), sorted by group."""
    y, pred = _arrays(y, pred)
    frame = pd.DataFrame({name: np.asarray(groups), "ape": ape(y, pred), "log_err": np.log(pred / y)})
    grouped = frame.groupby(name, sort=True)
    return pd.DataFrame(
        {
            "n": grouped.size(),
            "mdape": grouped["ape"].median(),
            "ppe10": grouped["ape"].apply(lambda a: float(np.mean(a <= 0.10 + 1e-12))),
            "median_log_error": grouped["log_err"].median(),
        }
    ).reset_index()


# ------------------------------------------------------------------------------------------ ratio study
# IAAO Standard on Ratio Studies (2013): the bands a mass-appraisal model is held to. A sale ratio is
# valuation / sale price; level is the median ratio, uniformity COD, vertical equity PRD and PRB.
IAAO_BANDS: dict[str, tuple[float, float]] = {
    "median_ratio": (0.95, 1.05),
    "cod": (0.0, 15.0),
    "prd": (0.98, 1.03),
    "prb": (-0.05, 0.05),
}
RATIO_STUDY_KEYS: tuple[str, ...] = ("n", "median_ratio", "cod", "prd", "prb", "prb_low", "prb_high")


def _checked(y: object, pred: object) -> tuple[np.ndarray, np.ndarray]:
    y, pred = _arrays(y, pred)
    if y.shape != pred.shape:
        raise ValueError(f"sale prices ({y.shape}) and valuations ({pred.shape}) differ in length")
    if len(y) and (np.any(~(y > 0)) or np.any(~(pred > 0))):
        raise ValueError("sale prices and valuations must be positive numbers (no NaN) for a ratio study")
    return y, pred


def sale_ratios(y: object, pred: object) -> np.ndarray:
    """Valuation / sale price of each sale (1.0 = valued exactly at the price it sold for)."""
    y, pred = _checked(y, pred)
    return pred / y


def median_ratio(y: object, pred: object) -> float:
    """The level of valuations: median sale ratio (IAAO band 0.95-1.05)."""
    return float(np.median(sale_ratios(y, pred)))


def cod(y: object, pred: object) -> float:
    """Coefficient of dispersion: mean absolute deviation of the ratios from their median, in % of it.

    Uniformity (IAAO: at most 15 for homes, 10 for newer, homogeneous areas). The live ground-truth
    figures (``rollout``) and the validation report should share this one definition.
    """
    ratio = sale_ratios(y, pred)
    med = float(np.median(ratio))
    return float(100 * np.mean(np.abs(ratio - med)) / med)


def prd(y: object, pred: object) -> float:
    """Price-related differential: mean ratio / sale-weighted mean ratio (IAAO band 0.98-1.03).

    Above 1: cheap homes are valued high relative to dear ones (regressive); below 1: progressive.
    """
    y, pred = _checked(y, pred)
    return float(np.mean(pred / y) / (np.sum(pred) / np.sum(y)))


def prb(y: object, pred: object) -> tuple[float, float, float]:
    """Coefficient of price-related bias with its 95% interval: (prb, low, high).

    IAAO's regression: ``(ratio - median) / median`` on ``log2`` of a value proxy (half valuation over
    median ratio, half sale price). PRB = -0.05 means ratios fall 5% each time value doubles (dear homes
    undervalued); IAAO band: within +-0.05. The proxy, not the sale price alone, keeps the regression free
    of the bias that dividing by the sale price puts into it.
    """
    y, pred = _checked(y, pred)
    if len(y) < 3:
        return float("nan"), float("nan"), float("nan")
    ratio = pred / y
    med = float(np.median(ratio))
    x = np.log2(value_proxy(y, pred))
    z = (ratio - med) / med
    xc = x - x.mean()
    sxx = float(np.sum(xc**2))
    if sxx <= 0:
        return 0.0, 0.0, 0.0
    slope = float(np.sum(xc * (z - z.mean())) / sxx)
    resid = z - z.mean() - slope * xc
    se = float(np.sqrt(np.sum(resid**2) / (len(y) - 2) / sxx))
    return slope, slope - 1.96 * se, slope + 1.96 * se


def ratio_study(y: object, pred: object) -> dict[str, float]:
    """The IAAO ratio-study set: n, median ratio, COD, PRD, PRB (with its 95% interval)."""
    y, pred = _checked(y, pred)
    if not len(y):
        return {k: (0.0 if k == "n" else float("nan")) for k in RATIO_STUDY_KEYS}
    slope, low, high = prb(y, pred)
    return {
        "n": float(len(y)),
        "median_ratio": median_ratio(y, pred),
        "cod": cod(y, pred),
        "prd": prd(y, pred),
        "prb": slope,
        "prb_low": low,
        "prb_high": high,
    }


def within_iaao(study: dict[str, float]) -> dict[str, bool]:
    """For each of ``IAAO_BANDS`` present in ``study``: is the figure inside its band?"""
    return {
        key: bool(lo <= study[key] <= hi)
        for key, (lo, hi) in IAAO_BANDS.items()
        if key in study and np.isfinite(study[key])
    }


def value_proxy(y: object, pred: object) -> np.ndarray:
    """IAAO's market-value proxy: half the valuation (over the median ratio), half the sale price.

    Strata and the PRB regression use it: cut on the sale price alone, the sale's own noise lands in both
    the stratum and the ratio and shows a spurious regressivity; cut on the valuation alone, a spurious
    progressivity. The proxy balances the two.
    """
    y, pred = _checked(y, pred)
    if not len(y):
        return np.zeros(0)
    return 0.5 * pred / float(np.median(pred / y)) + 0.5 * y


def deciles(values: object, n: int = 10) -> np.ndarray:
    """Decile (1..n) of each value, by rank (ties broken by order)."""
    (values,) = _arrays(values)
    if not len(values):
        return np.zeros(0, dtype=int)
    ranks = pd.Series(values).rank(method="first").to_numpy()
    return np.minimum((ranks - 1) * n // len(values) + 1, n).astype(int)


def value_deciles(y: object, pred: object, n: int = 10) -> np.ndarray:
    """Decile (1..n) of each home's value proxy (``value_proxy``): the strata of a ratio study."""
    return deciles(value_proxy(y, pred), n)


def ratio_study_by(y: object, pred: object, groups: object, name: str = "group") -> pd.DataFrame:
    """``ratio_study`` per group (price decile, location), one row each, sorted by group."""
    y, pred = _checked(y, pred)
    groups = np.asarray(groups)
    if groups.shape != y.shape:
        raise ValueError(f"{name}: {groups.shape} groups for {y.shape} sales")
    rows = []
    for g in pd.unique(groups):
        mask = groups == g
        rows.append({name: g, **ratio_study(y[mask], pred[mask])})
    out = pd.DataFrame(rows, columns=[name, *RATIO_STUDY_KEYS])
    return out.sort_values(name, kind="stable").reset_index(drop=True)
