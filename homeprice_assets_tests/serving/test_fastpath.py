"""The /predict fast path (``FastApi`` middleware) answers exactly as BentoML's API dispatch does.

Two real services on the same registry: the session's (fast path on, the default) and one started with
``HOMEPRICE_FAST_PREDICT=0`` (BentoML's dispatch answers /predict). The same requests must get the same
status and body (but for the request id), and the fast path must log and count what it answers.
"""

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from homeprice_assets.serving.schemas import Home
from homeprice_assets_tests.serving.conftest import (
    Registry,
    Server,
    home_payload,
    metric,
    start_server,
    stop_server,
    wait_ready,
)

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}
BAD_BODIES = [
    b'{"home": {"location": "79"}}',
    b'{"home": {"location": "79", "living_sf": 0}}',
    b'{"home": {"location": "79", "living_sf": 1500, "latitude": 40.0}}',
    b'{"home": {"location": "79", "living_sf": 900000}}',
    b'{"home": {"location": "79", "living_sf": 1500, "beds": "many"}}',
    b'{"home": {"location": "79", "living_sf": 1500, "garage": 2}}',
    b'{"home": {"location": "atlantis", "living_sf": 1500}}',
    b'{"home": {"location": "79", "living_sf": NaN}}',
    b'{"home": {"location": "79", "living_sf": 1500}, "extra": 1}',
    b'{"home": {"location": ',
    b'{"home": []}',
    b"[]",
    b"{}",
    b"",
    b"null",
]


@pytest.fixture(scope="module")
def dispatch_server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        registry, tmp_path_factory.mktemp("dispatch"), extra_env={"HOMEPRICE_FAST_PREDICT": "0"}
    )
    wait_ready(srv)
    yield srv
    stop_server(srv)


