"""The rollout's hands: after each ``rollout_evaluation``, promote, stop or roll back, and say so.

Decisions are made by the evaluation (pure functions); this sensor only carries them out against the
registry (alias moves with the reason and figures as tags, see ``rollout/state.py``) and sends an alert.
Its cursor holds the last evaluation handled and, per champion version, how many evaluations in a row
found it broken: ``failure_limit`` in a row roll it back to ``previous``.
"""

import json
from typing import Any

import dagster as dg

from homeprice_assets.monitoring.notify import Alert, Notifier
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.registry import ModelRegistry
from homeprice_assets.rollout import state as st

ROLLOUT_EVALUATION = dg.AssetKey("rollout_evaluation")
PROMOTED_MODEL = dg.AssetKey("promoted_model")


def champion_moved(action: st.Action, source: str) -> dg.AssetMaterialization:
    """A champion moved outside a lifecycle run (promotion of a candidate, rollback) as a ``promoted_model``
    event: the ``bento`` asset's eager condition rebuilds the Bento around the new champion, and the
    promotion alert sensor skips it (``alerted``: whoever moved it sent its own alert)."""
    return dg.AssetMaterialization(
        asset_key=PROMOTED_MODEL,
        description=f"{action.kind} by {source}: {action.reason}",
        metadata={
            "model_version": action.version or "none",
            "champion_version": action.version or "none",
            "previous_version": action.previous_champion or "none",
            "decision": action.kind,
            "changed": True,
            "alerted": True,
            "reason": action.reason,
        },
    )


def _value(metadata: dict[str, Any], key: str, default: Any = None) -> Any:
    entry = metadata.get(key)
    return default if entry is None else getattr(entry, "value", entry)


def action_alert(action: st.Action, model_name: str, dagster_run_url: str | None = None) -> Alert:
    """One message per action, with its figures (deduplicated by kind, version and time of action)."""
    titles = {
        "promote": f"Rollout: promoted {model_name} v{action.version} to champion",
        "stop": f"Rollout: stopped candidate {model_name} v{action.version}; champion unchanged",
        "rollback": f"Rollback: {model_name} champion v{action.previous_champion} -> v{action.version}",
        "start": f"Rollout started: {model_name} v{action.version} is the candidate "
        f"({action.figures.get('mode')}, weight {action.figures.get('weight')})",
        "replace": f"Rollout: {model_name} v{action.version} replaces the candidate "
        f"({action.figures.get('mode')})",
    }
    figures = ", ".join(
        f"{k}={v}" for k, v in sorted(action.figures.items()) if not isinstance(v, dict | list)
    )
    return Alert(
        kind=f"rollout_{action.kind}",
        key=f"rollout:{model_name}:{action.kind}:{action.version}:{action.at}",
        title=titles.get(action.kind, f"Rollout {action.kind}: v{action.version}"),
        lines=(f"Reason: {action.reason}", f"Figures: {figures}"),
        severity="error" if action.kind == "rollback" else "info",
        dagster_run_url=dagster_run_url,
        facts={
            "action": action.kind,
            "version": action.version,
            "from": action.previous_champion,
            **action.figures,
        },
    )


def build_rollout_actions_sensor(
    interval_seconds: int = 30, name: str = "rollout_actions"
) -> dg.SensorDefinition:
    @dg.sensor(
        name=name,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Promote a winning candidate, stop a losing one, roll back a champion broken "
        "failure_limit evaluations in a row; each an alias move with a reason tag and an alert.",
    )
    def rollout_actions(
        context: dg.SensorEvaluationContext,
        settings: ProjectConfigResource,
        registry: ModelRegistry,
        notifier: Notifier,
    ) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        after = int(cursor.get("storage_id", 0))
        streak: dict[str, int] = cursor.get("broken_streak", {})
        limit = settings.get().rollout.rollback.failure_limit
        reg = registry.get()
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=ROLLOUT_EVALUATION, after_storage_id=after),
            limit=100,
            ascending=True,
        ).records
        done: list[str] = []
        events: list[dg.AssetMaterialization] = []
        for record in records:
            after = record.storage_id
            meta = record.asset_materialization.metadata if record.asset_materialization else {}
            run_url = notifier.links.dagster_run(record.run_id)
            champion = str(_value(meta, "champion_version", "none"))
            state = st.current_state(reg)
            health = _value(meta, "champion_health", {}) or {}
            if _value(meta, "champion_broken", False):
                streak[champion] = streak.get(champion, 0) + 1
            else:
                streak[champion] = 0
            if streak[champion] >= limit and state.champion == champion:
                figures = {
                    "breaches": "; ".join(health.get("breaches", [])),
                    "consecutive_evaluations": streak[champion],
                    "failure_limit": limit,
                    "month": health.get("month"),
                    **{f"live_{k}": v for k, v in (health.get("metrics") or {}).items()},
                    "offline_mdape": health.get("offline_mdape"),
                }
                try:
                    action = st.rollback(reg, f"live champion broken: {figures['breaches']}", figures=figures)
                except ValueError as exc:  # e.g. no previous: say so, do not crash the sensor
                    context.log.error(f"rollback of v{champion} not possible: {exc}")
                else:
                    streak[champion] = 0
                    events.append(champion_moved(action, "rollout_actions"))
                    notifier.send(action_alert(action, reg.model_name, run_url), log=context.log)
                    done.append(f"rollback v{champion} -> v{action.version}")
                    continue  # the candidate was compared with a broken champion: decide on the next one
            decision = _value(meta, "decision")
            candidate = str(_value(meta, "candidate_version", "none"))
            if decision not in ("promote", "stop") or not state.active or state.candidate != candidate:
                continue
            comparison = _value(meta, "comparison", {}) or {}
            figures = {
                k: comparison.get(k)
                for k in (
                    "mode",
                    "n_pairs",
                    "mdape_candidate",
                    "mdape_champion",
                    "statistic",
                    "boundary",
                    "ci_low",
                    "ci_high",
                )
            }
            reason = str(comparison.get("reason", decision))
            if decision == "promote":
                action = st.promote_candidate(reg, reason, figures)
                events.append(champion_moved(action, "rollout_actions"))
            else:
                action = st.stop_rollout(reg, reason, figures)
            notifier.send(action_alert(action, reg.model_name, run_url), log=context.log)
            done.append(f"{action.kind} v{candidate}")
        new_cursor = json.dumps({"storage_id": after, "broken_streak": streak}, sort_keys=True)
        if done:
            context.log.info("rollout actions: " + "; ".join(done))
        return dg.SensorResult(
            cursor=new_cursor,
            asset_events=events,
            skip_reason=None if done else dg.SkipReason(f"{len(records)} evaluation(s), no action"),
        )

    return rollout_actions
