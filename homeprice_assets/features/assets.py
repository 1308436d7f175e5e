"""Clean sales -> model inputs, one sale month per partition."""

from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd

from homeprice_assets.features.engineering import FEATURE_VERSION, FEATURES, NUMERIC_FEATURES, feature_table
from homeprice_assets.partitions import sale_month_partitions

FEATURE_CHECKS = [
    dg.AssetCheckSpec(
        "finite_features",
        asset="sale_features",
        blocking=True,
        description="No infinite feature values, and the features every sale has are never null.",
    ),
]
# Features derived from required inputs: a null here means a bug, not missing optional data.
ALWAYS_PRESENT = ("log_living_sf", "latitude", "longitude", "rot45_x", "rot45_y", "months_since_origin")


def finite_features(table: pd.DataFrame) -> dg.AssetCheckResult:
    numeric = table[list(NUMERIC_FEATURES)].to_numpy(dtype=float)
    infinite = int(np.isinf(numeric).any(axis=1).sum())
    nulls = {c: int(table[c].isna().sum()) for c in ALWAYS_PRESENT if table[c].isna().any()}
    return dg.AssetCheckResult(
        check_name="finite_features",
        passed=infinite == 0 and not nulls,
        metadata={"rows_with_infinite_values": infinite, "nulls_in_required_features": str(nulls or "none")},
    )


@dg.asset(
    partitions_def=sale_month_partitions,
    group_name="features",
    kinds={"pandas", "parquet"},
    code_version=FEATURE_VERSION,
    check_specs=FEATURE_CHECKS,
)
def sale_features(clean_sales: pd.DataFrame) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Keys, target, raw inputs and engineered features: known at sale time only, no price-derived inputs."""
    table = feature_table(clean_sales)
    yield dg.Output(
        table,
        metadata={
            "rows": len(table),
            "feature_version": FEATURE_VERSION,
            "features": dg.MetadataValue.json(list(FEATURES)),
            "n_features": len(FEATURES),
        },
    )
    yield finite_features(table)
