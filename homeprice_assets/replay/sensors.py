"""Retraining on measured live error: the trigger the project's ``retrain_sensor`` does not have (yet).

After each ``rollout_evaluation`` (live ground truth of the newest month), the champion's live MdAPE is
compared with its offline validation MdAPE; above ``(1 + margin)`` times it, with at least ``min_sales``
matched sales, a lifecycle run is requested exactly as the retrain sensor requests one (same asset group,
queue tag, trigger and month tags). The figures come from the evaluation's own metadata (``champion_health``).
"""

from __future__ import annotations

import json

import dagster as dg

from homeprice_assets.monitoring.sensors.common import MONTH_TAG, TRIGGER_TAG, values
from homeprice_assets.training.assets import LIFECYCLE_TAG

ROLLOUT_EVALUATION = dg.AssetKey("rollout_evaluation")


def live_error_breach(health: dict, margin: float, min_sales: int) -> str | None:
    """The reason to retrain, or None: live MdAPE above offline MdAPE x (1 + margin) on enough sales."""
    metrics = health.get("metrics") or {}
    live, offline, n = metrics.get("mdape"), health.get("offline_mdape"), int(metrics.get("n") or 0)
    if live is None or offline is None or n < min_sales:
        return None
    if float(live) > float(offline) * (1 + margin):
        return f"live MdAPE {float(live):.2%} > offline {float(offline):.2%} x {1 + margin:g} ({n} sales)"
    return None


def build_live_error_retrain_sensor(
    margin: float = 0.1, min_sales: int = 30, name: str = "live_error_retrain_sensor", group: str = "training"
) -> dg.SensorDefinition:
    @dg.sensor(
        name=name,
        target=dg.AssetSelection.groups(group),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Retrain when the champion's live MdAPE exceeds its offline MdAPE x {1 + margin:g}.",
    )
    def live_error_retrain_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        after = int(json.loads(context.cursor)["storage_id"]) if context.cursor else 0
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=ROLLOUT_EVALUATION, after_storage_id=after),
            limit=100,
            ascending=True,
        ).records
        graph = context.repository_def.asset_graph if context.repository_def else None
        keys = sorted(
            (k for k in (graph.get_all_asset_keys() if graph else []) if graph.get(k).group_name == group),
            key=lambda k: k.to_user_string(),
        )
        requests = []
        for record in records:
            after = record.storage_id
            meta = values(record.asset_materialization.metadata if record.asset_materialization else {})
            health = meta.get("champion_health") or {}
            reason = live_error_breach(health, margin, min_sales)
            if reason and keys:
                month = str(health.get("month") or "")
                context.log.info(f"live error of v{health.get('champion')} on {month}: {reason}: retraining")
                requests.append(
                    dg.RunRequest(
                        run_key=f"retrain:live_error:{record.storage_id}",
                        asset_selection=keys,
                        tags={TRIGGER_TAG: "live_error", MONTH_TAG: month, LIFECYCLE_TAG: "true"},
                    )
                )
        return dg.SensorResult(
            run_requests=requests,
            cursor=json.dumps({"storage_id": after}),
            skip_reason=None
            if requests
            else dg.SkipReason(f"{len(records)} evaluation(s), live error within bounds"),
        )

    return live_error_retrain_sensor
