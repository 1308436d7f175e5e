"""The hedonic baseline is the yardstick in every validation report, with or without coordinates."""

import numpy as np
import pandas as pd

from homeprice_assets.training.baseline import fit_baseline
from homeprice_assets.training.metrics import mdape

from .conftest import Fitted


def test_baseline_with_and_without_coordinates(fitted: Fitted) -> None:
    train, validation = fitted.split.train, fitted.split.validation
    with_coords = fit_baseline(train)
    error = mdape(validation["sale_price"], with_coords.predict(fitted.inputs)["price"])
    no_coords = fit_baseline(train.assign(latitude=np.nan, longitude=np.nan))
    inputs = fitted.inputs.drop(columns=["latitude", "longitude"])
    prices = no_coords.predict(inputs)["price"]
    assert "latitude" not in no_coords.columns and "latitude" in with_coords.columns
    assert isinstance(prices, pd.Series) and prices.notna().all()
    # coordinates help a hedonic model in Seattle; without them it is worse but still a sane yardstick
    assert error < mdape(validation["sale_price"], prices) < 0.3
