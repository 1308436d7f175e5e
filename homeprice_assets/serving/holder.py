"""The models a service holds, by role, and the followers that swap them as the registry changes.

``RolloutFollower`` (what the service runs) follows the whole rollout state: ``champion``, ``candidate``
(serving as ``shadow`` or as the A/B arm ``candidate``) and ``previous`` (loaded ahead, so a rollback swaps
at once), plus the mode and weight tags. It publishes one immutable ``Serving`` snapshot: a request reads it
once and uses it throughout, so a flip of mode or weight, a promotion or a rollback never changes the models
under a request in flight, and none is dropped. It reads and loads through the project's ``Registry`` (its
own MLflow client), so nothing in the service depends on MLflow's process-wide tracking URI.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import mlflow.pyfunc

from homeprice_assets.resources.registry import Registry
from homeprice_assets.rollout.state import RolloutState, read_state
from homeprice_assets.training.model import HomePriceModel

log = logging.getLogger("homeprice.serving")


def serving_model(model: HomePriceModel) -> HomePriceModel:
    """``model`` set to predict on one thread per call, as the service needs: it scales by workers and
    request threads, and LightGBM keeps one process-wide thread count (4.2+), so a batch on every core
    would also hand its thread team to the one-home calls running beside it (0.06 -> 0.28 ms a home)."""
    model.predict_threads = 1
    return model


@dataclass(frozen=True)
class LoadedModel:
    version: str
    role: str
    source: str  # where it came from: models:/name@alias, or a BentoML model tag
    pyfunc: mlflow.pyfunc.PyFuncModel
    inner: HomePriceModel


@dataclass(frozen=True)
class Serving:
    """What serves right now: one snapshot, swapped whole."""

    champion: LoadedModel | None = None
    candidate: LoadedModel | None = None  # role "shadow" or "candidate" (the A/B arm); None: no rollout
    previous: LoadedModel | None = None
    mode: str | None = None  # shadow | ab | None
    weight: float = 0.0
    state: RolloutState = field(default_factory=RolloutState)

    def roles(self) -> dict[str, str]:
        return {m.role: m.version for m in (self.champion, self.candidate, self.previous) if m is not None}

    def info(self) -> dict[str, object]:
        """The rollout state as served (for ``/model_info``)."""
        return {
            "champion_version": self.champion.version if self.champion else None,
            "candidate_version": self.candidate.version if self.candidate else None,
            "previous_version": self.previous.version if self.previous else None,
            "rollout_mode": self.mode or "off",
            "rollout_weight": self.weight if self.mode == "ab" else (1.0 if self.mode == "shadow" else 0.0),
            "rollout_started_at": self.state.started_at,
            "last_action": self.state.last_action,
        }


class RolloutFollower:
    """Polls the registry (one call: aliases and tags) and publishes a new ``Serving`` when it changed.

    Models are cached by version, so a promotion (candidate -> champion) or a rollback (previous ->
    champion) swaps without loading anything. A version that fails to load is counted and retried on the
    next poll; what was serving keeps serving.
    """

    def __init__(
        self,
        registry: Registry,
        interval_s: float = 5.0,
        on_change: Callable[[Serving, Serving], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.registry, self.name, self.interval_s = registry, registry.model_name, interval_s
        self.on_change, self.on_error = on_change, on_error
        self._cache: dict[str, tuple[mlflow.pyfunc.PyFuncModel, HomePriceModel]] = {}
        self.serving = Serving()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()
        self.errors = 0

    def _model(self, version: str | None, role: str, alias: str) -> LoadedModel | None:
        if version is None:
            return None
        if version not in self._cache:
            pyfunc, inner = self.registry.load(version)
            self._cache[version] = pyfunc, serving_model(inner)
        pyfunc, inner = self._cache[version]
        return LoadedModel(version, role, f"models:/{self.name}@{alias}", pyfunc, inner)

    def _error(self, exc: Exception, what: str) -> None:
        self.errors += 1
        log.warning("could not %s for %s: %s", what, self.name, exc)
        if self.on_error:
            self.on_error(exc)

    def poll(self) -> bool:
        """Check once; True when a new snapshot was published."""
        with self._poll_lock:
            try:
                state = read_state(self.registry.client, self.name)
            except Exception as exc:  # the registry being away must not take serving down
                self._error(exc, "read the registry")
                return False
            if state == self.serving.state:
                return False
            old = self.serving
            try:
                champion = self._model(state.champion, "champion", "champion") or old.champion
            except Exception as exc:
                self._error(exc, f"load champion v{state.champion}")
                return False  # keep serving the old one; retried next poll
            candidate = previous = None
            complete = True
            if state.active:
                role = "shadow" if state.mode == "shadow" else "candidate"
                try:
                    candidate = self._model(state.candidate, role, "candidate")
                except Exception as exc:
                    complete = False
                    self._error(exc, f"load candidate v{state.candidate}")
            try:
                previous = self._model(state.previous, "previous", "previous")
            except Exception as exc:
                complete = False
                self._error(exc, f"load previous v{state.previous}")
            new = Serving(
                champion=champion,
                candidate=candidate,
                previous=previous,
                mode=state.mode if candidate is not None else None,
                weight=state.weight,
                # an incomplete load is published but not remembered as done: the next poll retries it
                state=state if complete else dataclasses.replace(state, last_action={"retry": True}),
            )
            self.serving = new
            keep = {m.version for m in (champion, candidate, previous) if m is not None}
            self._cache = {v: m for v, m in self._cache.items() if v in keep}
        log.info("%s: now serving %s (was %s), mode %s", self.name, new.roles(), old.roles(), new.mode)
        if self.on_change:
            self.on_change(new, old)
        return True

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.poll()

        self._thread = threading.Thread(target=loop, name=f"follow-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
