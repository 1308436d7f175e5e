"""Clean sales -> model inputs, one sale month per partition: the feature stage and its checks.

``sale_features`` is computed with the rest of a month by the range-aware ``ingest_sales`` step
(``homeprice_assets.ingest.assets``); this module holds what that stage computes and checks.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from homeprice_assets.features.engineering import NUMERIC_FEATURES
from homeprice_assets.monitoring.settings import PriceLevelSettings
from homeprice_assets.partitions import month_check

PRICE_LEVEL_CHECK = "price_level"
FEATURE_CHECKS = [
    month_check(
        "finite_features",
        asset="sale_features",
        blocking=True,
        description="No infinite feature values, and the features every sale has are never null.",
    ),
    month_check(
        PRICE_LEVEL_CHECK,
        asset="sale_features",
        blocking=True,
        description="The month's median price per sq ft within monitoring.price_level.max_change of the "
        "median of the recent months. A jump holds the month back from drift and training until a person "
        "confirms it (homeprice accept-month YYYY-MM) or corrected files land.",
    ),
]
LEVEL_KEY = "median_price_per_sf"
# Features derived from required inputs: a null here means a bug, not missing optional data. Coordinates are
# optional (data without them trains a model without them), so their features may be null.
ALWAYS_PRESENT = ("log_living_sf", "months_since_origin")


def finite_features(table: pd.DataFrame) -> dg.AssetCheckResult:
    numeric = table[list(NUMERIC_FEATURES)].to_numpy(dtype=float)
    infinite = int(np.isinf(numeric).any(axis=1).sum())
    nulls = {c: int(table[c].isna().sum()) for c in ALWAYS_PRESENT if table[c].isna().any()}
    return dg.AssetCheckResult(
        check_name="finite_features",
        passed=infinite == 0 and not nulls,
        metadata={"rows_with_infinite_values": infinite, "nulls_in_required_features": str(nulls or "none")},
    )


def price_per_sf(table: pd.DataFrame) -> float | None:
    """The month's price level: median sale price per sq ft of living area (None without sales)."""
    ratio = table["sale_price"].astype(float) / table["living_sf"].astype(float)
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    return float(ratio.median()) if len(ratio) else None


def price_level(
    month: str, level: float | None, recent: dict[str, float], settings: PriceLevelSettings
) -> dg.AssetCheckResult:
    """Fails when ``level`` moved more than ``max_change`` from the median of the recent months' levels."""
    reference = float(np.median(list(recent.values()))) if recent else None
    base = {
        "month": month,
        LEVEL_KEY: -1.0 if level is None else level,
        "max_change": settings.max_change,
        "months_compared": dg.MetadataValue.json(sorted(recent)),
    }
    if level is None or reference is None or len(recent) < settings.min_months:
        return dg.AssetCheckResult(
            check_name=PRICE_LEVEL_CHECK,
            passed=True,
            description=f"{month}: {len(recent)} recent month(s), under {settings.min_months}: not judged",
            metadata={**base, "reference_price_per_sf": -1.0, "change": 0.0},
        )
    change = level / reference - 1
    passed = abs(change) <= settings.max_change
    return dg.AssetCheckResult(
        check_name=PRICE_LEVEL_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{month}: median ${level:,.0f}/sq ft vs ${reference:,.0f} over {len(recent)} recent months "
            f"({change:+.1%}, bound ±{settings.max_change:.0%})"
            + ("" if passed else f"; held back until confirmed: homeprice accept-month {month}")
        ),
        metadata={**base, "reference_price_per_sf": reference, "change": change},
    )


def __getattr__(name: str) -> Any:
    """``sale_features``: the step that materializes it (with the rest of the month), for old imports."""
    if name == "sale_features":
        from homeprice_assets.ingest.assets import ingest_sales

        return ingest_sales
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