def _post(srv: Server, body: bytes, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(f"{srv.url}/predict", data=body, headers=headers or JSON, timeout=30)


def _without_id(r: requests.Response) -> dict:
    body = r.json()
    assert body.pop("request_id")
    return body


def test_the_middleware_answers_predict_itself_and_passes_the_rest_on(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: the service instance and the middleware as `bentoml serve` builds them, with the app
    behind it recording what reaches it (over HTTP both paths answer alike, so this shows which did)."""
    from _bentoml_sdk.service import set_current_service

    from bento.service import HomePrice
    from homeprice_assets.serving.fastpath import FastApi

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)
    monkeypatch.setenv("HOMEPRICE_HOME", str(registry.home))
    monkeypatch.setenv("HOMEPRICE_PREDICTION_LOG_URL", f"sqlite:///{tmp_path / 'log.db'}")
    monkeypatch.setenv("HOMEPRICE_SERVING_POLL_SECONDS", "600")
    reached: list[str] = []

    async def behind(scope: dict, receive: object, send: object) -> None:
        reached.append(f"{scope['method']} {scope['path']}")

    def call(app: FastApi, method: str, path: str, body: bytes, headers: list) -> list[dict]:
        sent: list[dict] = []
        messages = [{"type": "http.request", "body": body[:5], "more_body": True}]
        messages.append({"type": "http.request", "body": body[5:], "more_body": False})

        async def receive() -> dict:
            return messages.pop(0)

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "headers": headers}
        asyncio.run(app(scope, receive, send))
        return sent

    app = FastApi(behind, service=HomePrice, api="predict", handler="_predict_fast")
    body = b'{"home": {"location": "79", "living_sf": 1500}}'
    set_current_service(None)
    assert call(app, "POST", "/predict", body, []) == [] and reached == ["POST /predict"]  # no instance yet
    instance = HomePrice()
    try:
        set_current_service(instance)
        start, end = call(app, "POST", "/predict", body, [(b"x-homeprice-client", b"c1")])
        assert start["status"] == 200 and (b"server", b"BentoML Service/homeprice") in start["headers"]
        answer = json.loads(end["body"])
        expected = instance._predict_one(Home(location="79", living_sf=1500), "c1").model_dump()
        assert answer.pop("request_id") and expected.pop("request_id")
        assert answer == expected and answer["model_version"] == "1"
        (start, end) = call(app, "POST", "/predict", b'{"home": {}}', [])
        assert start["status"] == 400 and "validation error for Input" in json.loads(end["body"])["error"]
        for method, path in [("POST", "/predict_batch"), ("GET", "/predict"), ("POST", "/predict/")]:
            assert call(app, method, path, body, []) == []
        assert reached == ["POST /predict", "POST /predict_batch", "GET /predict", "POST /predict/"]
    finally:
        set_current_service(None)
        instance._shutdown()
        if instance.follower is not None:
            instance.follower.stop()


def test_same_headers_as_bentoml_dispatch(server: Server, dispatch_server: Server) -> None:
    body = b'{"home": {"location": "79", "living_sf": 1500}}'
    fast, slow = _post(server, body), _post(dispatch_server, body)
    assert fast.status_code == slow.status_code == 200
    assert {k: v for k, v in fast.headers.items() if k != "date"} == {
        k: v for k, v in slow.headers.items() if k != "date"
    }


def test_same_answers_as_bentoml_dispatch(
    server: Server, dispatch_server: Server, registry: Registry
) -> None:
    homes = [home_payload(r) for _, r in registry.validation.iloc[:30].iterrows()]
    homes += [{"location": "79", "living_sf": 1500}, {"location": "79", "living_sf": 1500.5, "beds": None}]
    for home in homes:
        body = json.dumps({"home": home}).encode()
        fast, slow = _post(server, body), _post(dispatch_server, body)
        assert fast.status_code == slow.status_code == 200, (fast.text, slow.text)
        assert _without_id(fast) == _without_id(slow)
        # and the same price as a batch of one home through BentoML's dispatch on the same server
        batch = server.post("/predict_batch", {"homes": [home]}).json()["predictions"][0]
        assert batch.pop("request_id") and batch == _without_id(fast)


@pytest.mark.parametrize("body", BAD_BODIES)
def test_same_errors_as_bentoml_dispatch(server: Server, dispatch_server: Server, body: bytes) -> None:
    fast, slow = _post(server, body), _post(dispatch_server, body)
    assert fast.status_code == slow.status_code
    if fast.status_code == 200:  # BentoML's input model ignores unknown top-level keys (Home does not)
        assert _without_id(fast) == _without_id(slow)
    else:
        assert 400 <= fast.status_code < 500 and fast.json() == slow.json()


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "multipart/form-data"},
        {"Content-Type": "application/vnd.bentoml+pickle"},
        {"Content-Type": "application/json; charset=utf-8"},
        {},
    ],
)
def test_same_content_type_rules(server: Server, dispatch_server: Server, headers: dict) -> None:
    body = b'{"home": {"location": "79", "living_sf": 1500}}'
    fast, slow = _post(server, body, headers), _post(dispatch_server, body, headers)
    assert fast.status_code == slow.status_code
    if fast.status_code == 200:
        assert _without_id(fast) == _without_id(slow)
    else:
        assert fast.status_code == 415 and fast.json() == slow.json()


def test_other_methods_and_routes_pass_through(server: Server, dispatch_server: Server) -> None:
    for srv in (server, dispatch_server):
        assert requests.get(f"{srv.url}/predict", timeout=30).status_code == 405
    body = {"home": {"location": "79", "living_sf": 1500}}
    assert server.post("/explain", body).status_code == 200
    assert server.post("/predict_batch", {"homes": [body["home"]]}).status_code == 200


def test_fast_path_logs_and_counts_every_prediction(server: Server, registry: Registry) -> None:
    def metrics() -> tuple[float, ...]:
        text = requests.get(f"{server.url}/metrics", timeout=10).text
        samples = (
            metric(text, "homeprice_predictions_total", endpoint="predict", model_version="1"),
            metric(text, "homeprice_predicted_price_dollars_count"),
            metric(text, "bentoml_service_request_total", endpoint="/predict", http_response_code="200"),
            metric(text, "bentoml_service_request_total", endpoint="/predict", http_response_code="400"),
            metric(text, "homeprice_request_errors_total", endpoint="predict", kind="bad_input"),
        )
        return tuple(s or 0.0 for s in samples)  # a labelled counter appears at its first count

    before = metrics()
    homes = [
        home_payload(r) | {"parcel_id": f"FAST{i}"}
        for i, (_, r) in enumerate(registry.validation.iloc[:12].iterrows())
    ]
    answers = [server.post("/predict", {"home": h}).json() for h in homes]
    assert server.post("/predict", {"home": {"location": "nope", "living_sf": 900}}).status_code == 400
    assert server.post("/predict", {"home": {"location": "79"}}).status_code == 400
    after = metrics()
    assert [a - b for a, b in zip(after, before, strict=True)] == [12, 12, 12, 2, 1]
    deadline = time.monotonic() + 20
    rows: list = []
    while time.monotonic() < deadline and len(rows) < 12:
        with sqlite3.connect(server.prediction_log) as db:
            rows = db.execute(
                "SELECT request_id, parcel_id, model_version, model_role, price FROM predictions "
                "WHERE parcel_id LIKE 'FAST%'"
            ).fetchall()
        time.sleep(0.3)
    assert sorted(rows) == sorted(
        (a["request_id"], h["parcel_id"], "1", "champion", a["price"])
        for a, h in zip(answers, homes, strict=True)
    )
