"""The project configuration as a Dagster resource: read once, validated, passed to every asset and sensor.

Tests and callers pass ``overrides`` instead of editing files, environment variables or caches.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

import dagster as dg
from pydantic import Field

from homeprice_assets.config import ProjectConfig, load_config


@lru_cache(maxsize=16)
def _load(path: str | None, overrides_json: str, mtime: float) -> ProjectConfig:
    return load_config(path, json.loads(overrides_json))


class ProjectConfigResource(dg.ConfigurableResource):
    """``path`` (default: ``$HOMEPRICE_CONFIG`` when the code location loads) over packaged defaults."""

    path: str | None = Field(default=None, description="YAML file merged over the packaged defaults")
    overrides: dict[str, Any] = Field(default_factory=dict, description="merged over the file, key by key")

    def get(self) -> ProjectConfig:
        """The validated configuration (cached until the file changes)."""
        mtime = os.path.getmtime(self.path) if self.path and os.path.isfile(self.path) else 0.0
        return _load(self.path, json.dumps(self.overrides, sort_keys=True), mtime)

    @classmethod
    def from_env(cls, **overrides: Any) -> ProjectConfigResource:
        """The resource for ``$HOMEPRICE_CONFIG``, validated now: a bad file stops the code location."""
        resource = cls(path=os.environ.get("HOMEPRICE_CONFIG") or None, overrides=overrides)
        resource.get()
        return resource
