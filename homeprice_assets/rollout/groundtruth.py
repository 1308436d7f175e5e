"""Ground truth: each newly landed sale joined to what the service said about that home before it sold.

A valuation counts when it was made at least ``embargo_days`` before the sale (once a home is listed, its
asking price leaks into any valuation, so late ones would flatter the model) and at most ``horizon_months``
before it. A valuation is dated at the earlier of when it was asked and the date it priced the home for
(the request's ``sale_date``): in production that is when it was asked; a replay of history prices homes
"as of" past dates. Per sale, model version and role, the latest such valuation is kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from homeprice_assets.training import metrics

GT_COLUMNS = (
    "sale_id",
    "parcel_id",
    "sale_date",
    "sale_month",
    "sale_price",
    "model_version",
    "model_role",
    "request_id",
    "created_at",
    "valued_at",
    "price",
    "price_lower",
    "price_upper",
    "ape",
    "abs_log_error",
)


def join_ground_truth(
    sales: pd.DataFrame, predictions: pd.DataFrame, embargo_days: int, horizon_months: int
) -> tuple[pd.DataFrame, int]:
    """(matched rows, sales with no earlier valuation). ``sales``: clean sales of the month
    (``sale_id``, ``parcel_id``, ``sale_date``, ``sale_price``); ``predictions``: ``read_predictions``."""
    keys = sales.loc[
        sales["parcel_id"].notna(), ["sale_id", "parcel_id", "sale_date", "sale_month", "sale_price"]
    ]
    keys = keys.assign(parcel_id=keys["parcel_id"].astype(str), sale_date=pd.to_datetime(keys["sale_date"]))
    if predictions.empty or keys.empty:
        return pd.DataFrame(columns=list(GT_COLUMNS)), int(sales["sale_id"].nunique())
    preds = predictions.assign(parcel_id=predictions["parcel_id"].astype(str))
    valued = preds["created_at"]
    asked_for = preds["valuation_date"]
    preds = preds.assign(valued_at=valued.where(asked_for.isna() | (valued <= asked_for), asked_for))
    joined = keys.merge(preds, on="parcel_id", how="inner")
    latest = joined["sale_date"] - pd.Timedelta(days=embargo_days)
    earliest = joined["sale_date"] - pd.DateOffset(months=horizon_months)
    joined = joined[(joined["valued_at"] <= latest) & (joined["valued_at"] >= earliest)]
    joined = joined.sort_values(["valued_at", "created_at", "id"]).drop_duplicates(
        ["sale_id", "model_version", "model_role"], keep="last"
    )
    y, p = joined["sale_price"].to_numpy(float), joined["price"].to_numpy(float)
    joined = joined.assign(ape=np.abs(p - y) / y, abs_log_error=np.abs(np.log(p / y)))
    matched = (
        joined[list(GT_COLUMNS)].sort_values(["sale_date", "sale_id", "model_role"]).reset_index(drop=True)
    )
    unmatched = int(sales["sale_id"].nunique() - matched["sale_id"].nunique())
    return matched, unmatched


def live_metrics(rows: pd.DataFrame) -> dict[str, float]:
    """n, MdAPE, PPE10, median sale ratio (price / sale), COD and interval coverage of matched rows."""
    if rows.empty:
        return {"n": 0}
    y, p = rows["sale_price"].to_numpy(float), rows["price"].to_numpy(float)
    # the same definitions as the offline validation report (training/metrics.py)
    return {
        "n": len(rows),
        "mdape": metrics.mdape(y, p),
        "ppe10": metrics.ppe(y, p, 0.10),
        "median_ratio": metrics.median_ratio(y, p),
        "cod": metrics.cod(y, p),  # IAAO coefficient of dispersion, % of the median ratio
        "coverage": metrics.coverage(y, rows["price_lower"], rows["price_upper"]),
    }


def metrics_by_model(rows: pd.DataFrame) -> pd.DataFrame:
    """One row of ``live_metrics`` per (model version, role)."""
    out = [
        {"model_version": v, "model_role": r, **live_metrics(g)}
        for (v, r), g in rows.groupby(["model_version", "model_role"], sort=True)
    ]
    cols = ["model_version", "model_role", "n", "mdape", "ppe10", "median_ratio", "cod", "coverage"]
    return pd.DataFrame(out, columns=cols)


def live_by_version(rows: pd.DataFrame, window_months: int) -> dict[str, dict[str, object]]:
    """Live accuracy per model version over the last ``window_months`` sale months that have matched sales.

    This is what the registry carries for the services to export as ``homeprice_live_*`` gauges. Roles are
    pooled: a version that priced a home as shadow and again as champion counts that sale once, with its
    latest valuation before the sale. Empty when no sale has been matched yet.
    """
    if rows.empty:
        return {}
    months = sorted(rows["sale_month"].dropna().astype(str).unique())[-window_months:]
    recent = rows[rows["sale_month"].astype(str).isin(months)]
    recent = recent.sort_values(["valued_at", "created_at"]).drop_duplicates(
        ["sale_id", "model_version"], keep="last"
    )
    out: dict[str, dict[str, object]] = {}
    for version, group in recent.groupby(recent["model_version"].astype(str), sort=True):
        figures = live_metrics(group)
        out[str(version)] = {
            **{k: (int(v) if k == "n" else round(float(v), 6)) for k, v in figures.items()},
            "months": [m for m in months if m in set(group["sale_month"].astype(str))],
        }
    return out
