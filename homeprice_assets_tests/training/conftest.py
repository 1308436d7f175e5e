"""Real bundled data, cleaned and featurised as the ``sale_features`` asset does, shared by the tests."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest

from homeprice_assets.config import load_config
from homeprice_assets.features.engineering import INPUT_FIELDS, feature_table
from homeprice_assets.ingest.rules import clean_sales
from homeprice_assets.training.model import HomePriceModel, fit_price_model
from homeprice_assets.training.splits import TimeSplit, time_split
from homeprice_assets_tests.monitoring.conftest import webhook  # noqa: F401  (the loopback Slack receiver)


@pytest.fixture(scope="session")
def features(bundled_sales: pd.DataFrame) -> pd.DataFrame:
    """The whole bundled history as a feature table (43k Seattle sales, 2010-2016)."""
    return feature_table(clean_sales(bundled_sales, load_config().data).clean)


@dataclass
class Fitted:
    split: TimeSplit
    model: HomePriceModel

    @property
    def inputs(self) -> pd.DataFrame:
        """What a caller sends: the raw input fields and, for a model that takes it, ``parcel_id``."""
        extra = [c for c in self.model.input_fields if c not in INPUT_FIELDS]
        return self.split.validation[[*INPUT_FIELDS, *extra]]


@pytest.fixture(scope="session")
def fitted(features: pd.DataFrame) -> Fitted:
    """A model trained on 2013-2015 and judged on the first quarter of 2016: a forward window it never saw."""
    split = time_split(features, validation_months=3, window_months=39, end_month="2016-03")
    return Fitted(split=split, model=fit_price_model(split.train, {}))
