"""The code location loads, and `dagster dev` serves the graph from this repository's workspace."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from homeprice_assets.config import REPO_ROOT
from homeprice_assets_tests.helpers import stop_process_group

CORE_ASSETS = {"raw_sales", "clean_sales", "quarantined_sales", "sale_features"}


def test_definitions_load_and_validate() -> None:
    from homeprice_assets.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys >= CORE_ASSETS
    job = defs.resolve_job_def("ingest_job")
    assert job.partitions_def is not None and job.partitions_def.name == "sale_month"
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert {"required_columns", "quarantine_rate", "value_ranges", "finite_features"} <= checks


def test_the_pipeline_cli_and_service_name_the_same_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """HOMEPRICE_MODEL_NAME once named the model only for the CLI and the service: the pipeline went on
    registering ``homeprice``, and the service followed a model nothing trained."""
    from homeprice_assets.cli import _rollout_registry
    from homeprice_assets.definitions import defs
    from homeprice_assets.resources.registry import ModelRegistry

    monkeypatch.setenv("HOMEPRICE_MODEL_NAME", "prices-eu")
    assert defs.resources["registry"].get().model_name == "prices-eu"
    assert _rollout_registry().model_name == "prices-eu"
    assert ModelRegistry(model_name="explicit").get().model_name == "explicit"
    # what would break the registry's search filter or the Bento's tag is refused by name
    for bad in ("o'brien", "prices eu", "prices/eu", "Prices-EU", "-prices", "p" * 64):
        monkeypatch.setenv("HOMEPRICE_MODEL_NAME", bad)
        with pytest.raises(ValueError, match=r"HOMEPRICE_MODEL_NAME \(model_name\): .* is not a usable"):
            defs.resources["registry"].get()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_every_automation_condition_is_evaluated_by_a_sensor_that_starts_running() -> None:
    """An asset with an automation condition that no sensor of ours targets lands on Dagster's default
    automation sensor, which starts stopped: it would never run unattended."""
    import dagster as dg

    from homeprice_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    conditioned = {k for k in graph.get_all_asset_keys() if graph.get(k).automation_condition is not None}
    assert {dg.AssetKey(k) for k in ("ground_truth", "rollout_evaluation", "bento")} <= conditioned
    repo = defs.get_repository_def()
    sensors = [s for s in repo.sensor_defs if isinstance(s, dg.AutomationConditionSensorDefinition)]
    assert "default_automation_condition_sensor" not in {s.name for s in sensors}
    covered = set().union(
        *(
            s.asset_selection.resolve(graph)
            for s in sensors
            if s.default_status == dg.DefaultSensorStatus.RUNNING
        )
    )
    assert conditioned <= covered


def test_loading_the_definitions_does_not_import_pyplot() -> None:
    """Every CLI call, run worker and code server loads the definitions: the reports import matplotlib's
    pyplot only when they draw (importing it cost about half a second per process)."""
    code = "import sys, homeprice_assets.definitions; print(sorted(m for m in sys.modules if 'pyplot' in m))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout


def test_dagster_dev_serves_the_graph(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "HOMEPRICE_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(REPO_ROOT),
        "HOMEPRICE_DAGSTER_STORAGE": str(tmp_path / "dagster"),
    }
    log = (tmp_path / "dagster-dev.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "homeprice_assets.cli", "dev", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        nodes = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                data = _graphql(port, "{ assetNodes { assetKey { path } } }")
                nodes = {"/".join(n["assetKey"]["path"]) for n in data["data"]["assetNodes"]}
                if nodes:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert nodes, (tmp_path / "dagster-dev.log").read_text()[-3000:]
        assert nodes >= CORE_ASSETS
        # the instance is the repository's dagster.yaml: SQLite storage under the given folder
        assert (tmp_path / "dagster").is_dir()
    finally:
        stop_process_group(proc)
        log.close()


def test_lifecycle_runs_queue_one_at_a_time() -> None:
    """The instance (dagster.yaml, local and PostgreSQL) lets one lifecycle-tagged run through at a time, and
    every way a lifecycle run starts carries that tag: two runs never interleave train/validate/promote."""
    import dagster as dg
    import yaml

    from homeprice_assets.definitions import defs
    from homeprice_assets.training.assets import LIFECYCLE_TAG

    for path in (REPO_ROOT / "dagster.yaml", REPO_ROOT / "deploy" / "postgres" / "dagster.yaml"):
        coordinator = yaml.safe_load(path.read_text())["run_coordinator"]
        with dg.instance_for_test(overrides={"run_coordinator": coordinator}) as instance:
            limits = instance.run_coordinator.get_run_queue_config().tag_concurrency_limits
        assert {"key": LIFECYCLE_TAG, "limit": 1} in limits, path
    assert defs.resolve_job_def("model_lifecycle_job").tags[LIFECYCLE_TAG] == "true"
    schedule = defs.resolve_schedule_def("monthly_retrain")
    assert schedule.job_name == "model_lifecycle_job"
    # like the sensors' runs: steps in the run's own process, in priority order (promotion before SHAP)
    with dg.build_schedule_context() as context:
        request = schedule.evaluate_tick(context).run_requests[0]
    assert request.run_config == {"execution": {"config": {"in_process": {}}}}
