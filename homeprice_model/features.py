"""Per-sale model inputs, computed only from what is known at the moment of sale (no target, no future).

One columnar function, ``feature_columns``, makes every feature from plain arrays: the ``sale_features``
asset (through ``make_features``, a DataFrame wrapper), the batch pyfunc and the single-home path all run
it, so training and serving cannot disagree on how a feature is made, and one home costs a few NumPy calls
rather than a DataFrame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

# 2: ``renovated`` is NaN, not 0, when the effective age is missing (months stored under 1 differ there).
FEATURE_VERSION = "2"
TIME_ORIGIN = pd.Timestamp("2010-01-01")
# TIME_ORIGIN as a month count since 1970-01 (NumPy's datetime64[M] epoch).
_ORIGIN_MONTHS = (TIME_ORIGIN.year - 1970) * 12 + (TIME_ORIGIN.month - 1)

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
# What any model needs from a caller; everything else may be missing (LightGBM takes NaN).
REQUIRED_INPUTS: tuple[str, ...] = ("location", "living_sf")
COORDINATE_INPUTS: tuple[str, ...] = ("latitude", "longitude")
NUMERIC_INPUTS: tuple[str, ...] = tuple(c for c in INPUT_FIELDS if c not in ("sale_date", "location"))
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
# Features made from the coordinates: left out of a model trained on data without them.
COORDINATE_FEATURES: tuple[str, ...] = ("latitude", "longitude", "rot45_x", "rot45_y")
FEATURES: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES
MISSING_LOCATION = "<NA>"


def _length(columns: Mapping[str, Any]) -> int:
    for name in ("location", "living_sf", *INPUT_FIELDS):
        if name in columns and columns[name] is not None:
            return len(np.atleast_1d(np.asarray(columns[name], dtype=object)))
    return 0


def as_numbers(values: Any, n: int) -> np.ndarray:
    """float64 array of ``values`` (None, text that is not a number -> NaN); all-NaN when absent."""
    if values is None:
        return np.full(n, np.nan)
    arr = np.atleast_1d(np.asarray(values))
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64, copy=False)
    if arr.dtype.kind == "O":
        try:  # numbers (and NaN) in an object array: NumPy converts them directly
            return arr.astype(np.float64)
        except (TypeError, ValueError):
            pass
    return np.asarray(pd.to_numeric(arr.astype(object), errors="coerce"), dtype=np.float64)


def as_text(values: Any, n: int) -> np.ndarray:
    """Object array of ``str`` (missing -> ``MISSING_LOCATION``): the location as the model compares it."""
    if values is None:
        return np.full(n, MISSING_LOCATION, dtype=object)
    arr = np.atleast_1d(np.asarray(values, dtype=object))
    missing = pd.isna(arr)
    out = arr.astype(str).astype(object)
    if missing.any():
        out[missing] = MISSING_LOCATION
    return out


def as_months(values: Any, n: int) -> np.ndarray:
    """Months since ``TIME_ORIGIN`` (float; NaN where the date is missing or unreadable)."""
    if values is None:
        return np.full(n, np.nan)
    arr = np.atleast_1d(np.asarray(values))
    if arr.dtype.kind != "M":
        try:  # ISO text, datetime/date objects and None: NumPy reads them without pandas
            arr = arr.astype("datetime64[s]")
        except (ValueError, TypeError, OverflowError):
            arr = pd.to_datetime(pd.Series(arr, dtype=object), errors="coerce").to_numpy("datetime64[s]")
    nat = np.isnat(arr)
    months = arr.astype("datetime64[M]").astype(np.int64).astype(np.float64) - _ORIGIN_MONTHS
    months[nat] = np.nan
    return months


def feature_columns(columns: Mapping[str, Any], n: int | None = None) -> dict[str, np.ndarray]:
    """Every feature of ``FEATURES`` as an array, from raw input columns (arrays, lists or scalars).

    Missing optional inputs (absent, None or NaN) stay NaN; ``location`` becomes text; a missing or
    unreadable ``sale_date`` gives NaN ``months_since_origin`` (the model fills in its reference month).
    """
    n = _length(columns) if n is None else n
    num = {c: as_numbers(columns.get(c), n) for c in NUMERIC_INPUTS}
    living, lot = num["living_sf"], num["lot_sf"]
    beds, baths, grade = num["beds"], num["baths"], num["bldg_grade"]
    lat, lon = num["latitude"], num["longitude"]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_living = np.log(np.maximum(living, 1.0))  # NaN stays NaN
        out = {
            "log_living_sf": log_living,
            "log_lot_sf": np.log1p(np.maximum(lot, 0.0)),
            "living_to_lot": living / np.where(lot > 0, lot, np.nan),
            "bldg_grade": grade,
            "beds": beds,
            "baths": baths,
            "baths_per_bed": baths / np.where(beds > 0, beds, np.nan),
            "age": num["age"],
            "eff_age": num["eff_age"],
            # unknown (not "never renovated") when either age is missing
            "renovated": np.where(
                np.isnan(num["age"]) | np.isnan(num["eff_age"]), np.nan, num["eff_age"] < num["age"]
            ),
            "waterfront": num["waterfront"],
            "latitude": lat,
            "longitude": lon,
            # Rotated coordinates let axis-aligned tree splits follow diagonal neighbourhood boundaries.
            "rot45_x": (lat + lon) / np.sqrt(2),
            "rot45_y": (lat - lon) / np.sqrt(2),
            "months_since_origin": as_months(columns.get("sale_date"), n),
            "grade_x_log_living": grade * log_living,
            "location": as_text(columns.get("location"), n),
        }
    return out


def frame_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The raw input columns of ``frame`` as arrays, in their own dtypes (only those present).

    Read straight from the frame's blocks (``DataFrame._iter_column_arrays``): one home cost 46 us through
    a Series per column or an object array of the row, 17 us so, and typed arrays convert cheaper later.
    """
    wanted = {*INPUT_FIELDS, "parcel_id"}  # parcel: repeat sales
    if frame.columns.is_unique:
        try:
            arrays = frame._iter_column_arrays()
        except AttributeError:  # pragma: no cover - a pandas without it
            pass
        else:
            return {c: np.asarray(a) for c, a in zip(frame.columns, arrays, strict=True) if c in wanted}
    return {c: frame[c].to_numpy() for c in (*INPUT_FIELDS, "parcel_id") if c in frame.columns}


def make_features(sales: pd.DataFrame) -> pd.DataFrame:
    """Feature table for canonical sales (clean rows or a serving request); index preserved.

    The DataFrame form of ``feature_columns``: numeric features are float64, ``location`` is text.
    """
    feats = feature_columns(frame_columns(sales), n=len(sales))
    return pd.DataFrame(feats, index=sales.index, columns=list(FEATURES))
