"""Rollout state in the model registry: aliases say which versions serve, registered-model tags say how.

The registry is the one place every process agrees on: Dagster (assets, sensor) and the CLI write it, each
running service reads it on its poll and follows without a restart. One ``get_registered_model`` call
returns every alias and tag at once, so a reader never sees half of a state.

- aliases ``champion`` (answers), ``candidate`` (under test), ``previous`` (the rollback target);
- tags ``rollout.mode`` (``shadow`` | ``ab``; absent: no rollout), ``rollout.weight`` (A/B share),
  ``rollout.started_at`` (ISO UTC), ``rollout.last_action`` (JSON: what was done last, why, with figures),
  ``live.metrics`` (JSON: each recent version's live accuracy on closed sales, written by
  ``rollout_evaluation``; the services export it to Prometheus on their next poll).

Every action moves aliases first and tags after, so a service polling in between sees at worst the
candidate serving as its own shadow for one poll, never a state that refuses requests.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient

from homeprice_assets.resources.registry import unless_absent
from homeprice_assets.rollout.settings import RolloutSettings

if TYPE_CHECKING:
    from homeprice_assets.resources.registry import Registry

CHAMPION, CANDIDATE, PREVIOUS, CHALLENGER = "champion", "candidate", "previous", "challenger"
TAG_MODE, TAG_WEIGHT, TAG_STARTED, TAG_LAST = (
    "rollout.mode",
    "rollout.weight",
    "rollout.started_at",
    "rollout.last_action",
)
TAG_LIVE = "live.metrics"
# A rollback under way ({"from", "to"}): its two alias moves are two registry calls; an error between them
# must not leave champion and previous on the same version with the target forgotten.
TAG_ROLLING_BACK = "rollout.rolling_back"
MODES = ("shadow", "ab")


class RolloutError(ValueError):
    """An action that does not exist or makes no sense in the current state (the message says which)."""


@dataclass(frozen=True)
class RolloutState:
    """Who serves and how, as one snapshot of the registry."""

    champion: str | None = None
    candidate: str | None = None
    previous: str | None = None
    challenger: str | None = None
    mode: str | None = None  # shadow | ab, None when no rollout runs
    weight: float = 0.0
    started_at: str | None = None
    last_action: dict[str, Any] = field(default_factory=dict)
    # version -> live figures (n, mdape, ppe10, median_ratio, cod, coverage, months) on closed sales
    live: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.mode in MODES and self.candidate is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_state(aliases: dict[str, str], tags: dict[str, str]) -> RolloutState:
    """The state from a registered model's aliases and tags (pure: the service and tests share it)."""
    mode = tags.get(TAG_MODE) or None
    candidate = aliases.get(CANDIDATE)
    try:
        weight = float(tags.get(TAG_WEIGHT) or 0.0)
    except ValueError:
        weight = 0.0
    try:
        last = json.loads(tags.get(TAG_LAST) or "{}")
    except ValueError:
        last = {}
    try:
        live = json.loads(tags.get(TAG_LIVE) or "{}")
    except ValueError:
        live = {}
    return RolloutState(
        champion=aliases.get(CHAMPION),
        candidate=candidate,
        previous=aliases.get(PREVIOUS),
        challenger=aliases.get(CHALLENGER),
        mode=mode if mode in MODES and candidate else None,
        weight=min(max(weight, 0.0), 1.0),
        started_at=tags.get(TAG_STARTED) or None,
        last_action=last,
        live=live.get("versions", {}) if isinstance(live, dict) else {},
    )


def read_state(client: MlflowClient, name: str) -> RolloutState:
    """One registry call; an empty state when the model is not registered yet. Other registry errors raise
    (the service's follower counts them and keeps serving what it has)."""
    model = unless_absent(lambda: client.get_registered_model(name), None)
    if model is None:
        return RolloutState()
    return parse_state({k: str(v) for k, v in (model.aliases or {}).items()}, dict(model.tags or {}))


def publish_live(reg: Registry, live: dict[str, dict[str, Any]], evaluated_at: str) -> None:
    """Record each version's live accuracy: one registered-model tag that every service reads on its poll
    (and exports as gauges), and tags on each version for the MLflow UI."""
    reg.set_model_tag(TAG_LIVE, json.dumps({"evaluated_at": evaluated_at, "versions": live}, sort_keys=True))
    for version, figures in live.items():
        reg.tag_version(
            version,
            live_mdape=figures.get("mdape", ""),
            live_matched_sales=figures.get("n", 0),
            live_months=",".join(figures.get("months", [])),
            live_evaluated_at=evaluated_at,
        )


