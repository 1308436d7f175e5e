"""The MLflow tracking server and Model Registry as one Dagster resource that owns its client.

Everything homeprice does with MLflow goes through ``Registry``: runs and their artifacts, registering a
version, the aliases that say which version does what, and loading a version to score. It never touches
MLflow's process-wide state (``mlflow.set_tracking_uri``, the fluent active run), so two stores can be used in
one process and nothing leaks between assets, sensors, the service and tests.

Aliases (never the deprecated stages):
- ``champion``: the version serving; ``previous``: the champion before it, ready for rollback;
- ``challenger``: the newest trained version (informational: the lifecycle hands versions on by number);
- ``candidate``: a version under a live rollout (shadow or A/B).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pydantic import Field

from homeprice_assets.config import homeprice_home, mlflow_tracking_uri

MODEL_NAME = "homeprice"
CHAMPION, CHALLENGER, PREVIOUS, CANDIDATE = "champion", "challenger", "previous", "candidate"
T = TypeVar("T")
ALIAS_NOT_FOUND = "INVALID_PARAMETER_VALUE"  # MLflow's code for a missing alias of a registered model


# The served Bento takes the model's name as its BentoML tag: BentoML's rule, so a name that registers in
# MLflow cannot fail the Bento build later (a space or "/"), or be lower-cased there (a capital).
_MODEL_NAME = re.compile(r"[a-z0-9](?:[-._a-z0-9]{0,61}[a-z0-9])?")


def registered_model_name(name: str | None = None) -> str:
    """``name``, else ``$HOMEPRICE_MODEL_NAME``, else ``homeprice``: one default for the pipeline, the CLI and
    the service, so they all mean the same model."""
    name = name or os.environ.get("HOMEPRICE_MODEL_NAME") or MODEL_NAME
    if not _MODEL_NAME.fullmatch(name):
        raise ValueError(
            f"HOMEPRICE_MODEL_NAME (model_name): {name!r} is not a usable model name: lower-case letters, "
            "digits and - . _ (not first or last), at most 63 characters (it is also the Bento's tag)"
        )
    return name


def absent(exc: MlflowException, *also: str) -> bool:
    """Does ``exc`` say the model, version or run does not exist (rather than that the registry failed)?"""
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", *also)


def unless_absent(call: Callable[[], T], default: T, *also: str) -> T:
    """``call()``, or ``default`` when MLflow answers that what it asks for does not exist. Any other
    registry error (a locked database, a tracking server away) raises: read as "nothing there", it would
    wave a challenger through the gates as a first model."""
    try:
        return call()
    except MlflowException as exc:
        if absent(exc, *also):
            return default
        raise


MODEL_ARTIFACT = "model"

_downloads_lock = threading.Lock()  # guards the two dicts; each version's download has its own lock
_download_locks: dict[str, threading.Lock] = {}
_downloaded: dict[str, Path] = {}  # download URI -> this process's copy
_root: Path | None = None


def _downloads_root() -> Path:
    """This process's folder of downloaded versions, removed when the process exits. A loaded version's
    code folder stays on ``sys.path`` (MLflow puts it there), so its copy must outlive the load."""
    global _root
    if _root is None or not _root.is_dir():
        _root = Path(tempfile.mkdtemp(prefix="homeprice-models-"))
        atexit.register(shutil.rmtree, _root, ignore_errors=True)
    return _root


@dataclass(frozen=True)
class Promotion:
    champion: str
    previous: str | None
    changed: bool


@dataclass
class TrackedRun:
    """An open MLflow run, written through the registry's client."""

    client: MlflowClient
    run_id: str
    experiment_id: str

    def log_params(self, params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            self.client.log_param(self.run_id, key, str(value)[:6000])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, key, float(value), step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path=artifact_path)


