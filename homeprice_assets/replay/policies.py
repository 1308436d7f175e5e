"""Retraining policies compared by the replay, each one a set of overrides of the real configuration.

A policy is what an operator would deploy: which automation runs (the project's ``retrain_sensor`` with its
``retrain_policy``, or the replay's live-error trigger, or nothing after the first model) and the
configuration it runs with (promotion gates on or off, rollout mode). The replay evaluates exactly those
sensors, with exactly those settings, through the real assets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Every gate switched off (absolute gates at values no model fails, relative gates None where the schema
# allows it): a challenger that trains is promoted.
GATES_OFF: dict[str, Any] = {
    "max_mdape": 100.0,
    "min_ppe10": 0.0,
    "max_mdape_increase": 100.0,
    "max_churn": None,
    "max_ppe10_decrease": None,
    "max_coverage_decrease": None,
    "max_rmse_increase": None,
    "max_abs_prb": None,
}

RETRAIN_SENSOR = "retrain_sensor"
LIVE_ERROR_SENSOR = "live_error_retrain_sensor"
ROLLOUT_SENSOR = "rollout_actions"
LANDING_SENSOR = "landing_sensor"


@dataclass(frozen=True)
class Policy:
    """A named deployment: the sensors that run and the configuration overrides they run with."""

    name: str
    description: str
    sensors: tuple[str, ...]  # beyond landing_sensor and rollout_actions, which always run
    overrides: dict[str, Any] = field(default_factory=dict)
    gates: bool = True
    # live-error trigger: retrain when the champion's live MdAPE on the newest month exceeds its offline
    # validation MdAPE x (1 + live_error_margin)
    live_error_margin: float | None = None

    def config_overrides(self, base: dict[str, Any]) -> dict[str, Any]:
        """``base`` (settings shared by every policy of a replay) with this policy's overrides on top."""
        return merge(merge(base, self.overrides), {"promotion": GATES_OFF} if not self.gates else {})


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Key-by-key merge of nested dicts (``over`` wins), as the configuration loader merges files."""
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _retrain(trigger: str) -> dict[str, Any]:
    return {"monitoring": {"automation": {"retrain_policy": trigger}}}


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("never", "the first model serves throughout: no retraining", sensors=()),
        Policy(
            "monthly",
            "retrain on every new ready month (retrain_policy: new_data), gates on",
            sensors=(RETRAIN_SENSOR,),
            overrides=_retrain("new_data"),
        ),
        Policy(
            "monthly_no_gates",
            "retrain on every new ready month, every trained model promoted (gates off)",
            sensors=(RETRAIN_SENSOR,),
            overrides=_retrain("new_data"),
            gates=False,
        ),
        Policy(
            "drift",
            "retrain when the month's features drift (retrain_policy: drift, the default), gates on",
            sensors=(RETRAIN_SENSOR,),
            overrides=_retrain("drift"),
        ),
        Policy(
            "live_error",
            "retrain when the champion's measured live MdAPE exceeds its offline MdAPE by 10%, gates on",
            sensors=(LIVE_ERROR_SENSOR,),
            live_error_margin=0.10,
        ),
        Policy(
            "live_error_no_gates",
            "retrain on measured live error (as live_error), gates off",
            sensors=(LIVE_ERROR_SENSOR,),
            live_error_margin=0.10,
            gates=False,
        ),
    )
}
DEFAULT_POLICIES = ("never", "monthly", "monthly_no_gates", "drift", "live_error")


def resolve(names: list[str] | tuple[str, ...] | None) -> list[Policy]:
    """Policies by name, in the order given; a clear error naming an unknown one."""
    chosen = list(names or DEFAULT_POLICIES)
    unknown = [n for n in chosen if n not in POLICIES]
    if unknown:
        raise ValueError(f"policy: unknown {unknown}; known: {sorted(POLICIES)}")
    return [POLICIES[n] for n in dict.fromkeys(chosen)]
