"""The replay's runner: month by month, each policy on its own copy of the real machinery.

For every replayed month M and every policy, in this order:

1. the policy's service (the BentoML service class ``bento.service.HomePrice``, instantiated in-process and
   called on its own pricing path: routing, shadow, prediction log) prices every home that will sell in M,
   as of ``embargo_days + 1`` days before M starts, after one registry poll;
2. M lands in the policy's landing zone and the sensors are ticked as the daemon would: ``landing_sensor``
   (ingest run with its checks), then ``ground_truth[M]`` and ``rollout_evaluation`` (their automation
   conditions), ``rollout_actions`` (promote / stop / roll back), then the policy's retrain trigger
   (``retrain_sensor``: drift report, lifecycle run; or the live-error trigger) until it asks for nothing;
3. the month's sales are joined to the valuations later, by the report, from the prediction log.

Each policy owns a home (Dagster instance, Parquet storage, landing zone, MLflow store, prediction log)
copied from one base home in which the history before the replay was ingested and the first model trained
(identical for every policy, so built once). Requested runs execute in-process (``execute_in_process``) with
the request's asset selection, partition and tags; the Bento build (``serving`` group) is left out: the
in-process service follows the registry instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import yaml

from homeprice_assets.partitions import register_months
from homeprice_assets.replay.cache import FitCache
from homeprice_assets.replay.policies import (
    LANDING_SENSOR,
    LIVE_ERROR_SENSOR,
    RETRAIN_SENSOR,
    ROLLOUT_SENSOR,
    Policy,
    resolve,
)
from homeprice_assets.sqlite_storage import instance_settings

MODEL_NAME = "homeprice"
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# Training settings of the replay unless told otherwise: the defaults' LightGBM at a higher learning rate and
# fewer rounds (a 60-month replay fits ~60 distinct models), SHAP on a small sample. The report states them.
REPLAY_OVERRIDES: dict[str, Any] = {
    "training": {
        "params": {"learning_rate": 0.1, "num_boost_round": 400, "early_stopping_rounds": 30},
        "explain_sample": 100,
    }
}


@dataclass(frozen=True)
class ReplaySpec:
    """What to replay and how: everything the report states so that the run can be reproduced."""

    start: str  # first replayed month (YYYY-MM)
    end: str  # last replayed month
    home: str  # replay home: base/, policies/<name>/, fit_cache/, report/
    policies: tuple[str, ...]
    overrides: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(REPLAY_OVERRIDES)))
    history_start: str | None = None  # first month of history before ``start`` (None: all bundled data)
    jobs: int = 1  # policies replayed at once (one process each when > 1)

    def months(self) -> list[str]:
        return month_range(self.start, self.end)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReplaySpec:
        data = json.loads(text)
        data["policies"] = tuple(data["policies"])
        return cls(**data)


def month_range(start: str, end: str) -> list[str]:
    """Months ``start``..``end`` inclusive; a clear error for a malformed or reversed window."""
    try:
        first, last = pd.Period(start, "M"), pd.Period(end, "M")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"from/to: expected YYYY-MM, got {start!r}..{end!r}") from exc
    if last < first:
        raise ValueError(f"to: {end} is before from: {start}")
    return [str(p) for p in pd.period_range(first, last, freq="M")]


def previous_month(month: str) -> str:
    return str(pd.Period(month, "M") - 1)


@dataclass(frozen=True)
class Paths:
    """Where one policy (or the base) keeps its stores."""

    home: Path

    @property
    def dagster(self) -> Path:
        return self.home / "dagster"

    @property
    def storage(self) -> Path:
        return self.home / "storage"

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def log_url(self) -> str:
        return f"sqlite:///{self.home / 'predictions.db'}"

    @property
    def progress(self) -> Path:
        return self.home / "replay_months.jsonl"

    def env(self) -> dict[str, str]:
        return {
            "HOMEPRICE_HOME": str(self.home),
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "HOMEPRICE_PREDICTION_LOG_URL": self.log_url,
            "HOMEPRICE_MODEL_NAME": MODEL_NAME,
            "HOMEPRICE_MLFLOW_ARTIFACTS": str(self.home / "mlartifacts"),
            "HOMEPRICE_SERVING_MODE": "follow",
            "HOMEPRICE_SERVING_POLL_SECONDS": "86400",  # the replay polls once before each month's valuations
        }


def policy_paths(spec: ReplaySpec, name: str) -> Paths:
    return Paths(Path(spec.home) / "policies" / name)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (the assets read the project home from it)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def open_instance(path: Path) -> dg.DagsterInstance:
    """A persistent SQLite Dagster instance in ``path`` (the local storage, telemetry off)."""
    path.mkdir(parents=True, exist_ok=True)
    settings = {**instance_settings(path / "storage"), "telemetry": {"enabled": False}}
    (path / "dagster.yaml").write_text(yaml.safe_dump(settings))
    return dg.DagsterInstance.from_config(str(path))


def policy_definitions(policy: Policy, paths: Paths, base_overrides: dict[str, Any]) -> dg.Definitions:
    """The code location as ``definitions.py`` wires it, on this policy's stores and configuration
    (the ``serving`` group's Bento build left out), plus the replay's live-error trigger."""
    from homeprice_assets.features import assets as feature_assets
    from homeprice_assets.ingest import assets as ingest_assets
    from homeprice_assets.ingest.jobs import ingest_job
    from homeprice_assets.monitoring.assets import drift_report
    from homeprice_assets.monitoring.notify import Notifier
    from homeprice_assets.monitoring.sensors import build_landing_sensor, build_retrain_sensor
    from homeprice_assets.replay.sensors import build_live_error_retrain_sensor
    from homeprice_assets.resources.config import ProjectConfigResource
    from homeprice_assets.resources.landing import LocalLandingZone
    from homeprice_assets.resources.registry import ModelRegistry
    from homeprice_assets.resources.storage import ParquetStorage
    from homeprice_assets.rollout.assets import PredictionLogResource, ground_truth, rollout_evaluation
    from homeprice_assets.rollout.sensors import build_rollout_actions_sensor
    from homeprice_assets.training import assets as training_assets
    from homeprice_assets.training.jobs import lifecycle_job

    settings = ProjectConfigResource(overrides=policy.config_overrides(base_overrides))
    config = settings.get()
    automation = config.monitoring.automation
    return dg.Definitions(
        assets=[
            *dg.load_assets_from_modules([ingest_assets, feature_assets, training_assets]),
            drift_report,
            ground_truth,
            rollout_evaluation,
        ],
        jobs=[ingest_job, lifecycle_job],
        sensors=[
            build_landing_sensor(automation.landing_sensor_interval_seconds, in_process=True),
            build_retrain_sensor(automation),
            build_rollout_actions_sensor(),
            build_live_error_retrain_sensor(
                policy.live_error_margin or 0.1, config.rollout.rollback.min_sales
            ),
        ],
        resources={
            "settings": settings,
            "io_manager": ParquetStorage(base_dir=str(paths.storage)),
            "landing": LocalLandingZone(root=str(paths.landing)),
            "registry": ModelRegistry(tracking_uri=paths.mlflow_uri, model_name=MODEL_NAME),
            "prediction_log": PredictionLogResource(url=paths.log_url),
            # alerts go to the log only (no channel configured): the replay must not page anybody
            "notifier": Notifier(dedup_db=str(paths.home / "alerts.sqlite")),
        },
    )


class Machinery:
    """One policy's Dagster instance, definitions and sensor cursors: ticks and runs as the daemon would."""

    def __init__(self, policy: Policy, paths: Paths, base_overrides: dict[str, Any]) -> None:
        self.policy, self.paths = policy, paths
        self.defs = policy_definitions(policy, paths, base_overrides)
        self.repo = self.defs.get_repository_def()
        self.instance = open_instance(paths.dagster)
        self.cursors_path = paths.home / "sensor_cursors.json"
        saved = json.loads(self.cursors_path.read_text()) if self.cursors_path.is_file() else {}
        self.cursors: dict[str, str | None] = saved.get("cursors", {})
        self.run_keys: set[str] = set(saved.get("run_keys", []))
        self.runs: list[dict[str, Any]] = []  # what this month's ticks started

    def save(self) -> None:
        self.cursors_path.write_text(
            json.dumps({"cursors": self.cursors, "run_keys": sorted(self.run_keys)}, sort_keys=True)
        )

    def settings(self):
        return self.defs.resources["settings"].get()

    def execute(
        self,
        assets: list[dg.AssetKey] | None = None,
        partition: str | None = None,
        tags: dict[str, str] | None = None,
        job_name: str | None = None,
    ) -> dg.ExecuteInProcessResult:
        """One run, in-process, on this policy's instance (as the run launcher would start it)."""
        job = (
            self.defs.resolve_job_def(job_name)
            if job_name
            else self.defs.resolve_implicit_global_asset_job_def()
        )
        started = time.perf_counter()
        result = job.execute_in_process(
            run_config=QUIET,
            instance=self.instance,
            partition_key=partition,
            asset_selection=assets,
            tags=tags or {},
            raise_on_error=False,
        )
        self.runs.append(
            {
                "run_id": result.run_id,
                "job": job_name or "assets",
                "assets": sorted(k.to_user_string() for k in assets or []),
                "partition": partition,
                "tags": dict(tags or {}),
                "success": result.success,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        return result

    def tick(self, name: str) -> int:
        """Evaluate sensor ``name`` once and carry out what it returned, as the daemon does: dynamic
        partitions, runless asset events, run requests (a run key already launched is skipped).

        Landed months are registered as partitions before the landing sensor's tick (as ``homeprice
        ingest`` does): a tick evaluated outside the daemon cannot resolve partitions it adds itself."""
        sensor = self.defs.resolve_sensor_def(name)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            repository_def=self.repo,
            resources=self.defs.resources,
            sensor_name=name,
        )
        with dg.partition_loading_context(dynamic_partitions_store=self.instance):
            data = sensor.evaluate_tick(context)
        self.cursors[name] = data.cursor
        for request in data.dynamic_partitions_requests or []:
            keys = list(getattr(request, "partition_keys", []) or [])
            if keys and hasattr(request, "partitions_def_name") and type(request).__name__.startswith("Add"):
                self.instance.add_dynamic_partitions(request.partitions_def_name, keys)
        for event in data.asset_events or []:
            self.instance.report_runless_asset_event(event)
        started = 0
        for request in data.run_requests or []:
            if request.run_key and request.run_key in self.run_keys:
                continue
            if request.run_key:
                self.run_keys.add(request.run_key)
            job_name = request.job_name or (sensor.job_name if request.asset_selection is None else None)
            tags = {k: str(v) for k, v in (request.tags or {}).items()}
            tags["homeprice/sensor"] = name
            self.execute(list(request.asset_selection or []) or None, request.partition_key, tags, job_name)
            started += 1
        self.save()
        return started


def value_homes(service: Any, sales: pd.DataFrame, as_of: str) -> dict[str, int]:
    """Price the homes of ``sales`` through the service's pricing path (as ``/predict_columns`` does),
    valued as of ``as_of``; homes the serving model refuses (a location it never saw) are counted."""
    from bentoml.exceptions import BadInput

    from homeprice_assets.serving.batch import Batch
    from homeprice_assets.serving.schemas import HomeColumns
    from homeprice_model.features import INPUT_FIELDS

    service.follower.poll()  # what the follower's next poll would have found
    champion = service.serving.champion
    if champion is None or sales.empty:
        return {"valued": 0, "refused": len(sales)}
    known = sales["location"].astype(str).isin(set(champion.inner.locations))
    homes = sales[known]
    columns: dict[str, list] = {}
    for name in (*INPUT_FIELDS, "parcel_id"):
        if name == "sale_date":
            columns[name] = [as_of] * len(homes)
        elif name in ("location", "parcel_id"):
            columns[name] = homes[name].astype(str).tolist()
        elif name in homes:
            values = homes[name].astype(float)
            columns[name] = [
                None if pd.isna(v) else (int(v) if name == "waterfront" else float(v)) for v in values
            ]
    refused = int((~known).sum())
    try:
        service._price("predict_columns", Batch.from_columns(HomeColumns(**columns)))
    except BadInput:  # outside the model's bounds: price one by one, count the refused
        for i in range(len(homes)):
            one = {k: v[i : i + 1] for k, v in columns.items()}
            try:
                service._price("predict_columns", Batch.from_columns(HomeColumns(**one)))
            except BadInput:
                refused += 1
    deadline = time.monotonic() + 120
    while (service.shadow.pending or service.log.pending) and time.monotonic() < deadline:
        time.sleep(0.05)
        service.log.flush()
    service.log.flush()
    return {"valued": len(homes) - (refused - int((~known).sum())), "refused": refused}


def start_service() -> Any:
    """The service class itself, in this process (its environment: this policy's stores)."""
    import sys as _sys

    from homeprice_assets.config import REPO_ROOT

    if str(REPO_ROOT) not in _sys.path:
        _sys.path.insert(0, str(REPO_ROOT))
    from bento.service import HomePrice

    interval = _sys.getswitchinterval()
    service = HomePrice.inner()
    _sys.setswitchinterval(interval)  # the service shortens it for request latency; the replay has none
    return service


def clean_bundled_sales() -> pd.DataFrame:
    """The bundled sales through the project's own data rules: the homes that will sell, month by month."""
    from homeprice_assets.config import BUNDLED_DATA, load_config
    from homeprice_assets.ingest.rules import clean_sales

    raw = pd.read_csv(BUNDLED_DATA, dtype=str)
    return clean_sales(raw, load_config().data).clean


_BY_MONTH: dict[str, pd.DataFrame] = {}


def land(paths: Paths, since: str | None, until: str) -> list[str]:
    """Write the bundled months ``since..until`` into the policy's landing zone, as ``land_history`` does
    (the bundled file is read and split once per process, not once per month)."""
    from homeprice_assets.config import BUNDLED_DATA, load_config
    from homeprice_assets.ingest.landing import (
        LANDED_NAME,
        UNDATED,
        landed_options,
        month_file,
        read_history,
        split_by_month,
    )
    from homeprice_assets.resources.landing import LocalLandingZone

    config = load_config().data
    options = landed_options(config)
    if not _BY_MONTH:
        _BY_MONTH.update(split_by_month(read_history(BUNDLED_DATA, options), config))
    zone = LocalLandingZone(root=str(paths.landing))
    months = [m for m in sorted(_BY_MONTH) if m != UNDATED and (since is None or m >= since) and m <= until]
    for month in months:
        zone.write_bytes(LANDED_NAME.format(month=month), month_file(_BY_MONTH[month], options))
    return months


def build_base(spec: ReplaySpec, cache: FitCache) -> Paths:
    """The policy-independent start: history before ``start`` landed and ingested through the landing sensor,
    and the first model trained, validated and promoted by the lifecycle job. Built once per replay home."""
    from homeprice_assets.replay.policies import POLICIES

    paths = Paths(Path(spec.home) / "base")
    done = paths.home / "base_done.json"
    if done.is_file() and json.loads(done.read_text()).get("spec") == _base_key(spec):
        return paths
    if paths.home.exists():
        shutil.rmtree(paths.home)
    paths.home.mkdir(parents=True)
    with environment(paths.env()), cache.installed():
        landed = land(paths, spec.history_start, previous_month(spec.start))
        machinery = Machinery(POLICIES["never"], paths, spec.overrides)
        register_months(machinery.instance, landed)
        machinery.tick(LANDING_SENSOR)
        failed = [r for r in machinery.runs if not r["success"]]
        if failed:
            raise RuntimeError(f"base: ingest failed for {[r['partition'] for r in failed]}")
        result = machinery.execute(
            job_name="model_lifecycle_job",
            tags={"homeprice/trigger": "initial", "homeprice/lifecycle": "true"},
        )
        if not result.success:
            raise RuntimeError("base: the first lifecycle run failed")
        tag_fit(machinery, result.run_id, cache)
    done.write_text(json.dumps({"spec": _base_key(spec)}))
    return paths


def _base_key(spec: ReplaySpec) -> dict[str, Any]:
    return {"start": spec.start, "history_start": spec.history_start, "overrides": spec.overrides}


def replay_policy(
    spec: ReplaySpec,
    name: str,
    sales: pd.DataFrame | None = None,
    on_month: Callable[[str], None] | None = None,
) -> Path:
    """Replay every month of ``spec`` for policy ``name`` (resuming after the last month it finished)."""
    policy = resolve([name])[0]
    paths = policy_paths(spec, name)
    base = Paths(Path(spec.home) / "base")
    if not paths.home.exists():
        shutil.copytree(base.home, paths.home)
        paths.progress.unlink(missing_ok=True)
    done = (
        {json.loads(line)["month"] for line in paths.progress.read_text().splitlines()}
        if paths.progress.is_file()
        else set()
    )
    sales = clean_bundled_sales() if sales is None else sales
    cache = FitCache(Path(spec.home) / "fit_cache")
    with environment(paths.env()), cache.installed():
        machinery = Machinery(policy, paths, spec.overrides)
        embargo = machinery.settings().rollout.embargo_days
        service = start_service()
        try:
            for month in spec.months():
                if month in done:
                    continue
                record = replay_month(machinery, service, cache, sales, month, embargo)
                with paths.progress.open("a") as out:
                    out.write(json.dumps(record, default=str) + "\n")
                if on_month:
                    on_month(month)
        finally:
            service._shutdown()
            machinery.instance.dispose()
    return paths


def replay_month(
    machinery: Machinery, service: Any, cache: FitCache, sales: pd.DataFrame, month: str, embargo_days: int
) -> dict[str, Any]:
    """Steps 1-2 of one month for one policy; returns what happened and how long each part took."""
    policy = machinery.policy
    machinery.runs = []
    timings: dict[str, float] = {}
    fits_before = len(cache.records)

    def timed(part: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        out = fn()
        timings[part] = timings.get(part, 0.0) + time.perf_counter() - started
        return out

    as_of = str((pd.Timestamp(f"{month}-01") - pd.Timedelta(days=embargo_days + 1)).date())
    sold = sales[sales["sale_month"] == month]
    valued = timed("valuations", lambda: value_homes(service, sold, as_of))
    timed("land", lambda: register_months(machinery.instance, land(machinery.paths, month, month)))
    timed("ingest", lambda: machinery.tick(LANDING_SENSOR))
    timed(
        "ground_truth",
        lambda: machinery.execute([dg.AssetKey("ground_truth")], month, {"homeprice/trigger": "automation"}),
    )
    timed(
        "rollout_evaluation",
        lambda: machinery.execute(
            [dg.AssetKey("rollout_evaluation")], None, {"homeprice/trigger": "automation"}
        ),
    )
    timed("rollout_actions", lambda: machinery.tick(ROLLOUT_SENSOR))
    for sensor in (RETRAIN_SENSOR, LIVE_ERROR_SENSOR):
        if sensor not in policy.sensors:
            continue
        for _ in range(4):  # drift report first, then the retrain it asks for
            before = len(machinery.runs)
            if not timed("retrain_trigger", lambda s=sensor: machinery.tick(s)):
                break
            for run in machinery.runs[before:]:
                if "price_model" in run["assets"]:  # blocked by the gates too: the model was fitted
                    tag_fit(machinery, run["run_id"], cache)
    lifecycle = [r for r in machinery.runs if "price_model" in r["assets"]]
    timings["lifecycle"] = sum(r["seconds"] for r in lifecycle)
    timings["retrain_trigger"] = timings.get("retrain_trigger", 0.0) - timings["lifecycle"]
    return {
        "month": month,
        "policy": policy.name,
        "valued_as_of": as_of,
        **valued,
        "runs": machinery.runs,
        "fits": [asdict(r) for r in cache.records[fits_before:]],
        "seconds": {k: round(v, 3) for k, v in timings.items()},
    }


def tag_fit(machinery: Machinery, run_id: str, cache: FitCache) -> None:
    """Record on the new version's MLflow run what its fit cost (from the fit cache): a registry fact."""
    records = machinery.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("price_model")), limit=5
    ).records
    event = next((r.asset_materialization for r in records if r.run_id == run_id), None)
    if event is None or not cache.records:
        return
    record = cache.records[-1]
    reg = machinery.defs.resources["registry"].get()
    mlflow_run = str(event.metadata["mlflow_run_id"].value)
    reg.client.set_tag(mlflow_run, "replay.fit_seconds", f"{record.fit_seconds:.3f}")
    reg.client.set_tag(mlflow_run, "replay.fit_cache", "hit" if record.hit else "miss")
    reg.client.set_tag(mlflow_run, "replay.fit_key", record.key)
    reg.tag_version(str(event.metadata["model_version"].value), replay_dagster_run_id=run_id)


def run_replay(spec: ReplaySpec, progress: Callable[[int, int], None] | None = None) -> Path:
    """Build the base once, then replay each policy (``spec.jobs`` at a time, one process each when > 1)."""
    home = Path(spec.home)
    home.mkdir(parents=True, exist_ok=True)
    (home / "spec.json").write_text(spec.to_json())
    cache = FitCache(home / "fit_cache")
    started = time.perf_counter()
    build_base(spec, cache)
    timing = {"base_seconds": round(time.perf_counter() - started, 3)}
    total = len(spec.months()) * len(spec.policies)
    if spec.jobs <= 1:
        sales = clean_bundled_sales()
        for name in spec.policies:
            t = time.perf_counter()
            tell = (lambda _m: progress(_months_done(spec), total)) if progress else None
            replay_policy(spec, name, sales, tell)
            timing[f"{name}_seconds"] = round(time.perf_counter() - t, 3)
    else:
        _replay_in_processes(spec, progress, total, timing)
    (home / "timing.json").write_text(json.dumps(timing, indent=1))
    return home


def _months_done(spec: ReplaySpec) -> int:
    n = 0
    for name in spec.policies:
        path = policy_paths(spec, name).progress
        if path.is_file():
            n += len(path.read_text().splitlines())
    return n


def _replay_in_processes(
    spec: ReplaySpec, progress: Callable[[int, int], None] | None, total: int, timing: dict[str, float]
) -> None:
    queue = list(spec.policies)
    running: dict[str, tuple[subprocess.Popen, float, Any]] = {}
    logs = Path(spec.home) / "logs"
    logs.mkdir(exist_ok=True)
    failed: list[str] = []
    while queue or running:
        while queue and len(running) < spec.jobs:
            name = queue.pop(0)
            out = (logs / f"{name}.log").open("w")
            proc = subprocess.Popen(
                [sys.executable, "-m", "homeprice_assets.replay.runner", spec.to_json(), name],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            running[name] = (proc, time.perf_counter(), out)
        time.sleep(2)
        for name, (proc, t, out) in list(running.items()):
            if proc.poll() is not None:
                out.close()
                timing[f"{name}_seconds"] = round(time.perf_counter() - t, 3)
                if proc.returncode != 0:
                    failed.append(name)
                del running[name]
        if progress:
            progress(_months_done(spec), total)
    if failed:
        raise RuntimeError(f"replay failed for policies {failed}: see {logs}")


if (
    __name__ == "__main__"
):  # one policy in its own process: python -m homeprice_assets.replay.runner SPEC NAME
    import warnings

    warnings.filterwarnings("ignore")
    replay_policy(ReplaySpec.from_json(sys.argv[1]), sys.argv[2])
