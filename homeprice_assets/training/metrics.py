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
