"""Forward (out-of-time) evaluation: train through a cut-off, value the following months, compare models.

This is how the modelling choices were measured: the price model against a plain LightGBM on log price (no
market index) and the hedonic baseline, each trained on the same rows and scored on the same later months.
Run ``python -m homeprice_assets.training.evaluate [features.parquet]`` to reproduce the figures.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from homeprice_assets.features.engineering import FEATURES, INPUT_FIELDS
from homeprice_assets.training import metrics as M
from homeprice_assets.training.baseline import fit_baseline
from homeprice_assets.training.model import fit_price_model
from homeprice_assets.training.splits import time_split

PLAIN_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 63,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "seed": 7,
    "num_threads": 1,
    "verbose": -1,
}


def plain_lightgbm(
    train: pd.DataFrame, objective: str = "regression", rounds: int = 600
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """LightGBM on log price with the raw feature set (time as a plain feature): the issue's reference."""
    x = train[list(FEATURES)].copy()
    categories = sorted(x["location"].astype(str).unique())
    x["location"] = pd.Categorical(x["location"].astype(str), categories=categories)
    booster = lgb.train(
        {**PLAIN_PARAMS, "objective": objective}, lgb.Dataset(x, np.log(train["sale_price"])), rounds
    )

    def predict(table: pd.DataFrame) -> pd.DataFrame:
        xv = table[list(FEATURES)].copy()
        xv["location"] = pd.Categorical(xv["location"].astype(str), categories=categories)
        return pd.DataFrame({"price": np.exp(booster.predict(xv))}, index=table.index)

    return predict


def forward_evaluation(
    table: pd.DataFrame,
    cutoffs: list[str],
    validation_months: int = 12,
    params: dict[str, Any] | None = None,
    models: tuple[str, ...] = ("model", "plain_lightgbm", "plain_lightgbm_l1", "hedonic"),
) -> pd.DataFrame:
    """One row per (validation end month, model): MdAPE, PPE10, coverage, bias, fit seconds."""
    rows = []
    for end in cutoffs:
        split = time_split(table, validation_months=validation_months, end_month=end)
        y = split.validation["sale_price"].to_numpy()
        inputs = split.validation[list(INPUT_FIELDS)]
        for name in models:
            started = time.perf_counter()
            if name == "model":
                pred = fit_price_model(split.train, params or {}).predict(None, inputs)
            elif name.startswith("plain_lightgbm"):
                objective = "regression_l1" if name.endswith("l1") else "regression"
                pred = plain_lightgbm(split.train, objective)(split.validation)
            elif name == "hedonic":
                pred = fit_baseline(split.train).predict(inputs)
            else:
                raise ValueError(f"unknown model {name!r}")
            seconds = time.perf_counter() - started
            m = M.evaluate(y, pred)
            rows.append(
                {
                    "validation": f"{split.validation_range[0]}..{split.validation_range[1]}",
                    "model": name,
                    "train_rows": len(split.train),
                    "mdape": m["mdape"],
                    "ppe10": m["ppe10"],
                    "ppe20": m["ppe20"],
                    "coverage": m.get("interval_coverage"),
                    "width": m.get("interval_median_width"),
                    "bias": m["median_log_error"],
                    "fit_seconds": seconds,
                }
            )
    return pd.DataFrame(rows)


if __name__ == "__main__":  # pragma: no cover
    features = pd.read_parquet(sys.argv[1] if len(sys.argv) > 1 else "/tmp/features_all.parquet")
    pd.set_option("display.width", 200)
    for months, cuts in (
        (12, ["2014-12", "2015-12", "2016-12"]),
        (3, ["2015-06", "2015-12", "2016-06", "2016-12"]),
    ):
        print(f"\n{months}-month forward windows")
        print(forward_evaluation(features, cuts, months).round(4).to_string(index=False))
