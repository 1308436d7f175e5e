"""Every test session owns its homes: no test reads or writes the user's Dagster, MLflow or BentoML stores."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from homeprice_assets.config import BUNDLED_DATA
from homeprice_assets.sqlite_storage import instance_settings

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="homeprice-tests-"))
# Set before any test module imports dagster/mlflow/bentoml, so their defaults never point elsewhere.
os.environ.update(
    {
        "HOMEPRICE_HOME": str(_SESSION_HOME / "home"),
        "DAGSTER_HOME": str(_SESSION_HOME / "dagster"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{_SESSION_HOME / 'mlflow.db'}",
        "BENTOML_HOME": str(_SESSION_HOME / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "DO_NOT_TRACK": "1",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "GIT_PYTHON_REFRESH": "quiet",
        "MPLBACKEND": "Agg",
    }
)
os.environ.pop("HOMEPRICE_CONFIG", None)
(_SESSION_HOME / "dagster").mkdir(parents=True, exist_ok=True)
(_SESSION_HOME / "dagster" / "dagster.yaml").write_text(
    yaml.safe_dump(
        {**instance_settings(_SESSION_HOME / "dagster" / "storage"), "telemetry": {"enabled": False}}
    )
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with slow tests first, the many short ones after them (order within a file kept).

    ``make test`` runs each file on one worker (``--dist loadfile --no-loadscope-reorder``) in this order, so
    the short files fill the workers' ends. xdist's own order (files with the most tests first) left the
    longest single-test files, such as the daemon test, to start last and run on one worker alone."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's stores, unless HOMEPRICE_KEEP_TEST_HOME=1 keeps them for a post-mortem."""
    if os.environ.get("HOMEPRICE_KEEP_TEST_HOME") != "1":
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _restore_mlflow_store() -> Iterator[None]:
    """MLflow keeps its store and active experiment in globals *and* in $MLFLOW_TRACKING_URI and
    $MLFLOW_EXPERIMENT_ID: put them back after each test, so a test that points MLflow elsewhere (another
    SQLite file, PostgreSQL) leaks nothing into the next."""
    import mlflow
    import mlflow.tracking.fluent as fluent

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
    saved_env = {k: os.environ.get(k) for k in keys}
    saved_experiment = fluent._active_experiment_id
    yield
    if {k: os.environ.get(k) for k in keys} != saved_env:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.set_tracking_uri(saved_env["MLFLOW_TRACKING_URI"])
        fluent._active_experiment_id = saved_experiment


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server in-process on a free loopback port, with throwaway credentials; its endpoint URL."""
    from moto.server import ThreadedMotoServer

    from homeprice_assets_tests.helpers import DUMMY_AWS

    for key, value in DUMMY_AWS.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server._server.server_address  # the OS-chosen port
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def bundled_sales() -> pd.DataFrame:
    """The bundled Seattle sales exactly as a user's CSV would be read (all columns as text)."""
    return pd.read_csv(BUNDLED_DATA, dtype=str)


@pytest.fixture
def project_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project home (landing zone, stores, reports) for one test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOMEPRICE_HOME", str(home))
    return home


@pytest.fixture
def instance(tmp_path: Path):
    """A Dagster instance of its own for one test (the local SQLite storage, in a temp folder)."""
    import dagster as dg

    with dg.instance_for_test(overrides=instance_settings(tmp_path / "dagster")) as inst:
        yield inst


@pytest.fixture
def landing(project_home: Path):
    from homeprice_assets.resources.landing import LocalLandingZone

    return LocalLandingZone(root=str(project_home / "landing"))


@pytest.fixture
def storage(project_home: Path):
    from homeprice_assets.resources.storage import ParquetStorage

    return ParquetStorage(base_dir=str(project_home / "storage"))
