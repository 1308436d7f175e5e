"""The columnar batch path: ``homes_from_json`` reads what pydantic would accept as the same columns, leaves
everything else to pydantic, and ``predictions_json`` writes the answer pydantic would write."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from homeprice_assets.serving import predictor
from homeprice_assets.serving.batch import Batch, BatchInput, homes_from_json, predictions_json
from homeprice_assets.serving.holder import LoadedModel
from homeprice_assets.serving.schemas import BatchPrediction, Home
from homeprice_assets_tests.serving.conftest import Registry, Server, home_payload

HOMES = TypeAdapter(list[Home])


def _homes(registry: Registry, n: int = 40) -> list[dict]:
    """Real validation sales, with the shapes a caller sends: dates or none, parcel ids or none, nulls."""
    homes = []
    for i, (_, row) in enumerate(registry.validation.iloc[:n].iterrows()):
        home = home_payload(row)
        if i % 3 == 0:
            home["sale_date"] = f"2016-0{1 + i % 9}-{10 + i % 18}"
        if i % 4 == 1:
            home["parcel_id"] = f"batch-{i}"  # not P...: test_service counts its own
        if i % 5 == 2:
            home["beds"] = None
            home.pop("lot_sf", None)
        if i % 7 == 3:
            home["living_sf"] = int(home["living_sf"])  # JSON integers for float fields
        homes.append(home)
    return homes


def _equal_columns(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name, values in want.items():
        assert got[name].dtype == values.dtype, name
        if values.dtype.kind in "fM":
            np.testing.assert_array_equal(got[name], values, err_msg=name)
        else:
            assert got[name].tolist() == values.tolist(), name


def test_columns_equal_those_of_the_validated_homes(registry: Registry) -> None:
    homes = _homes(registry)
    body = json.dumps({"homes": homes}).encode()
    batch = homes_from_json(body)
    assert batch is not None
    validated = HOMES.validate_json(json.dumps(homes))
    expected = Batch.from_homes(validated)
    _equal_columns(batch.columns, expected.columns)
    assert list(batch.parcel_ids) == list(expected.parcel_ids)
    assert list(batch.locations) == list(expected.locations)
    # the prediction log's inputs: the fields of a Home's JSON, with its values
    logged = [json.loads(batch.json_of(i)) for i in range(len(homes))]
    assert logged == [json.loads(expected.json_of(i)) for i in range(len(homes))]
    # the same rows price the same
    model = LoadedModel("1", "champion", "test", None, registry.model)  # type: ignore[arg-type]
    np.testing.assert_array_equal(
        predictor.predict(model, batch.columns)["price"], predictor.predict(model, expected.columns)["price"]
    )


def test_without_parcels_or_dates_no_parcel_column(registry: Registry) -> None:
    homes = [{"location": h["location"], "living_sf": h["living_sf"]} for h in _homes(registry, 5)]
    batch = homes_from_json(json.dumps({"homes": homes}).encode())
    assert batch is not None
    _equal_columns(batch.columns, predictor.to_columns(HOMES.validate_python(homes)))
    assert "parcel_id" not in batch.columns and np.isnat(batch.columns["sale_date"]).all()


GOOD = {"location": "79", "living_sf": 1500}


@pytest.mark.parametrize(
    ("body", "refused_at"),
    [
        ({"homes": [GOOD | {"living_sf": "1500"}]}, None),  # text pydantic reads as a number
        ({"homes": [GOOD | {"waterfront": 1.0}]}, None),
        ({"homes": [GOOD | {"waterfront": True}]}, None),
        ({"homes": [GOOD | {"sale_date": "2015-03-01T00:00:00"}]}, None),
        ({"homes": [GOOD | {"beds": 31}]}, ("homes", 0, "beds")),  # outside the static limits
        ({"homes": [GOOD, {"location": "79", "living_sf": 0}]}, ("homes", 1, "living_sf")),
        ({"homes": [GOOD | {"garage": 2}]}, ("homes", 0, "garage")),  # unknown field
        ({"homes": [{"location": "79"}]}, ("homes", 0, "living_sf")),  # required field missing
        ({"homes": [GOOD | {"living_sf": None}]}, ("homes", 0, "living_sf")),
        ({"homes": [GOOD | {"location": ""}]}, ("homes", 0, "location")),
        ({"homes": [GOOD | {"location": "x" * 65}]}, ("homes", 0, "location")),
        ({"homes": [GOOD | {"location": 79}]}, ("homes", 0, "location")),
        ({"homes": [GOOD | {"parcel_id": "p" * 65}]}, ("homes", 0, "parcel_id")),
        ({"homes": [GOOD | {"sale_date": "2015-02-30"}]}, ("homes", 0, "sale_date")),
        ({"homes": [GOOD | {"sale_date": "1989-12-31"}]}, ("homes", 0, "sale_date")),
        ({"homes": [GOOD | {"sale_date": "2015-3-1"}]}, ("homes", 0, "sale_date")),
        ({"homes": [GOOD | {"lot_sf": [1]}]}, ("homes", 0, "lot_sf")),
        ({"homes": []}, ("homes",)),
        ({"homes": [GOOD] * 100_001}, ("homes",)),
        ({"homes": GOOD}, ("homes",)),
        ({"homes": [GOOD, "79"]}, ("homes", 1)),
        ({"homes": [GOOD], "other": 1}, None),
        ('{"homes": [{"location": "79", "living_sf": NaN}]}', ("homes", 0, "living_sf")),
        ('{"homes": [{"location": "79", "living_sf": 1500, "lat": Infinity}]}', ("homes", 0, "lat")),
        ("[]", ()),
        ("{", ()),
    ],
)
def test_everything_else_is_left_to_pydantic(body: dict | str, refused_at: tuple | None) -> None:
    """Each of these is declined (None); pydantic then accepts it (``refused_at`` None) or names where it
    failed: the row and the field, the list, or the body itself."""
    raw = (body if isinstance(body, str) else json.dumps(body)).encode()
    assert homes_from_json(raw) is None
    try:
        BatchInput.model_validate_json(raw)
        where = None
    except ValidationError as exc:
        assert exc.title == "Input"  # BentoML's name for an endpoint's input, as before
        where = exc.errors()[0]["loc"]
    assert where == refused_at


def _answer(models: list[LoadedModel], prices: np.ndarray, request_id: str) -> tuple[bytes, str]:
    lowers, uppers = prices * 0.8, prices * 1.25
    by_row = np.array(models, dtype=object)
    fast = predictions_json(request_id, prices, lowers, uppers, by_row, models[0].version)
    assert fast is not None
    preds = [
        {
            "price": p,
            "price_lower": lo,
            "price_upper": hi,
            "interval_level": m.inner.interval_level,
            "model_version": m.version,
            "model_role": m.role,
            "request_id": f"{request_id}-{i}",
        }
        for i, (p, lo, hi, m) in enumerate(zip(prices, lowers, uppers, models, strict=True))
    ]
    slow = BatchPrediction.model_validate(
        {"predictions": preds, "rows": len(preds), "model_version": models[0].version}
    ).model_dump_json()
    return fast, slow


def test_the_answer_is_the_one_pydantic_writes(registry: Registry) -> None:
    champion = LoadedModel("3", "champion", "test", None, registry.model)  # type: ignore[arg-type]
    candidate = LoadedModel("4", "candidate", "test", None, registry.model)  # type: ignore[arg-type]
    rng = np.random.default_rng(5)
    prices = np.concatenate([rng.uniform(5e4, 5e6, 200), [1e16, 123456.0, 0.1, 7.0]])
    models = [champion if k % 3 else candidate for k in range(len(prices))]
    fast, slow = _answer(models, prices, "abc")
    assert json.loads(fast) == json.loads(slow)
    assert list(json.loads(fast)["predictions"][0]) == list(json.loads(slow)["predictions"][0])  # order
    # not finite: left to pydantic (which writes null)
    by_row = np.array(models[:2], dtype=object)
    assert predictions_json("x", np.array([1.0, np.nan]), np.ones(2), np.ones(2), by_row, "3") is None


@pytest.mark.slow
def test_fast_and_pydantic_paths_answer_alike_over_http(server: Server, registry: Registry) -> None:
    """The same homes, once in the columnar form and once with a field pydantic must coerce (text
    numbers): same prices, same answer shape; a bad row is named by pydantic either way."""
    homes = _homes(registry, 30)
    fast = server.post("/predict_batch", {"homes": homes})
    coerced = server.post(
        "/predict_batch", {"homes": [h | {"living_sf": str(h["living_sf"])} for h in homes]}
    )
    assert fast.status_code == coerced.status_code == 200, (fast.text[:300], coerced.text[:300])
    a, b = fast.json(), coerced.json()
    assert a.keys() == b.keys() and a["rows"] == b["rows"] == len(homes)
    assert [list(p) for p in a["predictions"]] == [list(p) for p in b["predictions"]]
    assert [p["price"] for p in a["predictions"]] == [p["price"] for p in b["predictions"]]
    bad = server.post("/predict_batch", {"homes": [*homes[:3], {"location": "79", "living_sf": -1}]})
    assert bad.status_code == 400
    detail = bad.json()["detail"]
    assert detail[0]["loc"] == ["homes", 3, "living_sf"] and "greater than or equal to 1" in detail[0]["msg"]
    assert bad.json()["error"] == "1 validation error for Input"