def current_state(reg: Registry) -> RolloutState:
    return read_state(reg.client, reg.model_name)


def require_version(reg: Registry, version: str | int) -> str:
    """``version`` as a string; a ValueError naming it (and the versions that exist) when it does not."""
    return str(reg.get_version(version).version)


def offline_mdape(reg: Registry, version: str) -> float | None:
    """The version's offline validation MdAPE (``val_mdape`` on its MLflow run), when it was validated."""
    mv = reg.get_version(version)
    if mv.run_id:
        run = unless_absent(lambda: reg.client.get_run(mv.run_id), None)
        value = run.data.metrics.get("val_mdape") if run is not None else None
        if value is not None:
            return float(value)
    tag = (mv.tags or {}).get("validation_mdape")
    return float(tag) if tag else None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Action:
    """One thing done to the registry, with its reason and figures (also what alerts carry)."""

    kind: str  # promote | start | stop | rollback | replace
    version: str | None
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)
    previous_champion: str | None = None
    at: str = field(default_factory=_now)

    def record(self) -> str:
        return json.dumps(asdict(self), default=str, sort_keys=True)


def _record(reg: Registry, action: Action) -> Action:
    reg.set_model_tag(TAG_LAST, action.record())
    if action.version is not None:
        reg.tag_version(action.version, **{f"rollout.{action.kind}": action.record()})
    return action


def start_rollout(
    reg: Registry, version: str, mode: str, weight: float, reason: str, replace: bool = False
) -> Action:
    """``version`` becomes the ``candidate`` in ``mode``; refused when it makes no sense."""
    if mode not in MODES:
        raise RolloutError(f"mode: expected one of {MODES}, got {mode!r}")
    if not 0 < weight < 1:
        raise RolloutError(f"weight: the candidate's share must be between 0 and 1 (exclusive), got {weight}")
    version = require_version(reg, version)
    state = current_state(reg)
    if state.champion is None:
        raise RolloutError("no champion yet: the first model is promoted directly, not rolled out")
    if version == state.champion:
        raise RolloutError(f"v{version} is already the champion: nothing to compare it with")
    if state.active and not replace:
        raise RolloutError(
            f"a rollout is already running (v{state.candidate}, {state.mode}, since {state.started_at}): "
            "stop it first with `homeprice rollout stop`"
        )
    reg.set_alias(CANDIDATE, version, reason=reason)
    reg.set_model_tag(TAG_WEIGHT, f"{weight:g}")
    reg.set_model_tag(TAG_STARTED, _now())
    reg.set_model_tag(TAG_MODE, mode)
    kind = "replace" if state.active else "start"
    figures = {"mode": mode, "weight": weight, "champion": state.champion}
    if state.active:
        figures["replaced_candidate"] = state.candidate
    return _record(reg, Action(kind, version, reason, figures, previous_champion=state.champion))


def _clear_rollout(reg: Registry) -> None:
    reg.delete_alias(CANDIDATE)
    for tag in (TAG_MODE, TAG_WEIGHT, TAG_STARTED):
        reg.delete_model_tag(tag)


def stop_rollout(reg: Registry, reason: str, figures: dict[str, Any] | None = None) -> Action:
    """End the running rollout; the champion is unchanged."""
    state = current_state(reg)
    if not state.active:
        raise RolloutError("no rollout is running: nothing to stop")
    _clear_rollout(reg)
    return _record(
        reg, Action("stop", state.candidate, reason, figures or {}, previous_champion=state.champion)
    )


def promote(reg: Registry, version: str, reason: str, figures: dict[str, Any] | None = None) -> Action:
    """``version`` becomes champion, the old champion ``previous``; a rollout of that version ends."""
    version = require_version(reg, version)
    state = current_state(reg)
    if version == state.champion and state.candidate == version:
        # a promotion interrupted between its alias moves: finish it (the rollout ends)
        _clear_rollout(reg)
        return _record(reg, Action("promote", version, reason, figures or {}, state.previous))
    if version == state.champion:
        raise RolloutError(f"v{version} is already the champion")
    if state.champion is not None:
        reg.set_alias(PREVIOUS, state.champion, reason=f"champion until v{version} was promoted")
    reg.set_alias(CHAMPION, version, reason=reason)
    if state.candidate is not None:  # whatever was under test is superseded by the new champion
        _clear_rollout(reg)
    return _record(reg, Action("promote", version, reason, figures or {}, previous_champion=state.champion))


