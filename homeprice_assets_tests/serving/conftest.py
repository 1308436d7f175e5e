"""A real model in a real MLflow registry, and the real service (`bentoml serve`) on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import requests

from homeprice_assets.config import REPO_ROOT, load_config
from homeprice_assets.features.engineering import INPUT_FIELDS, feature_table
from homeprice_assets.ingest.rules import clean_sales
from homeprice_assets.resources.registry import Registry as ModelStore
from homeprice_assets.training.model import HomePriceModel, fit_price_model
from homeprice_assets.training.splits import time_split
from homeprice_assets.training.tracking import input_example
from homeprice_assets_tests.helpers import register_model, stop_process_group

MODEL = "homeprice"


@dataclass
class Registry:
    uri: str
    home: Path
    model: HomePriceModel
    validation: pd.DataFrame
    train: pd.DataFrame

    def store(self, name: str = MODEL) -> ModelStore:
        """The project's registry client for ``name`` in this store."""
        return ModelStore(tracking_uri=self.uri, model_name=name)

    def register(self, model: HomePriceModel, alias: str | None = "champion", name: str = MODEL) -> str:
        """Save and register ``model`` as the lifecycle does; point ``alias`` at it; returns the version."""
        store = self.store(name)
        version = register_model(store, model, input_example(self.train))
        if alias:
            store.set_alias(alias, version)
        return version


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, bundled_sales: pd.DataFrame) -> Registry:
    """Two years of real Seattle sales (2014-2015) train the champion, v1, in a registry of its own."""
    home = tmp_path_factory.mktemp("serving-home")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    features = feature_table(clean_sales(bundled_sales, load_config().data).clean)
    split = time_split(features, validation_months=2, window_months=26, end_month="2016-02")
    model = fit_price_model(split.train, {"num_boost_round": 300})
    reg = Registry(uri, home, model, split.validation.reset_index(drop=True), split.train)
    assert reg.register(model) == "1"
    return reg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log_path: Path
    prediction_log: Path

    def post(self, path: str, payload: object, timeout: float = 60) -> requests.Response:
        return requests.post(f"{self.url}{path}", json=payload, timeout=timeout)

    def log_tail(self) -> str:
        return self.log_path.read_text()[-4000:]


def start_server(
    registry: Registry, tmp: Path, poll_seconds: float = 1.0, extra_env: dict[str, str] | None = None
) -> Server:
    port = free_port()
    log_path = tmp / f"serve-{port}.log"
    prediction_log = tmp / f"predictions-{port}.db"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry.uri,
        "HOMEPRICE_HOME": str(registry.home),
        "HOMEPRICE_PREDICTION_LOG_URL": f"sqlite:///{prediction_log}",
        "HOMEPRICE_SERVING_POLL_SECONDS": str(poll_seconds),
        "BENTOML_HOME": str(tmp / "bentoml"),
        **(extra_env or {}),
    }
    cmd = [
        str(Path(sys.executable).with_name("bentoml")),
        "serve",
        "bento.service:HomePrice",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", proc, log_path, prediction_log)
    wait_up(server)
    return server


def serve_built_bento(tag: str, tmp: Path) -> Server:
    """``bentoml serve <tag>`` of a built Bento, ready: pinned to its baked-in model, no registry in reach."""
    import bentoml

    port = free_port()
    env = {
        **os.environ,
        # the store this process built the Bento into: <home>/bentos/<name>/<version>
        "BENTOML_HOME": str(Path(bentoml.get(tag).path).parents[2]),
        "MLFLOW_TRACKING_URI": "sqlite:///:memory:",
        "HOMEPRICE_HOME": str(tmp / "home"),
    }
    env.pop("HOMEPRICE_SERVING_MODE", None)
    log = tmp / f"bento-{port}.log"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("bentoml")),
            "serve",
            tag,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=tmp,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", proc, log, tmp / "home" / "predictions.db")
    try:
        wait_up(server)
        wait_ready(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def wait_up(server: Server, timeout: float = 120) -> None:
    """Until /livez answers (the process is serving, with or without a model)."""
    proc = server.proc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited {proc.returncode}:\n{server.log_tail()}")
        try:
            if requests.get(f"{server.url}/livez", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"bentoml serve did not come up:\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    stop_process_group(server.proc)


def wait_ready(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if requests.get(f"{server.url}/readyz", timeout=5).status_code == 200:
            return
        time.sleep(0.5)
    raise AssertionError(f"not ready after {timeout} s:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(registry, tmp_path_factory.mktemp("serve"))
    wait_ready(srv)
    yield srv
    stop_server(srv)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The sum of ``name``'s samples in ``/metrics`` text whose labels include ``labels`` (others, e.g.
    pid, ignored); None when no sample matches, so that a renamed or missing metric fails a comparison."""
    found = None
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            found = (found or 0.0) + float(value)
    return found


def home_payload(row: pd.Series) -> dict:
    """One validation sale as a request body (what a client would send)."""
    fields = [f for f in INPUT_FIELDS if f != "sale_date"]
    home = {f: (row[f].item() if hasattr(row[f], "item") else row[f]) for f in fields if pd.notna(row[f])}
    home["location"] = str(home["location"])
    home["waterfront"] = int(home.get("waterfront", 0))
    home["sale_date"] = str(pd.Timestamp(row["sale_date"]).date())
    if "parcel_id" in row and pd.notna(row["parcel_id"]):
        home["parcel_id"] = str(row["parcel_id"])  # the model prices repeat sales with it
    return home
