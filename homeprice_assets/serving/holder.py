"""The models a service holds, by role, and the follower that swaps in a newly promoted champion.

Roles (``champion`` now; ``challenger`` and ``shadow`` for the A/B and shadow rollouts to come) each hold
one ``LoadedModel``. A swap replaces the reference in one assignment: a request that already took the old
model finishes with it, the next one gets the new one, and none is dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import mlflow
import mlflow.pyfunc

from homeprice_assets.training.model import HomePriceModel
from homeprice_assets.training.tracking import alias_version

log = logging.getLogger("homeprice.serving")


@dataclass(frozen=True)
class LoadedModel:
    version: str
    role: str
    source: str  # where it came from: models:/name@alias, or a BentoML model tag
    pyfunc: mlflow.pyfunc.PyFuncModel
    inner: HomePriceModel


def load_from_registry(name: str, alias: str, role: str) -> LoadedModel | None:
    """The version behind ``name@alias``, loaded; None when the alias does not exist yet."""
    version = alias_version(alias, name)
    if version is None:
        return None
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    return LoadedModel(
        str(version.version), role, f"models:/{name}@{alias}", pyfunc, pyfunc.unwrap_python_model()
    )


class ModelHolder:
    """Models by role; readers take a reference without locking, writers swap under a lock."""

    def __init__(self) -> None:
        self._slots: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, role: str = "champion") -> LoadedModel | None:
        return self._slots.get(role)

    def put(self, model: LoadedModel) -> LoadedModel | None:
        with self._lock:
            old = self._slots.get(model.role)
            self._slots = {**self._slots, model.role: model}
            return old

    def roles(self) -> dict[str, str]:
        return {role: m.version for role, m in self._slots.items()}


class AliasFollower:
    """Polls the registry and loads the version behind an alias into a role whenever it changes."""

    def __init__(
        self,
        holder: ModelHolder,
        name: str,
        alias: str = "champion",
        role: str = "champion",
        interval_s: float = 5.0,
        on_swap: Callable[[LoadedModel, LoadedModel | None], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.holder, self.name, self.alias, self.role = holder, name, alias, role
        self.interval_s = interval_s
        self.on_swap, self.on_error = on_swap, on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def poll(self) -> bool:
        """Check once; True when a new version was swapped in."""
        try:
            version = alias_version(self.alias, self.name)
            current = self.holder.get(self.role)
            if version is None or (current is not None and current.version == str(version.version)):
                return False
            loaded = load_from_registry(self.name, self.alias, self.role)
        except Exception as exc:  # the registry being away must not take serving down
            self.errors += 1
            log.warning("could not poll %s@%s: %s", self.name, self.alias, exc)
            if self.on_error:
                self.on_error(exc)
            return False
        if loaded is None:
            return False
        old = self.holder.put(loaded)
        log.info(
            "%s: now serving %s v%s (was %s)",
            self.role,
            self.name,
            loaded.version,
            old.version if old else "none",
        )
        if self.on_swap:
            self.on_swap(loaded, old)
        return True

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.poll()

        self._thread = threading.Thread(target=loop, name=f"follow-{self.alias}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
