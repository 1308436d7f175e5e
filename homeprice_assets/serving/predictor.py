"""Pure request logic: typed homes -> model columns -> prices, intervals and explanations.

Requests are priced through the model's columnar path (``HomePriceModel.predict_columns``): one array per
input field, no DataFrame, no MLflow schema enforcement (the pydantic schemas already typed every value),
so one home costs a few NumPy calls. The results equal the pyfunc's on the same rows.

Before pricing, ``check_request`` holds every row to the LOADED model's own limits: its training locations
and the bounds it recorded (``model.bounds``: coordinates, living area). The schemas keep only static sanity
limits, so a Bento serves a model trained anywhere without reading a configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from homeprice_assets.serving.holder import LoadedModel
from homeprice_assets.serving.schemas import Contribution, Explanation, Home
from homeprice_assets.training.tracking import coerce_inputs
from homeprice_model.features import INPUT_FIELDS
from homeprice_model.model import OutOfBoundsError, RequestError, UnknownLocationError

__all__ = [
    "OutOfBoundsError",
    "RequestError",
    "UnknownLocationError",
    "check_locations",
    "check_request",
    "explain",
    "predict",
    "to_columns",
    "to_frame",
]

Columns = Mapping[str, Any]
_NUMERIC = tuple(c for c in INPUT_FIELDS if c not in ("location", "sale_date"))


def to_frame(homes: list[Home]) -> pd.DataFrame:
    """Requests as the model's raw-input frame (every input field present, typed as the schema wants)."""
    # The validated models' own field dicts: no per-row model_dump (100k rows in a batch).
    frame = pd.DataFrame.from_records([h.__dict__ for h in homes], columns=list(INPUT_FIELDS))
    return coerce_inputs(frame)


def to_columns(homes: list[Home]) -> dict[str, np.ndarray]:
    """Requests as one array per input field: float64 numbers (None -> NaN), text locations, dates."""
    rows = [h.__dict__ for h in homes]
    out: dict[str, np.ndarray] = {
        "location": np.array([r["location"] for r in rows], dtype=object),
        "sale_date": np.array([r["sale_date"] for r in rows], dtype="datetime64[D]"),
    }
    for name in _NUMERIC:
        out[name] = np.array([r[name] for r in rows], dtype=np.float64)  # None -> NaN
    if any(r.get("parcel_id") is not None for r in rows):  # repeat sales: the parcel's last training sale
        out["parcel_id"] = np.array([r.get("parcel_id") for r in rows], dtype=object)
    return out


def _columns(data: pd.DataFrame | Columns) -> Columns:
    if isinstance(data, pd.DataFrame):
        return {c: data[c].to_numpy() for c in (*INPUT_FIELDS, "parcel_id") if c in data.columns}
    return data


def check_locations(data: pd.DataFrame | Columns, model: LoadedModel) -> None:
    """Refuse rows whose location the model never saw, naming the locations and (for a batch) the rows."""
    columns = _columns(data)
    model.inner.check_request({"location": columns["location"]})


def check_request(data: pd.DataFrame | Columns, model: LoadedModel) -> None:
    """Refuse what the loaded model must not price: unknown locations, values outside its training bounds.

    Raises ``UnknownLocationError`` or ``OutOfBoundsError`` (both ``RequestError``, a ``ValueError``) naming
    the field, the value and the rows: a 4xx for the caller.
    """
    model.inner.check_request(_columns(data))


def predict(model: LoadedModel, data: pd.DataFrame | Columns) -> pd.DataFrame | dict[str, np.ndarray]:
    """``price``, ``price_lower``, ``price_upper`` for each row, in one columnar model call.

    A DataFrame in gives a DataFrame out (its index kept); columns in (``to_columns``,
    ``HomeColumns.to_columns``) give a dict of arrays out.
    """
    columns = _columns(data)
    model.inner.check_request(columns)
    out = model.inner.predict_columns(columns)
    if isinstance(data, pd.DataFrame):
        return pd.DataFrame(out, index=data.index)
    return out


def explain(model: LoadedModel, data: pd.DataFrame | Columns) -> Explanation:
    """SHAP contributions of the first row, largest first, in log-price units."""
    columns = _columns(data)
    model.inner.check_request(columns)
    first = {k: np.atleast_1d(np.asarray(v))[:1] for k, v in columns.items()}
    frame = pd.DataFrame(first)
    contrib = model.inner.explain(frame)
    row = contrib.iloc[0]
    features = [c for c in contrib.columns if c not in ("base_value", "market_index")]
    ordered = sorted(features, key=lambda c: -abs(float(row[c])))
    price = float(np.exp(row[features].sum() + row["base_value"] + row["market_index"]))
    return Explanation(
        price=price,
        base_value=float(row["base_value"]),
        market_index=float(row["market_index"]),
        contributions=[Contribution(feature=c, value=float(row[c])) for c in ordered],
        model_version=model.version,
        method=str(contrib.attrs.get("method", "shap")),
    )
