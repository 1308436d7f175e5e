"""The real service during a rollout: shadow rows under one request id, sticky A/B, flips under load.

One `bentoml serve` follows its own registered model name (``homeprice-rollout``) with two versions; the
registry is changed with the same functions the CLI and the sensor use, and the service follows by polling.
"""

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from homeprice_assets.resources.registry import Registry
from homeprice_assets.rollout import state as st
from homeprice_assets.rollout.assignment import in_candidate_arm
from homeprice_assets.training.model import fit_price_model
from homeprice_assets_tests.serving.conftest import (
    Registry as ServingRegistry,
)
from homeprice_assets_tests.serving.conftest import (
    Server,
    home_payload,
    metric,
    start_server,
    stop_server,
    wait_ready,
)

pytestmark = pytest.mark.slow
NAME = "homeprice-rollout"


@pytest.fixture(scope="module")
def rollout_server(
    registry: ServingRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Registry]]:
    """v1 (the session's champion model) and v2 (a smaller model) under their own name; v1 champion."""
    small = fit_price_model(registry.train, {"num_boost_round": 40})
    for model in (registry.model, small):
        registry.register(model, alias=None, name=NAME)
    reg = Registry(tracking_uri=registry.uri, model_name=NAME)
    st.promote(reg, "1", "test setup")
    srv = start_server(
        registry,
        tmp_path_factory.mktemp("rollout-serve"),
        poll_seconds=0.3,
        extra_env={"HOMEPRICE_MODEL_NAME": NAME, "HOMEPRICE_PREDICTION_LOG_FLUSH_SECONDS": "0.2"},
    )
    wait_ready(srv)
    yield srv, reg
    stop_server(srv)


def _follow(srv: Server, **expected: object) -> dict:
    """Wait until /model_info shows ``expected`` (the service polls the registry)."""
    deadline = time.monotonic() + 30
    info: dict = {}
    while time.monotonic() < deadline:
        info = srv.post("/model_info", {}).json()
        if all(info.get(k) == v for k, v in expected.items()):
            return info
        time.sleep(0.2)
    raise AssertionError(f"service did not follow {expected}: {info}")


def _rows(srv: Server, where: str = "1=1") -> list[tuple]:
    with sqlite3.connect(srv.prediction_log) as db:
        return db.execute(
            f"SELECT request_id, model_version, model_role, parcel_id FROM predictions WHERE {where}"
        ).fetchall()


def _wait_rows(srv: Server, where: str, n: int) -> list[tuple]:
    deadline = time.monotonic() + 30
    rows: list[tuple] = []
    while time.monotonic() < deadline:
        rows = _rows(srv, where)
        if len(rows) >= n:
            return rows
        time.sleep(0.3)
    return rows


def _homes(registry: ServingRegistry, prefix: str, n: int) -> list[dict]:
    rows = registry.validation.iloc[:n]
    return [home_payload(r) | {"parcel_id": f"{prefix}{i}"} for i, (_, r) in enumerate(rows.iterrows())]


def test_shadow_logs_both_models_under_one_request_id(
    rollout_server: tuple[Server, Registry], registry: ServingRegistry
) -> None:
    srv, reg = rollout_server
    st.start_rollout(reg, "2", "shadow", 0.5, "test")
    info = _follow(srv, rollout_mode="shadow", candidate_version="2")
    assert info["champion_version"] == "1" and info["rollout_started_at"]
    homes = _homes(registry, "SH", 40)
    body = srv.post("/predict_batch", {"homes": homes}).json()
    assert {(p["model_version"], p["model_role"]) for p in body["predictions"]} == {("1", "champion")}
    one = srv.post("/predict", {"home": homes[0] | {"parcel_id": "SH-one"}}).json()
    rows = _wait_rows(srv, "parcel_id LIKE 'SH%'", 82)
    by_request = Counter((r[0], r[1], r[2]) for r in rows)
    assert len(rows) == 82 and set(by_request.values()) == {1}
    champion_ids = {r[0] for r in rows if r[2] == "champion"}
    shadow_ids = {r[0] for r in rows if r[2] == "shadow"}
    assert champion_ids == shadow_ids and one["request_id"] in shadow_ids
    assert {r[1] for r in rows if r[2] == "shadow"} == {"2"}
    metrics = requests.get(f"{srv.url}/metrics", timeout=10).text
    assert 'homeprice_predictions_total{endpoint="shadow",model_version="2",role="shadow"}' in metrics
    assert metric(metrics, "homeprice_model_loaded", model_version="2", role="shadow") == 1.0
    st.stop_rollout(reg, "test over")
    _follow(srv, rollout_mode="off")


