"""The rollout's hands: after each ``rollout_evaluation``, promote, stop or roll back, and say so.

Decisions are made by the evaluation (pure functions); this sensor only carries them out against the
registry (alias moves with the reason and figures as tags, see ``rollout/state.py``) and sends an alert.
Its cursor holds the last evaluation handled and, per champion version, how many months in a row found it
broken (and the month last judged): ``failure_limit`` in a row roll it back to ``previous``.
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


def _act_on(
    context: dg.SensorEvaluationContext,
    reg: Any,
    notifier: Notifier,
    meta: dict[str, Any],
    run_url: str | None,
    streak: dict[str, int],
    judged: dict[str, list],
    limit: int,
) -> st.Action | None:
    """What one evaluation calls for, done against the registry (``streak`` and ``judged`` updated in place).

    A champion's broken streak counts months: an evaluation of the month it was last judged on (a second
    file of that month, a correction) replaces that month's verdict rather than adding one, and an
    evaluation that could not judge it (too few sales) changes nothing. A streak starts afresh for each
    reign: streaks of other versions are dropped. The candidate acted on is the one the evaluation
    compared, never whatever is candidate now.
    """
    champion = str(_value(meta, "champion_version", "none"))
    state = st.current_state(reg)
    for version in [v for v in streak if v != state.champion]:
        streak.pop(version)
        judged.pop(version, None)
    health = _value(meta, "champion_health", {}) or {}
    month = str(health.get("month") or "")
    if champion == state.champion and health.get("judged", True):
        broken = bool(_value(meta, "champion_broken", False))
        last_month, _, before = judged.get(champion) or ["", False, 0]
        if not (month and month == last_month):  # a new month: the streak so far is its base
            before = streak.get(champion, 0)
        # the same month judged again (a second file, a correction): its new verdict replaces the old one
        streak[champion] = before + 1 if broken else 0
        judged[champion] = [month, broken, before]
    if streak.get(champion, 0) >= limit and state.champion == champion:
        figures = {
            "breaches": "; ".join(health.get("breaches", [])),
            "consecutive_evaluations": streak[champion],
            "failure_limit": limit,
            "month": health.get("month"),
            **{f"live_{k}": v for k, v in (health.get("metrics") or {}).items()},
            "offline_mdape": health.get("offline_mdape"),
        }
        try:
            action = st.rollback(
                reg, f"live champion broken: {figures['breaches']}", figures=figures, automatic=True
            )
        except ValueError as exc:  # no previous, or it was rolled back itself: a person decides
            context.log.error(f"rollback of v{champion} not possible: {exc}")
            notifier.send(
                _no_rollback_alert(reg.model_name, champion, str(exc), figures, run_url), context.log
            )
            return None
        streak.pop(champion, None)
        judged.pop(champion, None)
        return action  # the candidate was compared with a broken champion: decide on the next evaluation
    decision = _value(meta, "decision")
    candidate = str(_value(meta, "candidate_version", "none"))
    if decision not in ("promote", "stop") or not state.active or state.candidate != candidate:
        return None
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
        return st.promote(reg, candidate, reason, figures)
    return st.stop_rollout(reg, reason, figures)


def _no_rollback_alert(
    model_name: str, champion: str, why: str, figures: dict[str, Any], run_url: str | None
) -> Alert:
    """The champion is broken and nothing can be rolled back to: one alert per champion and month."""
    return Alert(
        kind="rollout_rollback_impossible",
        key=f"rollout:{model_name}:rollback_impossible:{champion}:{figures.get('month')}",
        title=f"Rollback needed but not possible: {model_name} champion v{champion} is broken on live sales",
        lines=(f"Why not: {why}", f"Breaches: {figures.get('breaches')}", "A person must choose a version."),
        severity="error",
        dagster_run_url=run_url,
        facts={"action": "rollback_impossible", "version": champion, **figures},
    )


def build_rollout_actions_sensor(
    interval_seconds: int = 30, name: str = "rollout_actions"
) -> dg.SensorDefinition:
    @dg.sensor(
        name=name,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Promote a winning candidate, stop a losing one, roll back a champion broken "
        "failure_limit months in a row; each an alias move with a reason tag and an alert.",
    )
    def rollout_actions(
        context: dg.SensorEvaluationContext,
        settings: ProjectConfigResource,
        registry: ModelRegistry,
        notifier: Notifier,
    ) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        after = int(cursor.get("storage_id", 0))
        # champion -> [newest month it was judged on, broken then, the streak before that month]; a cursor
        # from before (streaks counted evaluations, or months kept without their verdicts) starts afresh
        judged: dict[str, list] = cursor.get("judged_month", {})
        streak: dict[str, int] = cursor.get("broken_streak", {})
        if not judged or any(not (isinstance(v, list) and len(v) == 3) for v in judged.values()):
            judged, streak = {}, {}
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
            meta = record.asset_materialization.metadata if record.asset_materialization else {}
            run_url = notifier.links.dagster_run(record.run_id)
            try:
                action = _act_on(context, reg, notifier, meta, run_url, streak, judged, limit)
            except Exception as exc:  # the registry failed mid-way: keep what was done, retry this record
                context.log.error(f"rollout evaluation {record.storage_id}: not acted on yet: {exc!r}")
                break
            after = record.storage_id
            if action is not None:
                if action.kind in ("promote", "rollback"):
                    events.append(champion_moved(action, "rollout_actions"))
                notifier.send(action_alert(action, reg.model_name, run_url), log=context.log)
                done.append(f"{action.kind} v{action.version}")
        new_cursor = json.dumps(
            {"storage_id": after, "broken_streak": streak, "judged_month": judged}, sort_keys=True
        )
        if done:
            context.log.info("rollout actions: " + "; ".join(done))
        return dg.SensorResult(
            cursor=new_cursor,
            asset_events=events,
            skip_reason=None if done else dg.SkipReason(f"{len(records)} evaluation(s), no action"),
        )

    return rollout_actions