def promote_candidate(reg: Registry, reason: str, figures: dict[str, Any] | None = None) -> Action:
    state = current_state(reg)
    if not state.active:
        raise RolloutError("no rollout is running: no candidate to promote")
    return promote(reg, str(state.candidate), reason, figures)


def rollback(
    reg: Registry,
    reason: str,
    to: str | None = None,
    figures: dict[str, Any] | None = None,
    automatic: bool = False,
) -> Action:
    """``champion`` moves back to ``previous`` (or to ``to``); the broken champion becomes ``previous``.

    The version left is tagged ``rolled_back`` (``promoted_model`` never brings it back by itself), and
    ``rolled_back_automatically`` when live figures broke it (``automatic``). Automation does not roll back
    to a ``previous`` it rolled back itself: that would go back and forth between two broken versions. A
    person may (``homeprice rollback``)."""
    state = current_state(reg)
    if state.champion is None:
        raise RolloutError("no champion: nothing to roll back")
    pending = json.loads(reg.model_tags().get(TAG_ROLLING_BACK) or "{}")
    if to is None and pending.get("to") and state.previous == state.champion == pending.get("from"):
        # champion and previous on one version: the mark of a rollback interrupted between its moves
        to = str(pending["to"])
    elif to is None:
        if state.previous is None:
            raise RolloutError("no 'previous' version to roll back to: name one with --to VERSION")
        to = state.previous
        rolled_back = automatic and (reg.get_version(to).tags or {}).get("rolled_back_automatically")
        if rolled_back:
            raise RolloutError(
                f"'previous' v{to} was itself rolled back ({rolled_back}): name a version with --to VERSION"
            )
    to = require_version(reg, to)
    if to == state.champion:
        raise RolloutError(f"v{to} is already the champion: nothing to roll back")
    marks = {"rolled_back": reason, **({"rolled_back_automatically": reason} if automatic else {})}
    reg.set_model_tag(TAG_ROLLING_BACK, json.dumps({"from": state.champion, "to": to}))
    reg.set_alias(PREVIOUS, state.champion, reason=f"rolled back: {reason}", **marks)
    reg.set_alias(CHAMPION, to, reason=f"rollback: {reason}")
    if state.candidate == to:
        _clear_rollout(reg)
    reg.delete_model_tag(TAG_ROLLING_BACK)
    return _record(
        reg,
        Action("rollback", to, reason, {"from": state.champion, **(figures or {})}, state.champion),
    )


@dataclass(frozen=True)
class PromotionDecision:
    """What a challenger that passed the offline gates becomes."""

    action: str  # promote | candidate
    version: str
    mode: str
    weight: float
    reason: str


def decide_promotion(reg: Registry, version: str, settings: RolloutSettings) -> PromotionDecision:
    """Decision for ``promoted_model`` (reads the registry, writes nothing): ``direct`` mode, or an empty
    registry, promotes at once; ``shadow``/``ab`` make the validated version the candidate (replacing one
    under test)."""
    mode, weight = settings.mode, settings.weight
    state = current_state(reg)
    if state.champion is None:
        return PromotionDecision("promote", version, mode, weight, "first model: promoted directly")
    if mode == "direct":
        return PromotionDecision("promote", version, mode, weight, "promotion.mode direct")
    why = f"rollout mode {mode}: live ground truth decides"
    if state.active and state.candidate != version:
        why += f" (replaces candidate v{state.candidate})"
    return PromotionDecision("candidate", version, mode, weight, why)


def apply_promotion(reg: Registry, decision: PromotionDecision, gate_reason: str) -> Action | None:
    """Carry out ``decide_promotion``'s answer; None when it is already in place (idempotent)."""
    state = current_state(reg)
    reason = f"{decision.reason}; {gate_reason}"
    if decision.action == "promote":
        if state.champion == decision.version:
            return None
        return promote(reg, decision.version, reason)
    if state.candidate == decision.version and state.active:
        return None
    return start_rollout(reg, decision.version, decision.mode, decision.weight, reason, replace=True)
