"""Request and response shapes of the prediction service, with static sanity limits on every field.

These limits are the same for every model (a latitude lies within -90..90, a living area is positive);
the limits of the training data (coordinates, living area) belong to the model and are checked against
the LOADED model at request time (``predictor.check_request``, from ``model.bounds``), so nothing here reads
a configuration and a Bento serves a model trained on any market.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_BATCH_ROWS = 100_000
MIN_DATE, MAX_DATE = dt.date(1990, 1, 1), dt.date(2100, 1, 1)
# field -> (minimum, maximum), inclusive: shared by ``Home`` (per value) and ``HomeColumns`` (vectorized).
LIMITS: dict[str, tuple[float, float]] = {
    "living_sf": (1, 1_000_000),
    "lot_sf": (0, 50_000_000),
    "bldg_grade": (1, 13),
    "beds": (0, 30),
    "baths": (0, 30),
    "age": (0, 300),
    "eff_age": (0, 300),
    "waterfront": (0, 1),
    "latitude": (-90, 90),
    "longitude": (-180, 180),
}


def _limit(name: str, default: Any = ..., **kw: Any) -> Any:
    lo, hi = LIMITS[name]
    return Field(default, ge=lo, le=hi, **kw)


class Home(BaseModel):
    """One home to price. Only ``location`` and ``living_sf`` are required; unknown extras are refused."""

    # NaN/Infinity (which Python's JSON accepts) are refused as "not a finite number", not as out of range.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    location: str = Field(min_length=1, max_length=64, description="area code, one of /locations")
    living_sf: float = _limit("living_sf", description="living area, sq ft (the model's range: /model_info)")
    lot_sf: float | None = _limit("lot_sf", None, description="lot size, sq ft")
    bldg_grade: float | None = _limit("bldg_grade", None, description="King County building grade 1-13")
    beds: float | None = _limit("beds", None)
    baths: float | None = _limit("baths", None)
    age: float | None = _limit("age", None, description="years since built, at valuation")
    eff_age: float | None = _limit("eff_age", None, description="years since built or renovated")
    waterfront: int | None = _limit("waterfront", None)
    latitude: float | None = _limit("latitude", None, description="checked against the model's bounds")
    longitude: float | None = _limit("longitude", None, description="checked against the model's bounds")
    sale_date: dt.date | None = Field(
        None,
        ge=MIN_DATE,
        le=MAX_DATE,
        description="valuation date; default: the last month the model was trained on",
    )
    parcel_id: str | None = Field(
        None,
        max_length=64,
        description="kept in the prediction log for ground truth; a model trained with parcel ids also "
        "uses the parcel's last sale in its training data (repeat sales)",
    )


_Numbers = list[float | None] | None


def _rows() -> Any:
    return Field(None, max_length=MAX_BATCH_ROWS)


class HomeColumns(BaseModel):
    """Many homes as one list per field, all of equal length (row ``i`` is one home in every list).

    The columnar form of a batch: ``location`` and ``living_sf`` are required, other fields may be left
    out (or hold nulls). Types are parsed by pydantic; limits, lengths and finiteness are checked with
    NumPy over whole arrays, and an error names the field and the first bad row.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    location: list[str] = Field(min_length=1, max_length=MAX_BATCH_ROWS)
    living_sf: list[float] = Field(min_length=1, max_length=MAX_BATCH_ROWS)
    lot_sf: _Numbers = _rows()
    bldg_grade: _Numbers = _rows()
    beds: _Numbers = _rows()
    baths: _Numbers = _rows()
    age: _Numbers = _rows()
    eff_age: _Numbers = _rows()
    waterfront: list[int | None] | None = _rows()
    latitude: _Numbers = _rows()
    longitude: _Numbers = _rows()
    sale_date: list[dt.date | None] | None = _rows()
    parcel_id: list[str | None] | None = _rows()

    def __len__(self) -> int:
        return len(self.location)

    @model_validator(mode="after")
    def _vectorized_checks(self) -> HomeColumns:
        n = len(self.location)
        for name in type(self).model_fields:
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(
                    f"{name}: {len(values)} values for {n} homes (every list needs one per home)"
                )
        lengths = np.fromiter((len(v) for v in self.location), dtype=np.int64, count=n)
        bad = np.flatnonzero((lengths < 1) | (lengths > 64))
        if len(bad):
            raise ValueError(f"location: row {bad[0]}: must be 1 to 64 characters")
        for name, (lo, hi) in LIMITS.items():
            values = getattr(self, name)
            if values is None:
                continue
            arr = np.array(values, dtype=np.float64)  # None -> NaN: allowed except in living_sf
            with np.errstate(invalid="ignore"):
                wrong = (arr < lo) | (arr > hi) | np.isinf(arr)
            if name == "living_sf":
                wrong |= np.isnan(arr)
            bad = np.flatnonzero(wrong)
            if len(bad):
                raise ValueError(f"{name}: row {bad[0]}: {arr[bad[0]]:g} is outside {lo:g}..{hi:g}")
        if self.sale_date is not None:
            dates = np.array(self.sale_date, dtype="datetime64[D]")
            wrong = ~np.isnat(dates) & ((dates < np.datetime64(MIN_DATE)) | (dates > np.datetime64(MAX_DATE)))
            bad = np.flatnonzero(wrong)
            if len(bad):
                raise ValueError(
                    f"sale_date: row {bad[0]}: {dates[bad[0]]} is outside {MIN_DATE}..{MAX_DATE}"
                )
        if self.parcel_id is not None:
            bad = [i for i, p in enumerate(self.parcel_id) if p is not None and len(p) > 64]
            if bad:
                raise ValueError(f"parcel_id: row {bad[0]}: longer than 64 characters")
        return self

    def to_columns(self) -> dict[str, np.ndarray]:
        """One array per model input field (absent fields omitted): what ``predictor.predict`` takes."""
        out: dict[str, np.ndarray] = {"location": np.array(self.location, dtype=object)}
        for name in LIMITS:
            values = getattr(self, name)
            if values is not None:
                out[name] = np.array(values, dtype=np.float64)
        if self.sale_date is not None:
            out["sale_date"] = np.array(self.sale_date, dtype="datetime64[D]")
        if self.parcel_id is not None:  # repeat sales: the model looks up the parcel's last training sale
            out["parcel_id"] = np.array(self.parcel_id, dtype=object)
        return out


class Prediction(BaseModel):
    price: float
    price_lower: float
    price_upper: float
    interval_level: float
    model_version: str
    model_role: str
    request_id: str


class BatchPrediction(BaseModel):
    predictions: list[Prediction]
    rows: int
    model_version: str


class LocationCount(BaseModel):
    location: str
    sales: int = Field(description="training sales in this location")


class Contribution(BaseModel):
    feature: str
    value: float = Field(description="log-price contribution (exp(value) is the price multiplier)")


class Explanation(BaseModel):
    price: float
    base_value: float
    market_index: float
    contributions: list[Contribution] = Field(description="sorted by absolute size, largest first")
    model_version: str
    method: str
