"""The registry resource on a real MLflow store (SQLite): versions, aliases, runs, loading."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import mlflow
import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from homeprice_assets.resources.registry import CHAMPION, PREVIOUS, ModelRegistry, Registry
from homeprice_assets.rollout.state import RolloutState, read_state


class Doubler(mlflow.pyfunc.PythonModel):
    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame({"price": model_input["x"] * self.factor})


def _register(registry: Registry, tmp_path: Path, factor: float) -> str:
    model_dir = tmp_path / f"model-{factor}"
    mlflow.pyfunc.save_model(str(model_dir), python_model=Doubler(factor), pip_requirements=["pandas"])
    with registry.run(run_name=f"factor-{factor}", tags={"kind": "test"}) as run:
        run.log_params({"factor": factor})
        run.log_dict({"features": ["x"], "factor": factor}, "features.json")
        version = registry.register(run, model_dir, tags={"factor": factor})
    return str(version.version)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    resource = ModelRegistry(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "artifacts"),
        model_name="registry-test",
    )
    return resource.get()


def test_versions_aliases_promotion_and_loading(registry: Registry, tmp_path: Path) -> None:
    global_uri = mlflow.get_tracking_uri()
    v1 = _register(registry, tmp_path, 2.0)
    v2 = _register(registry, tmp_path, 3.0)
    assert (v1, v2) == ("1", "2")
    assert registry.version(CHAMPION) is None

    first = registry.promote(v1, reason="first model")
    assert (first.champion, first.previous, first.changed) == ("1", None, True)
    second = registry.promote(v2, reason="better")
    assert (second.champion, second.previous, second.changed) == ("2", "1", True)
    assert registry.promote(v2).changed is False
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "1"}
    assert registry.get_version(v2).tags["alias.champion.reason"] == "better"

    pyfunc, inner = registry.load(registry.version_number(CHAMPION))
    assert pyfunc.predict(pd.DataFrame({"x": [1.0, 2.0]}))["price"].tolist() == [3.0, 6.0]
    assert inner.factor == 3.0
    assert registry.features_of(v1) == {"features": ["x"], "factor": 2.0}
    run = registry.client.get_run(registry.get_version(v1).run_id)
    assert run.info.status == "FINISHED" and run.data.params["factor"] == "2.0"
    # Nothing was pointed at this store process-wide.
    assert mlflow.get_tracking_uri() == global_uri


def test_missing_version_and_failed_run(registry: Registry, tmp_path: Path) -> None:
    _register(registry, tmp_path, 2.0)
    with pytest.raises(ValueError, match=r"registry-test v7 does not exist \(registered versions: 1\)"):
        registry.set_alias(CHAMPION, 7)
    assert registry.version(CHAMPION) is None
    with pytest.raises(RuntimeError), registry.run(run_name="boom") as run:
        raise RuntimeError("step failed")
    assert registry.client.get_run(run.run_id).info.status == "FAILED"


def test_model_tags(registry: Registry, tmp_path: Path) -> None:
    registry.set_model_tag("rollout.mode", "shadow")
    assert registry.model_tags()["rollout.mode"] == "shadow"
    registry.delete_model_tag("rollout.mode")
    assert "rollout.mode" not in registry.model_tags()


class _BrokenTrackingServer(http.server.BaseHTTPRequestHandler):
    """Answers every MLflow REST call as a tracking server with a locked backend store does."""

    def _answer(self) -> None:
        body = json.dumps({"error_code": "INTERNAL_ERROR", "message": "database is locked"}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_a_registry_error_is_not_an_empty_registry(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a model, version or alias that does not exist reads as absent. A failing registry raises: read
    as "no champion", it would let a challenger through the gates as a first model and skip the rollout."""
    empty = Registry(tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}", model_name="nothing-here")
    assert empty.version(CHAMPION) is None and empty.versions() == [] and empty.aliases() == {}
    assert empty.model_tags() == {} and read_state(empty.client, empty.model_name) == RolloutState()

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BrokenTrackingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        broken = Registry(tracking_uri=f"http://127.0.0.1:{server.server_address[1]}", model_name="homeprice")
        for call in (
            lambda: broken.version(CHAMPION),
            broken.versions,
            broken.aliases,
            broken.model_tags,
            lambda: broken.get_version(1),
            lambda: read_state(broken.client, broken.model_name),
        ):
            with pytest.raises(MlflowException, match="500"):
                call()
    finally:
        server.shutdown()
        server.server_close()


def test_a_remote_version_is_downloaded_once_and_removed_at_exit(
    moto_s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Artifacts on S3: each load used to leave a new temporary copy behind. Now a process fetches a
    version once (a service reloading it after a rollback fetches nothing) and removes its copies at exit."""
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_s3)
    boto3.client("s3", endpoint_url=moto_s3).create_bucket(Bucket="models")
    tracking = f"sqlite:///{tmp_path / 'remote.db'}"
    resource = ModelRegistry(tracking_uri=tracking, artifact_location="s3://models/runs", model_name="remote")
    registry = resource.get()
    version = _register(registry, tmp_path, 2.0)
    assert registry.client.get_model_version_download_uri("remote", version).startswith("s3://models/")

    copy = registry.download(version)
    assert (copy / "MLmodel").is_file() and not copy.is_relative_to(tmp_path)
    copies = set(copy.parent.parent.iterdir())  # this process's copies (other tests' too, under xdist)
    assert registry.download(version) == copy
    pyfunc, inner = registry.load(version)
    assert inner.factor == 2.0 and pyfunc.predict(pd.DataFrame({"x": [1.0]}))["price"].tolist() == [2.0]
    assert set(copy.parent.parent.iterdir()) == copies  # no new copy

    script = (
        "from homeprice_assets.resources.registry import Registry\n"
        f"print(Registry(tracking_uri={tracking!r}, model_name='remote').download({version!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    elsewhere = Path(out.stdout.strip().splitlines()[-1])
    assert elsewhere.name == copy.name and elsewhere != copy
    assert not elsewhere.parent.parent.exists()  # the child's copies went with it


def test_where_a_new_experiment_keeps_its_artifacts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """$HOMEPRICE_MLFLOW_ARTIFACTS was ignored with a tracking server (compose and Kubernetes set it to a
    proxied ``mlflow-artifacts:/`` location); without it the server decides, and locally the project home."""
    monkeypatch.delenv("HOMEPRICE_MLFLOW_ARTIFACTS", raising=False)
    server = Registry(tracking_uri="http://127.0.0.1:9")  # nothing is contacted to decide
    assert server.new_experiment_location() is None
    monkeypatch.setenv("HOMEPRICE_MLFLOW_ARTIFACTS", "mlflow-artifacts:/homeprice")
    assert server.new_experiment_location() == "mlflow-artifacts:/homeprice"
    explicit = Registry(tracking_uri="http://127.0.0.1:9", artifact_location="s3://models/x")
    assert explicit.new_experiment_location() == "s3://models/x"
    monkeypatch.setenv("HOMEPRICE_MLFLOW_ARTIFACTS", "relative/folder")
    local = Registry(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    assert local.new_experiment_location() == Path("relative/folder").resolve().as_uri()
