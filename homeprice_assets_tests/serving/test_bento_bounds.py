"""A Bento carries its own limits: built around a model trained in New York (with New York bounds in its
configuration), it accepts New York coordinates and refuses Seattle's, whatever the default config says."""

from pathlib import Path

import pandas as pd
import pytest

from homeprice_assets.config import load_config
from homeprice_assets.features.engineering import FEATURES, feature_table, make_features
from homeprice_assets.ingest.rules import clean_sales
from homeprice_assets.resources.registry import Registry
from homeprice_assets.serving.build import build_bento, import_version
from homeprice_assets.training.model import fit_price_model
from homeprice_assets.training.splits import time_split
from homeprice_assets.training.tracking import input_example, register_price_model
from homeprice_assets_tests.serving.conftest import serve_built_bento, stop_server

pytestmark = pytest.mark.slow

NEW_YORK = {"min_latitude": 40.4, "max_latitude": 41.0, "min_longitude": -74.3, "max_longitude": -73.6}


def test_a_bento_built_for_new_york_serves_new_york_only(bundled_sales: pd.DataFrame, tmp_path: Path) -> None:
    table = feature_table(clean_sales(bundled_sales, load_config().data).clean)
    moved = table.assign(latitude=table["latitude"] - 6.9, longitude=table["longitude"] + 48.3)
    moved[list(FEATURES)] = make_features(moved)
    train = time_split(moved, validation_months=1, window_months=13, end_month="2016-01").train
    config = load_config(overrides={"data": {"bounds": NEW_YORK}})  # the user's config for New York
    model = fit_price_model(train, {"num_boost_round": 100}, bounds=config.data.bounds)

    store = Registry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", model_name="homeprice-ny")
    version = register_price_model(store, model, input_example(train))
    bento = build_bento(import_version(store, version))

    server = serve_built_bento(str(bento.tag), tmp_path)  # pinned: its model is inside, no registry
    try:
        home = {"location": str(train["location"].iloc[0]), "living_sf": 1800}
        ny = server.post("/predict", {"home": home | {"latitude": 40.71, "longitude": -74.0}})
        assert ny.status_code == 200, ny.text
        seattle = server.post("/predict", {"home": home | {"latitude": 47.61, "longitude": -122.33}})
        assert seattle.status_code == 400
        assert "latitude" in seattle.text
        assert server.post("/model_info", {}).json()["bounds"]["max_latitude"] == 41.0
    finally:
        stop_server(server)
