"""docs/: the exported OpenAPI document and the architecture picture cannot go stale."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Iterator
from types import ModuleType

import pytest
import requests

from homeprice_assets.config import REPO_ROOT
from homeprice_assets_tests.serving.conftest import Registry, Server, start_server, stop_server, wait_ready

DOCS = REPO_ROOT / "docs"


def _exporter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("export_openapi", DOCS / "export_openapi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_openapi_matches_the_service() -> None:
    """Regenerated from bento/service.py and compared: run `python docs/export_openapi.py` after a change."""
    exporter = _exporter()
    assert exporter.render(exporter.service_openapi()) == (DOCS / "openapi.json").read_text(), (
        "docs/openapi.json is stale: run `.venv/bin/python docs/export_openapi.py`"
    )
    assert exporter.main(["--check"]) == 0


def test_openapi_describes_the_endpoints_and_their_required_fields() -> None:
    spec = json.loads((DOCS / "openapi.json").read_text())
    paths = set(spec["paths"])
    for path in ("/predict", "/predict_batch", "/locations", "/explain", "/model_info"):
        assert "post" in spec["paths"][path], path
    assert {"/readyz", "/livez", "/metrics"} <= paths
    home = spec["components"]["schemas"]["Home"]
    assert {"location", "living_sf"} <= set(home["required"])
    assert spec["info"]["title"] == "homeprice"


def test_architecture_picture_is_rendered_from_the_current_diagram() -> None:
    text = (DOCS / "architecture.md").read_text()
    (source,) = re.findall(r"^```mermaid\n(.*?)^```$", text, re.S | re.M)
    svg = (DOCS / "architecture.svg").read_text()
    (recorded,) = re.findall(r"<!-- mermaid-source-sha256: ([0-9a-f]{64}) -->", svg)
    assert recorded == hashlib.sha256(source.encode()).hexdigest(), (
        "docs/architecture.svg is stale: run `bash docs/render_architecture.sh`"
    )
    for component in ("MLflow tracking server", "BentoML service", "PostgreSQL", "S3 / MinIO", "Prometheus"):
        assert component in source
    readme = (REPO_ROOT / "README.md").read_text()
    assert "docs/architecture.md" in readme and "docs/openapi.json" in readme


@pytest.fixture(scope="module")
def served(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(registry, tmp_path_factory.mktemp("openapi-serve"))
    try:
        wait_ready(srv)
        yield srv
    finally:
        stop_server(srv)


@pytest.mark.slow
def test_running_service_answers_the_exported_document(served: Server) -> None:
    """What `bentoml serve` answers at /docs.json is the exported document (but for the two fields set)."""
    answered = requests.get(f"{served.url}/docs.json", timeout=30).json()
    exported = json.loads((DOCS / "openapi.json").read_text())
    for doc in (answered, exported):
        doc["info"].pop("description")
        doc["info"].pop("version")
    assert answered == exported
