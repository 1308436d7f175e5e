"""Package the champion: MLflow registry -> BentoML model store -> a Bento with the service and its model."""

from __future__ import annotations

import os
import shutil
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


def stage_sources(build_ctx: Path, options: dict[str, Any], dest: Path) -> None:
    """Copy into ``dest`` what a Bento is built from: the top-level folders and files the bentofile's
    ``include`` patterns start from, the files its python, docker and conda sections name, and the context's
    own ``.bentoignore``.

    BentoML walks its whole build context and tests every file against the patterns: from the repository
    that is the venv too (75,000 files, 0.7 s a build) and the project's home when it lies inside, growing
    with every stored partition. The staged copy holds the same matching files, so the Bento is the same.
    """
    tops = {pattern.lstrip("/").split("/", 1)[0] for pattern in options.get("include") or []}
    for top in sorted(tops):
        if any(c in top for c in "*?[") or top in ("", ".", ".."):
            raise ValueError(f"bentofile include: {top!r} must be a folder or file of the build context")
        src = build_ctx / top
        if src.is_dir():
            shutil.copytree(src, dest / top, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            shutil.copy2(src, dest / top)
    python, docker, conda = (options.get(k) or {} for k in ("python", "docker", "conda"))
    named = [python.get("requirements_txt"), *(python.get("wheels") or []), conda.get("environment_yml")]
    named += [docker.get("setup_script"), docker.get("dockerfile_template"), ".bentoignore"]
    for name in filter(None, named):
        target = dest / name
        if not target.exists() and (build_ctx / name).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(build_ctx / name, target)


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
        stage_sources(build_ctx, options, staged)
        cwd = os.getcwd()
        os.chdir(staged)  # the service import string and include globs are relative to the build context
        try:
            return bentoml.bentos.build_bentofile(str(resolved), build_ctx=str(staged))
        finally:
            os.chdir(cwd)
