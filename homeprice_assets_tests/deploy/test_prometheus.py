"""A real Prometheus (Debian's package) scrapes the real service (`bentoml serve`) with deploy's config.

Both run on loopback, started by the test; the service has a trained champion in a registry of its own. The
committed config is checked by promtool, then used with only its target pointed at the test's service.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import requests
import yaml

from homeprice_assets.rollout.groundtruth import join_ground_truth, live_by_version
from homeprice_assets.rollout.state import publish_live
from homeprice_assets.serving.predlog import read_predictions
from homeprice_assets_tests.deploy import deployfiles as d
from homeprice_assets_tests.helpers import stop_process_group
from homeprice_assets_tests.serving.conftest import (
    Registry,
    Server,
    free_port,
    home_payload,
    start_server,
    stop_server,
    wait_ready,
)

pytestmark = pytest.mark.slow

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def _tool(path: str) -> str:
    assert Path(path).is_file(), (
        f"{path} is missing: run `python -m homeprice_assets_tests.prepare` (make test does) to install "
        "Debian's prometheus package"
    )
    return path


@pytest.fixture(scope="module")
def service(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(registry, tmp_path_factory.mktemp("prom-serve"))
    try:
        wait_ready(srv)
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="module")
def prometheus(service: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prometheus")
    config = d.load_yaml(d.PROMETHEUS)
    config["global"]["scrape_interval"] = "1s"
    (job,) = config["scrape_configs"]
    job["scrape_interval"] = "1s"
    job["static_configs"][0]["targets"] = [service.url.removeprefix("http://")]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    check = subprocess.run([_tool(PROMTOOL), "check", "config", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    log = tmp / "prometheus.log"
    proc = subprocess.Popen(
        [
            _tool(PROMETHEUS),
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"prometheus exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(f"prometheus not ready:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        stop_process_group(proc)
        shutil.rmtree(tmp / "data", ignore_errors=True)


def _exercise(service: Server, registry: Registry) -> None:
    """Three homes priced one by one, the same three in a batch, one refused (unknown location)."""
    homes = [home_payload(registry.validation.iloc[i]) for i in range(3)]
    for home in homes:
        assert service.post("/predict", {"home": home}).status_code == 200
    assert service.post("/predict_batch", {"homes": homes}).status_code == 200
    unknown = {**homes[0], "location": "Atlantis"}
    assert service.post("/predict", {"home": unknown}).status_code == 400


def _query(prometheus: str, expr: str) -> list[dict]:
    r = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def _wait_for(prometheus: str, expr: str, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = _query(prometheus, expr)
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"Prometheus has no data for {expr} after {timeout} s")


def test_committed_scrape_config_passes_promtool() -> None:
    check = subprocess.run(
        [_tool(PROMTOOL), "check", "config", str(d.PROMETHEUS)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_scrapes_homeprice_metrics(service: Server, prometheus: str, registry: Registry) -> None:
    _exercise(service, registry)
    up = _wait_for(prometheus, 'up{job="homeprice"} == 1')
    assert up[0]["metric"]["service"] == "homeprice"  # the label set in deploy's scrape config
    _wait_for(prometheus, 'sum(homeprice_predictions_total{job="homeprice"}) >= 6', timeout=30)
    loaded = _wait_for(prometheus, 'homeprice_model_loaded{job="homeprice"} == 1')
    assert {(r["metric"]["role"], r["metric"]["model_version"]) for r in loaded} == {("champion", "1")}
    priced = _query(prometheus, 'sum by (endpoint) (homeprice_predictions_total{job="homeprice"})')
    by_endpoint = {r["metric"]["endpoint"]: float(r["value"][1]) for r in priced}
    assert by_endpoint == {"predict": 3.0, "predict_batch": 3.0}, "runs first in this module"
    errors = _wait_for(prometheus, 'homeprice_request_errors_total{job="homeprice", kind="bad_input"}')
    assert float(errors[0]["value"][1]) >= 1


def test_live_accuracy_reaches_prometheus_per_model_version(
    service: Server, prometheus: str, registry: Registry
) -> None:
    """Homes priced 60 days ahead of their sale, the prediction log joined to those sales as
    rollout_evaluation does, the figures written to the registry: the service exports them on its next poll
    (the registry is polled every second here)."""
    sales = registry.validation.iloc[:40].copy()
    sales["sale_id"] = [f"s{i}" for i in range(len(sales))]
    sales["parcel_id"] = [f"p{i}" for i in range(len(sales))]
    sales["sale_month"] = pd.to_datetime(sales["sale_date"]).dt.strftime("%Y-%m")
    for _, row in sales.iterrows():
        home = home_payload(row)
        home["sale_date"] = str((pd.Timestamp(row["sale_date"]) - pd.Timedelta(days=60)).date())
        assert service.post("/predict", {"home": home}).status_code == 200
    deadline = time.monotonic() + 30
    log_url = f"sqlite:///{service.prediction_log}"
    while len(logged := read_predictions(log_url, list(sales["parcel_id"]))) < 40:
        assert time.monotonic() < deadline, f"{len(logged)} of 40 predictions logged"
        time.sleep(0.5)
    rows, unmatched = join_ground_truth(sales, logged, embargo_days=30, horizon_months=12)
    assert unmatched == 0 and len(rows) == 40
    live = live_by_version(rows, window_months=3)
    assert set(live) == {"1"} and live["1"]["n"] == 40
    publish_live(registry.store(), live, "2026-01-01T00:00:00")
    mdape = _wait_for(prometheus, 'homeprice_live_mdape{job="homeprice"}')
    assert [r["metric"]["model_version"] for r in mdape] == ["1"]
    assert float(mdape[0]["value"][1]) == pytest.approx(live["1"]["mdape"])
    matched = _wait_for(prometheus, 'homeprice_live_matched_sales{job="homeprice", model_version="1"}')
    assert float(matched[0]["value"][1]) == 40
    ppe10 = _wait_for(prometheus, 'homeprice_live_ppe10{job="homeprice", model_version="1"}')
    assert float(ppe10[0]["value"][1]) == pytest.approx(live["1"]["ppe10"])
    assert registry.store().get_version("1").tags["live_matched_sales"] == "40"  # for the MLflow UI


def test_dashboard_queries_run_on_prometheus_and_find_the_service_metrics(
    service: Server, prometheus: str, registry: Registry
) -> None:
    """Every panel's PromQL is accepted by Prometheus, and every metric it names is in /metrics."""
    _exercise(service, registry)  # labelled metrics appear in /metrics once used
    exposed = {
        line.split()[2]
        for line in requests.get(f"{service.url}/metrics", timeout=10).text.splitlines()
        if line.startswith("# TYPE ")
    }
    exposed |= {n.removesuffix("_total") for n in exposed}  # OpenMetrics may name a counter without _total
    for expr in d.dashboard_exprs():
        _query(prometheus, expr)  # a malformed query fails here
        for metric in d.promql_metrics(expr):
            assert metric in exposed, f"{metric} ({expr}) is not in the service's /metrics"