def test_ab_assignment_is_sticky_and_says_who_answered(
    rollout_server: tuple[Server, Registry], registry: ServingRegistry
) -> None:
    srv, reg = rollout_server
    st.start_rollout(reg, "2", "ab", 0.3, "test")
    _follow(srv, rollout_mode="ab", rollout_weight=0.3)
    homes = _homes(registry, "AB", 400)
    first = srv.post("/predict_batch", {"homes": homes}).json()["predictions"]
    again = srv.post("/predict_batch", {"homes": homes[::-1]}).json()["predictions"][::-1]
    arms = [(p["model_version"], p["model_role"]) for p in first]
    assert arms == [(p["model_version"], p["model_role"]) for p in again]  # sticky, in any order
    assert set(arms) == {("1", "champion"), ("2", "candidate")}
    share = sum(a == ("2", "candidate") for a in arms) / len(arms)
    assert abs(share - 0.3) < 0.08, share
    single = srv.post("/predict", {"home": homes[0]}).json()
    assert (single["model_version"], single["model_role"]) == arms[0]
    # the columnar form routes the same homes to the same arms, and logs them like the others
    fields = sorted({k for h in homes[:60] for k in h})
    columns = {f: [h.get(f) for h in homes[:60]] for f in fields}
    body = srv.post("/predict_columns", {"columns": columns}).json()
    assert (
        body["rows"] == 60 and list(zip(body["model_version"], body["model_role"], strict=True)) == arms[:60]
    )
    assert body["price"] == pytest.approx([p["price"] for p in first[:60]], rel=1e-9)
    logged = _wait_rows(srv, f"request_id LIKE '{body['request_id']}-%'", 60)
    assert sorted((r[3], r[1], r[2]) for r in logged) == sorted(
        (h["parcel_id"], *a) for h, a in zip(homes[:60], arms[:60], strict=True)
    )
    # no parcel id: the client key header decides, the same way every time
    bare = {k: v for k, v in homes[1].items() if k != "parcel_id"}
    answers = {
        requests.post(
            f"{srv.url}/predict", json={"home": bare}, headers={"X-Homeprice-Client": f"c{i}"}, timeout=30
        ).json()["model_role"]
        for i in range(40)
        for _ in range(2)
    }
    assert answers == {"champion", "candidate"}
    metrics = requests.get(f"{srv.url}/metrics", timeout=10).text
    assert metric(metrics, "homeprice_predictions_total", model_version="2", role="candidate") > 0
    assert metric(metrics, "homeprice_rollout_weight", mode="ab") == pytest.approx(0.3)
    # a batch refused for one champion-arm home logs nothing, not even the candidate arm's prices
    refused = _homes(registry, "ABX", 20)
    assert any(in_candidate_arm(h["parcel_id"], 0.3, "2") for h in refused)
    refused.append(homes[0] | {"parcel_id": "ABX-bad", "location": "a place no model knows"})
    assert srv.post("/predict_batch", {"homes": refused}).status_code == 400
    srv.post("/predict", {"home": homes[0] | {"parcel_id": "ABY-after"}})
    _wait_rows(srv, "parcel_id = 'ABY-after'", 1)  # rows are written in order: anything before is in
    assert _rows(srv, "parcel_id LIKE 'ABX%'") == []
    st.stop_rollout(reg, "test over")
    _follow(srv, rollout_mode="off")


def test_flips_and_a_rollback_under_load_fail_no_request_and_lose_no_row(
    rollout_server: tuple[Server, Registry], registry: ServingRegistry
) -> None:
    """4 clients for ~12 s while mode and weight flip, the candidate is promoted and rolled back."""
    srv, reg = rollout_server
    homes = _homes(registry, "LD", 200)
    answered: list[dict] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(k: int) -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set() and i < 2000:
            batch = [homes[(k * 50 + i + j) % len(homes)] for j in range(3)]
            try:
                r = session.post(f"{srv.url}/predict_batch", json={"homes": batch}, timeout=30)
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    answered.extend(r.json()["predictions"])
            except requests.RequestException as exc:
                failures.append(repr(exc))
            i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        steps = [
            lambda: st.start_rollout(reg, "2", "shadow", 0.5, "load"),
            lambda: st.start_rollout(reg, "2", "ab", 0.5, "load: flip to ab", replace=True),
            lambda: st.start_rollout(reg, "2", "ab", 0.1, "load: weight", replace=True),
            lambda: st.start_rollout(reg, "2", "shadow", 0.5, "load: back to shadow", replace=True),
            lambda: st.promote_candidate(reg, "load: promote"),
            lambda: st.rollback(reg, "load: rollback"),
        ]
        for step in steps:
            time.sleep(1.5)
            step()
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not failures, failures[:5]
    assert len(answered) > 100
    _follow(srv, champion_version="1", rollout_mode="off")
    ids = {p["request_id"] for p in answered}
    rows = _wait_rows(srv, "parcel_id LIKE 'LD%' AND model_role != 'shadow'", len(answered))
    logged = Counter((r[0], r[1], r[2]) for r in rows)
    # exactly one row per answered prediction, with the version and role that answered it
    assert logged == Counter((p["request_id"], p["model_version"], p["model_role"]) for p in answered)
    shadow = Counter(r[0] for r in _rows(srv, "parcel_id LIKE 'LD%' AND model_role = 'shadow'"))
    assert shadow and set(shadow.values()) == {1} and set(shadow) <= ids  # at most one shadow row each
    roles = Counter((p["model_version"], p["model_role"]) for p in answered)
    assert roles[("2", "candidate")] > 0 and roles[("1", "champion")] > 0 and roles[("2", "champion")] > 0
    metrics = requests.get(f"{srv.url}/metrics", timeout=10).text
    assert metric(metrics, "homeprice_shadow_failures_total") == 0.0
