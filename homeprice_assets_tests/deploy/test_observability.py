"""The Prometheus scrape config and the Grafana dashboard, against the service's metrics and the compose file.

The end-to-end check (a real Prometheus scraping the real service) is test_prometheus.py (slow).
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

from homeprice_assets_tests.deploy import deployfiles as d


def test_dashboard_queries_only_metrics_the_service_defines() -> None:
    known = d.service_metric_names() | d.bentoml_metric_names()
    queried = set().union(*(d.promql_metrics(e) for e in d.dashboard_exprs()))
    unknown = sorted(queried - known)
    assert not unknown, f"the dashboard queries {unknown}: not defined in bento/service.py nor by BentoML"


def test_dashboard_covers_what_operators_need() -> None:
    queried = set().union(*(d.promql_metrics(e) for e in d.dashboard_exprs()))
    for metric in (
        "bentoml_service_request_total",  # requests by endpoint, errors by status
        "bentoml_service_request_duration_seconds",  # latency by endpoint
        "homeprice_request_errors_total",  # errors by kind
        "homeprice_model_loaded",  # the version serving each role
        "homeprice_predicted_price_dollars",  # the predicted price distribution
        "homeprice_live_mdape",  # live error per model version
    ):
        assert metric in queried, f"no panel shows {metric}"


def test_dashboard_is_wired_to_the_provisioned_datasource() -> None:
    dash = json.loads(d.DASHBOARD.read_text())
    (source,) = d.load_yaml(d.GRAFANA_DATASOURCES)["datasources"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"], f"panel {panel['title']} queries nothing"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"] and target["expr"].strip()
    assert source["type"] == "prometheus"
    assert urlparse(source["url"]).hostname == "prometheus"  # the compose service
    assert urlparse(source["url"]).port == 9090


def test_prometheus_scrapes_the_service_where_compose_runs_it() -> None:
    config = d.load_yaml(d.PROMETHEUS)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "homeprice" and job.get("metrics_path", "/metrics") == "/metrics"
    (target,) = [t for sc in job["static_configs"] for t in sc["targets"]]
    host, port = target.split(":")
    services = d.compose()["services"]
    assert host in services and host == "bento"
    published = [p.split(":") for p in services["bento"]["ports"]]
    assert [int(port)] == [int(container) for _, container in published]
    exprs = d.dashboard_exprs()
    assert all('job="homeprice"' in e for e in exprs), "every panel selects the scrape job by name"
    mounts = services["prometheus"]["volumes"]
    assert any(m.startswith("../observability/prometheus.yml:") for m in mounts)
    grafana_mounts = {m.split(":")[0] for m in services["grafana"]["volumes"]}
    assert {"../observability/grafana/provisioning", "../observability/grafana/dashboards"} <= grafana_mounts
