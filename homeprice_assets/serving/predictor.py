"""Pure request logic: typed homes -> model frame -> prices, intervals and explanations."""

from __future__ import annotations

import numpy as np
import pandas as pd

from homeprice_assets.features.engineering import INPUT_FIELDS
from homeprice_assets.serving.holder import LoadedModel
from homeprice_assets.serving.schemas import Contribution, Explanation, Home
from homeprice_assets.training.tracking import coerce_inputs


class UnknownLocationError(ValueError):
    """A request names a location the model was not trained on."""


def to_frame(homes: list[Home]) -> pd.DataFrame:
    """Requests as the model's raw-input frame (every input field present, typed as the schema wants)."""
    # The validated models' own field dicts: no per-row model_dump (100k rows in a batch).
    frame = pd.DataFrame.from_records([h.__dict__ for h in homes], columns=list(INPUT_FIELDS))
    return coerce_inputs(frame)


def check_locations(frame: pd.DataFrame, model: LoadedModel) -> None:
    """Refuse rows whose location the model never saw, naming the locations and (for a batch) the rows."""
    known = model.inner.locations
    locations = frame["location"].astype(str)
    bad = ~locations.isin(set(known)).to_numpy()
    if bad.any():
        unknown = sorted(set(locations[bad]))
        rows = np.flatnonzero(bad)
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        at = ", ".join(str(r) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
        raise UnknownLocationError(
            f"location: unknown location(s) {shown} in row(s) {at}; the model knows {len(known)} "
            "(see /locations)"
        )


def predict(model: LoadedModel, frame: pd.DataFrame) -> pd.DataFrame:
    """``price``, ``price_lower``, ``price_upper`` for each row, vectorized in one model call."""
    check_locations(frame, model)
    return model.pyfunc.predict(frame)


def explain(model: LoadedModel, frame: pd.DataFrame) -> Explanation:
    """SHAP contributions of the first row, largest first, in log-price units."""
    check_locations(frame, model)
    contrib = model.inner.explain(frame.iloc[:1])
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
