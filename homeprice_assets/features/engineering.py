"""Per-sale model inputs for the ``sale_features`` asset.

The feature code itself lives in ``homeprice_model.features`` (logged with every model, so serving and
training run the same function); this module re-exports it for the pipeline and adds the stored table.
"""

from __future__ import annotations

import pandas as pd

from homeprice_model.features import (
    CATEGORICAL_FEATURES,
    COORDINATE_FEATURES,
    COORDINATE_INPUTS,
    FEATURE_VERSION,
    FEATURES,
    INPUT_FIELDS,
    NUMERIC_FEATURES,
    REQUIRED_INPUTS,
    TIME_ORIGIN,
    feature_columns,
    make_features,
)

__all__ = [
    "CATEGORICAL_FEATURES",
    "COORDINATE_FEATURES",
    "COORDINATE_INPUTS",
    "FEATURES",
    "FEATURE_VERSION",
    "INPUT_FIELDS",
    "NUMERIC_FEATURES",
    "REQUIRED_INPUTS",
    "TIME_ORIGIN",
    "feature_columns",
    "feature_table",
    "make_features",
]


def feature_table(clean: pd.DataFrame) -> pd.DataFrame:
    """What ``sale_features`` stores: keys, target, every raw input field and every feature.

    Pass-through features keep their input's name, so the raw inputs (what the served model takes) can be
    read back from this table alone: ``table[list(INPUT_FIELDS)]``.
    """
    clean = clean.reset_index(drop=True)
    # parcel_id (when the source has one) gives the model its repeat-sales features.
    key_columns = ["sale_id", "parcel_id"] if "parcel_id" in clean else ["sale_id"]
    keys = clean[[*key_columns, "sale_month", "sale_price", "sale_date", "living_sf", "lot_sf"]]
    return pd.concat([keys, make_features(clean)], axis=1)
