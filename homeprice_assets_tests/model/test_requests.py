"""The service's request layer (``predictor``, ``schemas``) on real models: columnar pricing, the loaded
model's own bounds (a model trained elsewhere serves there), and models with and without coordinates."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from homeprice_assets.serving import predictor
from homeprice_assets.serving.holder import LoadedModel
from homeprice_assets.serving.schemas import Home, HomeColumns
from homeprice_assets.training.model import fit_price_model, training_bounds
from homeprice_assets.training.tracking import (
    FeatureMismatchError,
    check_feature_mismatch,
    input_example,
    save_price_model,
)
from homeprice_model import COORDINATE_FEATURES, FEATURES, INPUT_FIELDS, make_features

from .conftest import FAST, Small, small_split

NEW_YORK = {"min_latitude": 40.4, "max_latitude": 41.0, "min_longitude": -74.3, "max_longitude": -73.6}
SEATTLE_HOME = {"latitude": 47.61, "longitude": -122.33}
NEW_YORK_HOME = {"latitude": 40.71, "longitude": -74.0}


def loaded(model, train: pd.DataFrame, path: Path) -> LoadedModel:
    """``model`` saved and loaded back as a service loads a version."""
    pyfunc = mlflow.pyfunc.load_model(str(save_price_model(model, path, input_example(train))))
    return LoadedModel("1", "champion", str(path), pyfunc, pyfunc.unwrap_python_model())


def homes(small: Small, n: int, **override: object) -> list[Home]:
    out = []
    for _, r in small.inputs.head(n).iterrows():
        fields = {k: (None if pd.isna(v) else v) for k, v in r.items()}
        fields["sale_date"] = fields["sale_date"].date() if fields["sale_date"] is not None else None
        fields["waterfront"] = None if fields["waterfront"] is None else int(fields["waterfront"])
        out.append(Home(**{**fields, **override}))
    return out


@pytest.fixture(scope="module")
def seattle(small: Small, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return loaded(small.model, small.train, tmp_path_factory.mktemp("seattle") / "model")


@pytest.fixture(scope="module")
def new_york(sale_table: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """The Seattle sales moved to New York (same shapes, shifted coordinates), trained with NY bounds."""
    moved = sale_table.assign(latitude=sale_table["latitude"] - 6.9, longitude=sale_table["longitude"] + 48.3)
    moved[list(FEATURES)] = make_features(moved)
    train, _ = small_split(moved)
    model = fit_price_model(train, FAST, bounds=NEW_YORK)
    assert model.bounds is not None and model.bounds["max_latitude"] == 41.0
    return loaded(model, train, tmp_path_factory.mktemp("ny") / "model")


def test_columnar_request_equals_frame_request(small: Small, seattle: LoadedModel) -> None:
    batch = homes(small, 60)
    by_frame = predictor.predict(seattle, predictor.to_frame(batch))
    by_columns = predictor.predict(seattle, predictor.to_columns(batch))
    assert isinstance(by_frame, pd.DataFrame) and isinstance(by_columns, dict)
    for c in ("price", "price_lower", "price_upper"):
        np.testing.assert_allclose(by_columns[c], by_frame[c].to_numpy(), rtol=1e-9)
    # the same homes through the pyfunc (schema enforcement and all)
    np.testing.assert_allclose(
        by_columns["price"], seattle.pyfunc.predict(predictor.to_frame(batch))["price"], rtol=1e-9
    )
    # ...and in the columnar request form
    fields = {k: [getattr(h, k) for h in batch] for k in HomeColumns.model_fields}
    columns = HomeColumns(**fields)
    assert len(columns) == 60
    np.testing.assert_allclose(predictor.predict(seattle, columns.to_columns())["price"], by_columns["price"])
    explained = predictor.explain(seattle, predictor.to_columns(batch[:1]))
    assert explained.price == pytest.approx(by_columns["price"][0], rel=1e-6)


def test_a_model_trained_in_new_york_accepts_new_york_and_refuses_seattle(
    small: Small, new_york: LoadedModel, seattle: LoadedModel
) -> None:
    # the schema itself no longer carries any market's bounds
    ny = homes(small, 3, **NEW_YORK_HOME)
    out = predictor.predict(new_york, predictor.to_columns(ny))
    assert np.isfinite(out["price"]).all()
    sea = homes(small, 3, **SEATTLE_HOME)
    with pytest.raises(predictor.OutOfBoundsError, match=r"latitude: 47.61 in row\(s\) 0, 1, 2 .*40.4\.\.41"):
        predictor.predict(new_york, predictor.to_columns(sea))
    with pytest.raises(predictor.OutOfBoundsError, match="latitude"):
        predictor.predict(new_york, predictor.to_frame(sea))  # the DataFrame form is held to the same
    with pytest.raises(predictor.RequestError, match=r"row\(s\) 2"):
        predictor.check_request(predictor.to_columns([*ny[:2], sea[0]]), new_york)
    # and the Seattle model the other way round
    predictor.check_request(predictor.to_columns(sea), seattle)
    with pytest.raises(predictor.OutOfBoundsError, match=r"latitude: 40\.71"):
        predictor.check_request(predictor.to_columns(ny), seattle)
    # the bounds travel in the logged model's metadata too
    meta = yaml.safe_load((Path(new_york.source) / "MLmodel").read_text())["metadata"]
    assert meta["bounds"]["min_longitude"] == -74.3


def test_living_area_is_held_to_the_models_range(small: Small, seattle: LoadedModel) -> None:
    big = homes(small, 1, living_sf=200_000)  # a sane number for the schema, outside the training range
    with pytest.raises(predictor.OutOfBoundsError, match=r"living_sf: 200000 in row\(s\) 0 .*100\.\.50000"):
        predictor.predict(seattle, predictor.to_columns(big))
    with pytest.raises(predictor.UnknownLocationError, match="'atlantis'"):
        predictor.predict(seattle, predictor.to_columns(homes(small, 1, location="atlantis")))
    # requests without coordinates are fine: the bounds apply to values given
    predictor.predict(seattle, predictor.to_columns(homes(small, 1, latitude=None, longitude=None)))


def test_one_home_checks_agree_with_the_array_checks(seattle: LoadedModel) -> None:
    # check_request takes a plain-Python path for small requests; a large one runs the array checks. The
    # same home, alone and padded to a batch past that path, must pass or fail alike, with the same error.
    model = seattle.inner
    bounds = model.bounds
    known = sorted(model.locations)[0]
    cases = [
        {"location": known, "living_sf": bounds["min_living_sf"]},  # at the bounds: inside
        {"location": known, "living_sf": bounds["max_living_sf"], "latitude": None},  # not given: fine
        {"location": known, "living_sf": bounds["max_living_sf"] + 1},
        {"location": known, "living_sf": 1500.0, "latitude": bounds["min_latitude"] - 0.01},
        {"location": known, "living_sf": float("nan"), "longitude": "not a number"},  # NaN: not out
        {"location": "atlantis", "living_sf": 1500.0},
        {"location": None, "living_sf": 1500.0},
        {"location": int(known) if known.isdigit() else known, "living_sf": 1500.0},  # a number as text
    ]

    def outcome(columns: dict) -> str:
        try:
            model.check_request(columns)
        except predictor.RequestError as exc:
            return re.sub(r"row\(s\) [\d, .]+", "row(s) .. ", f"{type(exc).__name__}: {exc}")
        return "ok"

    seen = set()
    for home in cases:
        one = {k: [v] for k, v in home.items()}
        many = {k: [v] * 100 for k, v in home.items()}  # > the small-request path's size
        first = outcome(one)
        assert first == outcome(many), home
        seen.add(first.split(":")[0])
    assert seen == {"ok", "OutOfBoundsError", "UnknownLocationError"}


def test_training_bounds_from_config_or_observed_range(small: Small) -> None:
    observed = training_bounds(small.train)
    assert observed["min_latitude"] == pytest.approx(small.train["latitude"].min() - 0.1)
    assert observed["max_living_sf"] == pytest.approx(small.train["living_sf"].max() * 2)
    mixed = training_bounds(small.train, {"min_latitude": 47.0})
    assert mixed["min_latitude"] == 47.0 and mixed["max_latitude"] == observed["max_latitude"]
    no_coordinates = training_bounds(small.train.assign(latitude=np.nan, longitude=np.nan), NEW_YORK)
    assert set(no_coordinates) == {"min_living_sf", "max_living_sf"}


def test_home_columns_validation_names_field_and_row() -> None:
    ok = HomeColumns(
        location=["1", "2"], living_sf=[900, 1200], beds=[3, None], sale_date=["2015-03-01", None]
    )
    cols = ok.to_columns()
    assert np.isnan(cols["beds"][1]) and np.isnat(cols["sale_date"][1])
    cases = [
        ({"location": ["1", "2"], "living_sf": [900]}, "living_sf: 1 values for 2 homes"),
        ({"location": ["1", "2", "3"], "living_sf": [900, 1, 0]}, "living_sf: row 2: 0 is outside 1..1e+06"),
        ({"location": ["1", "2"], "living_sf": [9, 9], "latitude": [1, 91]}, "latitude: row 1: 91"),
        ({"location": ["1", ""], "living_sf": [9, 9]}, "location: row 1"),
        ({"location": ["1"], "living_sf": [9], "sale_date": ["1900-01-01"]}, "sale_date: row 0"),
        ({"location": ["1"], "living_sf": [9], "beds": ["many"]}, "beds.0"),
        ({"location": ["1"], "living_sf": [float("inf")]}, "living_sf.0"),
        ({"location": ["1"], "living_sf": [9], "garage": [1]}, "garage"),
    ]
    for payload, message in cases:
        with pytest.raises(ValidationError, match=message.replace("+", r"\+")):
            HomeColumns(**payload)


def test_home_schema_reads_no_market_bounds() -> None:
    Home(location="1", living_sf=900, **NEW_YORK_HOME)
    Home(location="1", living_sf=900, latitude=-33.9, longitude=151.2)
    with pytest.raises(ValidationError, match="latitude"):
        Home(location="1", living_sf=900, latitude=123.0)


def test_a_model_without_coordinates_trains_and_serves(
    sale_table: pd.DataFrame, small: Small, tmp_path: Path
) -> None:
    bare = sale_table.drop(columns=["latitude", "longitude"])
    train, validation = small_split(bare)
    model = fit_price_model(train, FAST)
    assert "latitude" not in model.input_fields and "longitude" not in model.input_fields
    assert not set(COORDINATE_FEATURES) & set(model.feature_names)
    assert set(model.bounds) == {"min_living_sf", "max_living_sf"}
    served = loaded(model, train, tmp_path / "model")
    schema = {s.name for s in served.pyfunc.metadata.get_input_schema().inputs}
    assert schema == set(model.input_fields)
    inputs = validation[model.input_fields]
    without = served.pyfunc.predict(inputs)
    # the validation step's schema check: null coordinate columns (data without them) are not extra
    taken = [*INPUT_FIELDS, *(c for c in model.input_fields if c not in INPUT_FIELDS)]  # + parcel_id
    nulls = validation.reindex(columns=taken).assign(latitude=np.nan, longitude=np.nan)
    check_feature_mismatch(nulls, served.pyfunc)
    with pytest.raises(FeatureMismatchError, match=r"unexpected column\(s\) \['latitude'\]"):
        check_feature_mismatch(nulls.assign(latitude=47.6), served.pyfunc)
    # coordinates given to a model that does not use them change nothing
    with_coords = model.predict_columns(
        {**{c: inputs[c].to_numpy() for c in inputs}, "latitude": np.full(len(inputs), 47.6)}
    )
    np.testing.assert_allclose(with_coords["price"], without["price"], rtol=1e-9)
    y = validation["sale_price"].to_numpy()
    mdape = float(np.median(np.abs(without["price"].to_numpy() / y - 1)))
    assert mdape < 0.2  # a useful model still (about 0.12 here; with coordinates about 0.09)
    out = predictor.predict(served, predictor.to_columns(homes(small, 2, **SEATTLE_HOME)))
    assert np.isfinite(out["price"]).all()
    Home(location="1", living_sf=900, sale_date=dt.date(2016, 1, 1))  # no coordinates needed