class Registry:
    """One registered model in one MLflow store: versions, aliases, runs and loading."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        model_name: str | None = None,
        registry_uri: str | None = None,
        experiment_name: str = "homeprice",
        artifact_location: str | None = None,
        ui_url: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri or mlflow_tracking_uri()
        self.registry_uri = registry_uri or self.tracking_uri
        self.model_name = registered_model_name(model_name)
        self.experiment_name = experiment_name
        self.artifact_location = artifact_location
        self.ui_url = ui_url
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    # ------------------------------------------------------------------------------------------ versions
    def version(self, alias: str) -> ModelVersion | None:
        """The version behind ``alias``, or None when the alias (or the registered model) does not exist."""
        return unless_absent(
            lambda: self.client.get_model_version_by_alias(self.model_name, alias), None, ALIAS_NOT_FOUND
        )

    def version_number(self, alias: str) -> str | None:
        found = self.version(alias)
        return str(found.version) if found else None

    def get_version(self, version: str | int) -> ModelVersion:
        """A registered version; ``ValueError`` naming it (and the versions that exist) when it does not."""
        try:
            return self.client.get_model_version(self.model_name, str(version))
        except MlflowException as exc:
            if not absent(exc):
                raise
            known = ", ".join(str(v.version) for v in self.versions()) or "none"
            raise ValueError(
                f"version: {self.model_name} v{version} does not exist (registered versions: {known})"
            ) from None

    def versions(self) -> list[ModelVersion]:
        found = unless_absent(lambda: self.client.search_model_versions(f"name = '{self.model_name}'"), [])
        return sorted(found, key=lambda v: int(v.version))

    def aliases(self) -> dict[str, str]:
        """alias -> version for every alias of the registered model."""
        model = unless_absent(lambda: self.client.get_registered_model(self.model_name), None)
        aliases = (model.aliases or {}) if model is not None else {}
        return {alias: str(version) for alias, version in aliases.items()}

    def tag_version(self, version: str | int, **tags: Any) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, str(version), key, str(value)[:5000])

    def set_alias(self, alias: str, version: str | int, reason: str | None = None, **tags: Any) -> None:
        """Point ``alias`` at ``version`` (which must exist); the reason and tags go on the version."""
        self.get_version(version)
        self.client.set_registered_model_alias(self.model_name, alias, str(version))
        if reason is not None:
            tags[f"alias.{alias}.reason"] = reason
        if tags:
            tags[f"alias.{alias}.at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.tag_version(version, **tags)

    def delete_alias(self, alias: str) -> None:
        """Remove ``alias`` if present."""
        if self.version(alias) is not None:
            self.client.delete_registered_model_alias(self.model_name, alias)

    def promote(self, version: str | int, reason: str = "") -> Promotion:
        """Make ``version`` the champion; the old champion becomes ``previous`` (for rollback).

        Idempotent: promoting the version that is already champion changes nothing.
        """
        version = str(version)
        current = self.version_number(CHAMPION)
        if current == version:
            return Promotion(champion=version, previous=self.version_number(PREVIOUS), changed=False)
        if current is not None:
            self.set_alias(PREVIOUS, current, reason=f"champion until v{version} was promoted")
        self.set_alias(CHAMPION, version, reason=reason or "promoted")
        return Promotion(champion=version, previous=current, changed=True)

    # ------------------------------------------------------------------------- registered-model tags
    def model_tags(self) -> dict[str, str]:
        model = unless_absent(lambda: self.client.get_registered_model(self.model_name), None)
        return dict(model.tags or {}) if model is not None else {}

    def set_model_tag(self, key: str, value: Any) -> None:
        self._ensure_model()
        self.client.set_registered_model_tag(self.model_name, key, str(value))

    def delete_model_tag(self, key: str) -> None:
        if key in self.model_tags():
            self.client.delete_registered_model_tag(self.model_name, key)

    def _ensure_model(self) -> None:
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException as exc:
            if not absent(exc):
                raise
            self.client.create_registered_model(self.model_name)

    # -------------------------------------------------------------------------------------------- runs
    def experiment_id(self, name: str | None = None) -> str:
        """The experiment's id, created with the configured artifact location if it does not exist."""
        name = name or self.experiment_name
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=self.new_experiment_location())
        except MlflowException:  # created meanwhile by another process
            return self.client.get_experiment_by_name(name).experiment_id

    def new_experiment_location(self) -> str | None:
        """Where a new experiment keeps its artifacts: ``artifact_location``, else
        ``$HOMEPRICE_MLFLOW_ARTIFACTS`` (e.g. ``mlflow-artifacts:/homeprice``, through the server), else, with
        a tracking server, wherever it decides (``--artifacts-destination``: clients need no S3 credentials),
        else a folder under the project home."""
        location = self.artifact_location or os.environ.get("HOMEPRICE_MLFLOW_ARTIFACTS")
        if not location:
            if self.tracking_uri.startswith(("http://", "https://")):
                return None
            location = (homeprice_home() / "mlartifacts").as_uri()
        if not location.startswith(("file:", "s3:", "mlflow-artifacts:", "gs:", "wasbs:", "hdfs:")):
            location = Path(location).resolve().as_uri()
        return location

    @contextlib.contextmanager
    def run(
        self, run_name: str, tags: Mapping[str, Any] | None = None, experiment: str | None = None
    ) -> Iterator[TrackedRun]:
        """An MLflow run that ends FINISHED, or FAILED if the body raises."""
        experiment_id = self.experiment_id(experiment)
        created = self.client.create_run(
            experiment_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items()}
        )
        run = TrackedRun(self.client, created.info.run_id, experiment_id)
        try:
            yield run
        except BaseException:
            self.client.set_terminated(run.run_id, status="FAILED")
            raise
        self.client.set_terminated(run.run_id, status="FINISHED")

    def run_link(self, run_id: str) -> str | None:
        """A browser link to a run when ``ui_url`` is set (or the tracking URI is an MLflow server)."""
        base = self.ui_url or (self.tracking_uri if self.tracking_uri.startswith("http") else None)
        if not base:
            return None
        experiment_id = self.client.get_run(run_id).info.experiment_id
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    # ---------------------------------------------------------------------------------------- models
    def register(
        self, run: TrackedRun, model_dir: str | Path, tags: Mapping[str, Any] | None = None
    ) -> ModelVersion:
        """Upload a saved MLflow model directory into ``run`` and register it as a new version (READY)."""
        run.log_artifacts(model_dir, MODEL_ARTIFACT)
        self._ensure_model()
        source = f"{self.client.get_run(run.run_id).info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT}"
        version = self.client.create_model_version(
            self.model_name,
            source=source,
            run_id=run.run_id,
            tags={k: str(v) for k, v in (tags or {}).items()},
            await_creation_for=0,
        )
        deadline = time.monotonic() + 120
        while version.status != "READY" and time.monotonic() < deadline:
            time.sleep(0.2)
            version = self.client.get_model_version(self.model_name, version.version)
        if version.status != "READY":  # handing on a version that cannot be loaded fails later, obscurely
            raise RuntimeError(
                f"{self.model_name} v{version.version} is {version.status} after 120 s, not READY: "
                f"{version.status_message or 'no message from the registry'}"
            )
        return version

    def model_uri(self, version: str | int) -> str:
        return f"models:/{self.model_name}/{version}"

    def download(self, version: str | int, dst: str | Path | None = None) -> Path:
        """The version's model directory, downloaded (or, on a local store, found) on this machine."""
        found = self.get_version(version)
        uri = self.client.get_model_version_download_uri(self.model_name, found.version)
        if uri.startswith("file://") and Path(uri.removeprefix("file://")).is_dir():
            return Path(uri.removeprefix("file://"))
        from mlflow.artifacts import download_artifacts

        def fetch(into: Path) -> Path:
            return Path(
                download_artifacts(
                    artifact_uri=uri,
                    dst_path=str(into),
                    tracking_uri=self.tracking_uri,
                    registry_uri=self.registry_uri,
                )
            )

        if dst is not None:
            return fetch(Path(dst))
        # One copy per version and process (a service reloading a version after a rollback fetches nothing),
        # gone when the process ends, rather than a new temporary folder left behind at every load.
        # A lock per version: a stalled fetch of the candidate does not hold up the champion's.
        key = f"{self.registry_uri} {uri}"
        with _downloads_lock:
            lock = _download_locks.setdefault(key, threading.Lock())
            root = _downloads_root()
        with lock:
            done = _downloaded.get(key)
            if done is not None and done.is_dir():
                return done
            into = Path(tempfile.mkdtemp(prefix=f"v{found.version}-", dir=root))
            try:
                path = fetch(into)
            except BaseException:
                shutil.rmtree(into, ignore_errors=True)
                raise
            with _downloads_lock:
                _downloaded[key] = path
            return path

    def load(self, version: str | int) -> tuple[Any, Any]:
        """(pyfunc, inner model) of a version: the pyfunc checks inputs, the inner one explains."""
        return self.load_dir(self.download(version))

    @staticmethod
    def load_dir(model_dir: Path) -> tuple[Any, Any]:
        """(pyfunc, inner model) of a model directory already on this machine (see ``download``)."""
        import mlflow.pyfunc

        pyfunc = mlflow.pyfunc.load_model(str(model_dir))
        return pyfunc, pyfunc.unwrap_python_model()

    def features_of(self, version: str | int) -> dict[str, Any]:
        """The ``features.json`` logged with a version's run (what that version was trained on)."""
        found = self.get_version(version)
        from mlflow.artifacts import download_artifacts

        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = download_artifacts(
                    run_id=found.run_id,
                    artifact_path="features.json",
                    dst_path=tmp,
                    tracking_uri=self.tracking_uri,
                )
            except (MlflowException, OSError):
                return {}
            return json.loads(Path(path).read_text())


class ModelRegistry(dg.ConfigurableResource):
    """Where runs, models and their artifacts go, and what the model is called in the registry."""

    tracking_uri: str | None = Field(
        default=None, description="default: $MLFLOW_TRACKING_URI or SQLite under the project home"
    )
    registry_uri: str | None = Field(default=None, description="default: the tracking URI")
    model_name: str | None = Field(default=None, description="default: $HOMEPRICE_MODEL_NAME or homeprice")
    experiment_name: str = "homeprice"
    artifact_location: str | None = Field(
        default=None,
        description="default: $HOMEPRICE_MLFLOW_ARTIFACTS or $HOMEPRICE_HOME/mlartifacts (s3://... works)",
    )
    ui_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:5000, for links")

    def get(self) -> Registry:
        return Registry(
            tracking_uri=self.tracking_uri,
            model_name=self.model_name,
            registry_uri=self.registry_uri,
            experiment_name=self.experiment_name,
            artifact_location=self.artifact_location,
            ui_url=self.ui_url,
        )
