"""Real bundled data and small real models for the served-model tests (fast: 14 months, 300 rounds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from homeprice_assets.config import load_config
from homeprice_assets.features.engineering import feature_table
from homeprice_assets.ingest.rules import clean_sales
from homeprice_assets.training.model import fit_price_model
from homeprice_assets.training.splits import time_split
from homeprice_assets.training.tracking import input_example, save_price_model
from homeprice_model import INPUT_FIELDS, HomePriceModel

FAST = {"num_boost_round": 300}


@dataclass
class Small:
    train: pd.DataFrame
    validation: pd.DataFrame
    model: HomePriceModel

    @property
    def inputs(self) -> pd.DataFrame:
        return self.validation[list(INPUT_FIELDS)].reset_index(drop=True)


@pytest.fixture(scope="session")
def sale_table(bundled_sales: pd.DataFrame) -> pd.DataFrame:
    """Clean bundled Seattle sales as the ``sale_features`` table."""
    return feature_table(clean_sales(bundled_sales, load_config().data).clean)


def small_split(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    split = time_split(table, validation_months=2, window_months=14, end_month="2016-02")
    return split.train, split.validation.reset_index(drop=True)


@pytest.fixture(scope="session")
def small(sale_table: pd.DataFrame) -> Small:
    """A model on 2015 Seattle sales (bounds from the default configuration), judged on 2016-01..02."""
    train, validation = small_split(sale_table)
    # bagged (three boosters), so the columnar and batch paths are compared on the averaging too; no
    # blend, which would merge them into one booster (test_blend.py covers that)
    params = {**FAST, "bagging_seeds": 3, "blend": []}
    model = fit_price_model(train, params, bounds=load_config().data.bounds)
    return Small(train, validation, model)


@pytest.fixture(scope="session")
def saved(small: Small, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small`` written as an MLflow pyfunc directory by ``save_price_model`` (what the registry uploads)."""
    return save_price_model(
        small.model, tmp_path_factory.mktemp("saved") / "model", input_example(small.train)
    )
