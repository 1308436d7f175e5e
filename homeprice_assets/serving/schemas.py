"""Request and response shapes of the prediction service, with the field limits a caller is held to.

Limits follow the training data's plausible ranges (``data.bounds`` in the configuration), so a request the
model has never seen the like of is refused with a 4xx naming the field, rather than priced badly.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from homeprice_assets.config import project_config

_B = project_config().data.bounds
MAX_BATCH_ROWS = 100_000


class Home(BaseModel):
    """One home to price. Only ``location`` and ``living_sf`` are required; unknown extras are refused."""

    # NaN/Infinity (which Python's JSON accepts) are refused as "not a finite number", not as out of range.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    location: str = Field(min_length=1, max_length=64, description="area code, one of /locations")
    living_sf: float = Field(ge=_B.min_living_sf, le=_B.max_living_sf, description="living area, sq ft")
    lot_sf: float | None = Field(None, ge=0, le=50_000_000, description="lot size, sq ft")
    bldg_grade: float | None = Field(None, ge=1, le=13, description="King County building grade 1-13")
    beds: float | None = Field(None, ge=0, le=30)
    baths: float | None = Field(None, ge=0, le=30)
    age: float | None = Field(None, ge=0, le=300, description="years since built, at valuation")
    eff_age: float | None = Field(None, ge=0, le=300, description="years since built or renovated")
    waterfront: int | None = Field(None, ge=0, le=1)
    latitude: float | None = Field(None, ge=_B.min_latitude, le=_B.max_latitude)
    longitude: float | None = Field(None, ge=_B.min_longitude, le=_B.max_longitude)
    sale_date: dt.date | None = Field(
        None,
        ge=dt.date(1990, 1, 1),
        le=dt.date(2100, 1, 1),
        description="valuation date; default: the last month the model was trained on",
    )
    parcel_id: str | None = Field(
        None, max_length=64, description="kept in the prediction log for ground truth"
    )


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
