"""The real service over HTTP: predictions, batch, locations, explanations, bad input, readiness, the log."""

import math
import sqlite3
import threading
import time

import numpy as np
import pytest
import requests

from homeprice_assets.training.model import fit_price_model
from homeprice_assets.training.tracking import coerce_inputs
from homeprice_assets_tests.serving.conftest import (
    Registry,
    Server,
    home_payload,
    metric,
    start_server,
    stop_server,
    wait_ready,
)
from homeprice_model.model import EXPLAIN_METHOD

pytestmark = pytest.mark.slow


def test_predict_one_home(server: Server, registry: Registry) -> None:
    row = registry.validation.iloc[0]
    r = server.post("/predict", {"home": home_payload(row)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "1" and body["model_role"] == "champion"
    assert body["price_lower"] < body["price"] < body["price_upper"]
    assert body["interval_level"] == pytest.approx(0.8)
    local = registry.model.predict(
        None, coerce_inputs(registry.validation.iloc[[0]][registry.model.input_fields])
    )
    assert body["price"] == pytest.approx(float(local["price"].iloc[0]), rel=1e-6)


def test_predict_many_homes_vectorized(server: Server, registry: Registry) -> None:
    rows = registry.validation.iloc[:2000]
    homes = [home_payload(r) for _, r in rows.iterrows()]
    r = server.post("/predict_batch", {"homes": homes})
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert body["rows"] == len(homes) == len(body["predictions"])
    served = np.array([p["price"] for p in body["predictions"]])
    local = registry.model.predict(None, coerce_inputs(rows[registry.model.input_fields]))["price"].to_numpy()
    np.testing.assert_allclose(served, local, rtol=1e-6)
    # and the served model is accurate on these real, unseen sales
    ape = np.abs(served - rows["sale_price"].to_numpy()) / rows["sale_price"].to_numpy()
    assert np.median(ape) < 0.15


def test_a_batch_at_the_documented_limit_is_priced(server: Server, registry: Registry) -> None:
    """100,000 homes in one request (the limit; one more is refused, below)."""
    distinct = [home_payload(r) for _, r in registry.validation.iterrows()]
    homes = (distinct * (100_000 // len(distinct) + 1))[:100_000]
    started = time.monotonic()
    r = server.post("/predict_batch", {"homes": homes}, timeout=300)
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    assert body["rows"] == 100_000 and len({p["request_id"] for p in body["predictions"]}) == 100_000
    assert body["predictions"][0]["price"] == body["predictions"][len(distinct)]["price"]
    assert time.monotonic() - started < 120


def test_locations_with_counts(server: Server, registry: Registry) -> None:
    r = server.post("/locations", {})
    assert r.status_code == 200
    served = {x["location"]: x["sales"] for x in r.json()}
    assert served == {str(k): int(v) for k, v in registry.model.locations.items()}
    assert sum(served.values()) > 10_000


def test_explanation_adds_up_to_the_price(server: Server, registry: Registry) -> None:
    home = home_payload(registry.validation.iloc[3])
    explanation = server.post("/explain", {"home": home}).json()
    price = server.post("/predict", {"home": home}).json()["price"]
    total = (
        explanation["base_value"]
        + explanation["market_index"]
        + sum(c["value"] for c in explanation["contributions"])
    )
    assert math.exp(total) == pytest.approx(price, rel=1e-4)
    sizes = [abs(c["value"]) for c in explanation["contributions"]]
    assert sizes == sorted(sizes, reverse=True)
    assert explanation["method"] == EXPLAIN_METHOD


@pytest.mark.parametrize(
    ("payload", "field", "problem"),
    [
        ({"home": {"location": "79"}}, "living_sf", "Field required"),
        ({"home": {"location": "79", "living_sf": 0}}, "living_sf", "greater than or equal to 1"),
        # inside the static limits, outside the range the LOADED model was trained on (its bounds)
        ({"home": {"location": "79", "living_sf": 1500, "latitude": 40.0}}, "latitude", "training range"),
        ({"home": {"location": "79", "living_sf": 900_000}}, "living_sf", "training range"),
        (
            {"home": {"location": "79", "living_sf": 1500, "latitude": 123.0}},
            "latitude",
            "less than or equal",
        ),
        ({"home": {"location": "79", "living_sf": 1500, "beds": "many"}}, "beds", "valid number"),
        ({"home": {"location": "79", "living_sf": 1500, "garage": 2}}, "garage", "Extra inputs"),
        ({"home": {"location": "atlantis", "living_sf": 1500}}, "location", "unknown location(s) 'atlantis'"),
        ('{"home": {"location": "79", "living_sf": NaN}}', "living_sf", "finite number"),  # raw JSON
        (
            {"homes": [{"location": "79", "living_sf": 1500}, {"location": "nope", "living_sf": 1500}]},
            "location",
            "unknown location(s) 'nope' in row(s) 1",
        ),
        ({"homes": []}, "homes", "at least 1 item"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    server: Server, payload: dict | str, field: str, problem: str
) -> None:
    path = "/predict_batch" if "homes" in payload else "/predict"
    if isinstance(payload, str):  # JSON that `requests` refuses to write (NaN)
        headers = {"Content-Type": "application/json"}
        r = requests.post(f"{server.url}{path}", data=payload, headers=headers, timeout=30)
    else:
        r = server.post(path, payload)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert field in r.text and problem in r.text, r.text


def test_malformed_json_and_oversized_batch_are_4xx(server: Server) -> None:
    r = requests.post(
        f"{server.url}/predict",
        data=b'{"home": {"location": ',
        timeout=30,
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= r.status_code < 500, r.text
    r = requests.post(
        f"{server.url}/predict", data=b"{}", timeout=30, headers={"Content-Type": "multipart/form-data"}
    )
    assert r.status_code == 415 and "expected application/json" in r.json()["error"]
    too_many = {"homes": [{"location": "79", "living_sf": 1000}] * 100_001}
    r = server.post("/predict_batch", too_many, timeout=120)
    assert 400 <= r.status_code < 500, r.text[:300]
    assert "homes" in r.text and "100000" in r.text


def test_every_prediction_is_logged_with_its_model(server: Server, registry: Registry) -> None:
    homes = [
        home_payload(r) | {"parcel_id": f"P{i}"}
        for i, (_, r) in enumerate(registry.validation.iloc[:25].iterrows())
    ]
    assert server.post("/predict_batch", {"homes": homes}).status_code == 200
    deadline = time.monotonic() + 20
    rows: list = []
    while time.monotonic() < deadline:
        with sqlite3.connect(server.prediction_log) as db:
            rows = db.execute(
                "SELECT parcel_id, model_version, model_role, price, inputs FROM predictions "
                "WHERE parcel_id LIKE 'P%' ORDER BY id"
            ).fetchall()
        if len(rows) >= 25:
            break
        time.sleep(0.5)
    assert len(rows) == 25
    assert {(r[1], r[2]) for r in rows} == {("1", "champion")}
    assert rows[0][0] == "P0" and '"living_sf"' in rows[0][4]


def test_metrics(server: Server, registry: Registry) -> None:
    """Self-contained (whatever ran before): counts, latency, errors, the loaded version, the prices."""

    def counts() -> tuple[float, ...]:
        text = requests.get(f"{server.url}/metrics", timeout=10).text
        samples = (
            metric(text, "homeprice_predictions_total", endpoint="predict", model_version="1"),
            metric(text, "homeprice_predicted_price_dollars_count"),
            metric(text, "bentoml_service_request_duration_seconds_count", endpoint="/predict"),
            metric(text, "bentoml_service_request_total", endpoint="/predict", http_response_code="400"),
            metric(text, "homeprice_request_errors_total", endpoint="predict", kind="bad_input"),
        )
        return tuple(s or 0.0 for s in samples)  # a labelled counter appears at its first count

    before = counts()
    assert server.post("/predict", {"home": home_payload(registry.validation.iloc[1])}).status_code == 200
    assert server.post("/predict", {"home": {"location": "79"}}).status_code == 400  # schema
    assert server.post("/predict", {"home": {"location": "nope", "living_sf": 900}}).status_code == 400
    after = counts()
    # one priced home, three timed requests, two refused (both by status code, the model's own by kind)
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 3, 2, 1]
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    assert metric(text, "homeprice_model_loaded", model_version="1") == 1.0
    assert metric(text, "homeprice_prediction_log_failures_total") == 0.0
    assert metric(text, "homeprice_registry_poll_errors_total") == 0.0


def test_not_ready_until_a_model_exists_then_hot_swaps(registry: Registry, tmp_path) -> None:
    """A fresh registry name: /readyz 503 until a champion appears; then promotions swap without a failure."""

    # the model promoted under load, fitted before (fitting while the server is hammered only slowed both)
    newer = fit_price_model(registry.train, {"num_boost_round": 150})
    # the log writes only at shutdown here: what it holds then must still reach the table
    srv = start_server(
        registry,
        tmp_path,
        extra_env={"HOMEPRICE_MODEL_NAME": "homeprice-swap", "HOMEPRICE_PREDICTION_LOG_FLUSH_SECONDS": "600"},
    )
    try:
        assert requests.get(f"{srv.url}/readyz", timeout=5).status_code == 503
        r = srv.post("/predict", {"home": {"location": "79", "living_sf": 1500}})
        assert r.status_code == 503  # BentoML hides 5xx bodies; the server log names the missing alias
        first = registry.register(registry.model, name="homeprice-swap")  # its own name
        wait_ready(srv)
        home = home_payload(registry.validation.iloc[5])
        results: list[tuple[int, str]] = []
        stop = threading.Event()

        def hammer() -> None:
            deadline = time.monotonic() + 90
            while not stop.is_set() and time.monotonic() < deadline and len(results) < 5000:
                resp = srv.post("/predict", {"home": home}, timeout=30)
                results.append((resp.status_code, resp.json().get("model_version", "")))

        thread = threading.Thread(target=hammer)
        thread.start()
        time.sleep(2)
        second = registry.register(newer, name="homeprice-swap")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(v == second for _, v in results):
            time.sleep(0.5)
        time.sleep(1)
        stop.set()
        thread.join(timeout=60)
        assert results and all(code == 200 for code, _ in results), [r for r in results if r[0] != 200][:5]
        versions = [v for _, v in results]
        assert versions[0] == first and versions[-1] == second
        # once swapped, never back
        assert versions.index(second) > 0 and set(versions[versions.index(second) :]) == {second}
        metrics = requests.get(f"{srv.url}/metrics", timeout=10).text
        assert f'homeprice_model_loaded{{model_version="{second}"' in metrics
    finally:
        stop_server(srv)
    # SIGTERM flushed the prediction log: every answered prediction is there, with the version that made it
    with sqlite3.connect(srv.prediction_log) as db:
        logged = db.execute("SELECT model_version, COUNT(*) FROM predictions GROUP BY 1").fetchall()
    answered = {v: versions.count(v) for v in set(versions)}
    assert dict(logged) == answered
