"""Per-sale model inputs, computed only from what is known at the moment of sale (no target, no future).

The same function runs in the ``sale_features`` asset and inside the logged MLflow model, so training and
serving can never disagree on how a feature is made.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURE_VERSION = "1"
TIME_ORIGIN = pd.Timestamp("2010-01-01")

# Raw sale fields a caller must (or may) give to price a home: the served model's input contract.
INPUT_FIELDS: tuple[str, ...] = (
    "sale_date",
    "location",
    "living_sf",
    "lot_sf",
    "bldg_grade",
    "beds",
    "baths",
    "age",
    "eff_age",
    "waterfront",
    "latitude",
    "longitude",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("location",)
NUMERIC_FEATURES: tuple[str, ...] = (
    "log_living_sf",
    "log_lot_sf",
    "living_to_lot",
    "bldg_grade",
    "beds",
    "baths",
    "baths_per_bed",
    "age",
    "eff_age",
    "renovated",
    "waterfront",
    "latitude",
    "longitude",
    "rot45_x",
    "rot45_y",
    "months_since_origin",
    "grade_x_log_living",
)
FEATURES: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES


def make_features(sales: pd.DataFrame) -> pd.DataFrame:
    """Feature table for canonical sales (clean rows or a serving request); index preserved.

    Missing optional inputs stay NaN (LightGBM handles them); ``location`` becomes a string category.
    """
    s = sales
    num = {
        c: pd.to_numeric(s[c], errors="coerce") if c in s else pd.Series(np.nan, index=s.index)
        for c in INPUT_FIELDS
        if c not in ("sale_date", "location")
    }
    date = pd.to_datetime(s["sale_date"], errors="coerce")
    out = pd.DataFrame(index=s.index)
    out["log_living_sf"] = np.log(num["living_sf"].clip(lower=1))
    out["log_lot_sf"] = np.log1p(num["lot_sf"].clip(lower=0))
    out["living_to_lot"] = num["living_sf"] / num["lot_sf"].where(num["lot_sf"] > 0)
    out["bldg_grade"] = num["bldg_grade"]
    out["beds"] = num["beds"]
    out["baths"] = num["baths"]
    out["baths_per_bed"] = num["baths"] / num["beds"].where(num["beds"] > 0)
    out["age"] = num["age"]
    out["eff_age"] = num["eff_age"]
    out["renovated"] = (num["eff_age"] < num["age"]).astype(float).where(num["age"].notna())
    out["waterfront"] = num["waterfront"]
    out["latitude"] = num["latitude"]
    out["longitude"] = num["longitude"]
    # Rotated coordinates let axis-aligned tree splits follow diagonal neighbourhood boundaries.
    out["rot45_x"] = (num["latitude"] + num["longitude"]) / np.sqrt(2)
    out["rot45_y"] = (num["latitude"] - num["longitude"]) / np.sqrt(2)
    out["months_since_origin"] = (date.dt.year - TIME_ORIGIN.year) * 12 + (date.dt.month - TIME_ORIGIN.month)
    out["grade_x_log_living"] = num["bldg_grade"] * out["log_living_sf"]
    out["location"] = s["location"].astype("string").astype(str) if "location" in s else "unknown"
    return out[list(FEATURES)]


def feature_table(clean: pd.DataFrame) -> pd.DataFrame:
    """What ``sale_features`` stores: keys, target, every raw input field and every feature.

    Pass-through features keep their input's name, so the raw inputs (what the served model takes) can be
    read back from this table alone: ``table[list(INPUT_FIELDS)]``.
    """
    clean = clean.reset_index(drop=True)
    keys = clean[["sale_id", "sale_month", "sale_price", "sale_date", "living_sf", "lot_sf"]]
    return pd.concat([keys, make_features(clean)], axis=1)
