"""Package the champion: MLflow registry -> BentoML model store -> a Bento with the service and its model."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import bentoml
import yaml

from homeprice_assets.config import REPO_ROOT
from homeprice_assets.resources.registry import Registry

BENTOFILE = REPO_ROOT / "bento" / "bentofile.yaml"


def import_version(registry: Registry, version: str) -> bentoml.Model:
    """The registered MLflow version as BentoML model ``<name>:v<version>`` (imported once)."""
    import bentoml.mlflow

    name = registry.model_name
    tag = f"{name}:v{version}"
    try:
        return bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        return bentoml.mlflow.import_model(
            tag,
            model_uri=str(registry.download(version)),
            labels={"model_version": str(version), "registered_model": name},
            metadata={"source": registry.model_uri(version), "tracking_uri": registry.tracking_uri},
        )


def _include_tops(include: list[str]) -> set[str] | None:
    """The top-level entries ``include`` patterns start from; None when one can match at any depth.

    In BentoML's (gitignore's) patterns a separator at the start or in the middle anchors a pattern to the
    build context, so its first segment names a top-level entry; a pattern without one (``*.py``) or
    starting with a wildcard (``**/x``) can match anywhere, and no staged copy can be sure to hold it.
    """
    tops: set[str] = set()
    for raw in include:
        pattern = raw.strip().removeprefix("./")
        if not pattern or pattern.startswith(("#", "!")):
            continue  # comments, and negations (they only take files away)
        anchored = pattern.startswith("/") or "/" in pattern.rstrip("/")  # a trailing one does not anchor
        head = pattern.lstrip("/").split("/", 1)[0]
        if not anchored or any(c in head for c in "*?[") or head in (".", ".."):
            return None
        tops.add(head)
    return tops


def stage_sources(build_ctx: Path, options: dict[str, Any], dest: Path) -> bool:
    """Copy into ``dest`` what a Bento is built from; False (nothing copied) when it cannot be told.

    BentoML walks its whole build context and tests every file against the include patterns: from the
    repository that is the venv too (75,000 files, 0.7 s a build) and the project's home when it lies inside,
    growing with every stored partition. The staged copy holds the folders and files the patterns start
    from, the files the bentofile names (requirements, wheels, Dockerfile template, setup script, conda
    environment, a ``file:`` description, a dotenv file) and the context's ``README.md`` and ``.bentoignore``,
    so the Bento is the same. Without ``include`` (BentoML then takes everything) or with a pattern that can
    match at any depth, the caller builds from the context itself.
    """
    tops = _include_tops(options.get("include") or [])
    if not tops:
        return False
    for top in sorted(tops):
        src = build_ctx / top
        if src.is_dir():
            shutil.copytree(src, dest / top, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            shutil.copy2(src, dest / top)
    python, docker, conda = (options.get(k) or {} for k in ("python", "docker", "conda"))
    description = str(options.get("description") or "")
    named = [python.get("requirements_txt"), *(python.get("wheels") or []), conda.get("environment_yml")]
    named += [docker.get("setup_script"), docker.get("dockerfile_template"), ".bentoignore", "README.md"]
    named += [description[5:].strip() if description.startswith("file:") else None]
    named += [docker.get("env") if isinstance(docker.get("env"), str) else None]
    for name in filter(None, named):
        target = dest / name
        if not target.exists() and (build_ctx / name).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(build_ctx / name, target)
    return True


def _forget_modules_under(folder: Path) -> None:
    """Drop modules imported from ``folder`` (the service, imported from the staged copy while building),
    so the process imports them again from where they live once the copy is gone."""
    root = str(folder.resolve())
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(root):
            del sys.modules[name]


def _import_service(build_ctx: Path, service: str | None) -> None:
    """Import the service module from the build context itself before a build from a staged copy.

    BentoML imports the service by module name and reuses a module already imported; otherwise it runs the
    staged copy, whose module-level Prometheus metrics register again in a process that already holds them
    (a second build in one process, or the service imported after one, failed with DuplicateTimeseries).
    """
    module = (service or "").partition(":")[0]
    if not module or module.endswith(".py") or module in sys.modules:
        return
    path = str(build_ctx)
    added = path not in sys.path
    if added:
        sys.path.insert(0, path)
    try:
        importlib.import_module(module)
    finally:
        if added:
            sys.path.remove(path)


def build_bento(
    model: bentoml.Model, bentofile: Path = BENTOFILE, build_ctx: Path = REPO_ROOT
) -> bentoml.Bento:
    """Build the Bento from ``bentofile`` with exactly ``model`` baked in and served pinned."""
    options: dict[str, Any] = yaml.safe_load(bentofile.read_text())
    version = model.info.labels.get("model_version", str(model.tag.version))
    options["models"] = [str(model.tag)]
    options["envs"] = [e for e in options.get("envs", []) if e["name"] != "HOMEPRICE_BENTO_MODEL"] + [
        {"name": "HOMEPRICE_BENTO_MODEL", "value": str(model.tag)}
    ]
    options["labels"] = {**options.get("labels", {}), "model_version": version}
    with tempfile.TemporaryDirectory() as tmp:
        resolved = Path(tmp) / "bentofile.yaml"
        resolved.write_text(yaml.safe_dump(options))
        staged = Path(tmp) / "context"
        ctx = staged if stage_sources(build_ctx, options, staged) else build_ctx
        if ctx == staged:
            _import_service(build_ctx, options.get("service"))
        cwd = os.getcwd()
        os.chdir(ctx)  # the service import string and include globs are relative to the build context
        try:
            return bentoml.bentos.build_bentofile(str(resolved), build_ctx=str(ctx))
        finally:
            os.chdir(cwd)
            _forget_modules_under(staged)
