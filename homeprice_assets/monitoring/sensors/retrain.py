"""Ready months -> drift report and/or retraining, by ``monitoring.automation.retrain_policy``."""

from __future__ import annotations

import json

import dagster as dg

from homeprice_assets.ingest.status import blocking_check_keys, month_status
from homeprice_assets.monitoring.sensors.common import (
    DRIFT_REPORT,
    IN_PROCESS_RUN_CONFIG,
    MONTH_TAG,
    SALE_FEATURES,
    TRAINING_SET,
    TRIGGER_TAG,
    load_cursor,
    values,
)
from homeprice_assets.monitoring.settings import AutomationSettings
from homeprice_assets.training.assets import LIFECYCLE_TAG

MONITORING_TARGET = dg.AssetSelection.assets(SALE_FEATURES).downstream() - dg.AssetSelection.groups(
    "ingest", "features"
)


def first_start_watermark(instance: dg.DagsterInstance) -> int:
    """Storage id of the newest ``training_set``: data materialized before it has been seen by a model.

    A retrain sensor starting with no cursor (a fresh ``homeprice dev`` after ``homeprice run``) starts here,
    so it measures and retrains nothing the last lifecycle run already used; with no lifecycle run yet it
    starts at 0 and asks for one drift report, of the newest ready month.
    """
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=TRAINING_SET), limit=1).records
    return records[0].storage_id if records else 0


def build_retrain_sensor(settings: AutomationSettings, name: str = "retrain_sensor") -> dg.SensorDefinition:
    """Ready months -> drift report and/or retraining, by ``monitoring.automation.retrain_policy``.

    Waits for the blocking checks of the data the model consumes (raw, clean, features of that month): a
    month whose checks have not run yet stays pending, one whose checks failed is held back until it is
    materialized again or a person accepts it (``homeprice accept-month``). Targets everything downstream of
    ``sale_features`` outside ingest/features; a retrain materializes the ``retrain_group`` (default
    ``training``: the model lifecycle job's assets).
    """
    s = settings
    run_config = IN_PROCESS_RUN_CONFIG if s.in_process_runs else {}

    @dg.sensor(
        name=name,
        target=MONITORING_TARGET,
        minimum_interval_seconds=s.retrain_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Retraining by policy '{s.retrain_policy}': new ready months and/or drift.",
    )
    def retrain_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        instance = context.instance
        if context.cursor:
            state = load_cursor(context.cursor)
        else:
            start = first_start_watermark(instance)
            state = {"features_id": start, "drift_id": start, "accepted_id": start}
        features_id = int(state.get("features_id", 0))
        drift_id = int(state.get("drift_id", 0))
        accepted_id = int(state.get("accepted_id", features_id))
        pending: set[str] = set(state.get("pending", []))
        retrained_month = state.get("retrained_month", "")
        repo = context.repository_def

        for record in instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SALE_FEATURES, after_storage_id=features_id),
            limit=1000,
            ascending=True,
        ).records:
            if record.asset_materialization and record.asset_materialization.partition:
                pending.add(record.asset_materialization.partition)
            features_id = max(features_id, record.storage_id)
        # A person accepted a held-back month (an observation of its features): look at it again.
        for record in instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=SALE_FEATURES, after_storage_id=accepted_id),
            limit=1000,
            ascending=True,
        ).records:
            if record.asset_observation and record.asset_observation.partition:
                pending.add(record.asset_observation.partition)
            accepted_id = max(accepted_id, record.storage_id)

        checks = blocking_check_keys(repo)
        ready, blocked = [], []
        for month in sorted(pending):
            status = month_status(instance, month, checks)
            if status.state == "ready":
                ready.append(month)
            elif status.state == "blocked":
                blocked.append(month)
                context.log.warning(f"{month} held back from the model: failed {list(status.failed)}")
        pending -= set(ready) | set(blocked)

        graph = repo.asset_graph if repo else None
        present = graph.get_all_asset_keys() if graph else set()
        retrain_keys = sorted(
            (k for k in present if graph and graph.get(k).group_name == s.retrain_group),
            key=lambda k: k.to_user_string(),
        )
        wants_drift = s.retrain_policy in ("drift", "both")
        wants_new = s.retrain_policy in ("new_data", "both")
        requests: list[dg.RunRequest] = []
        notes: list[str] = []

        def retrain(reason: str, month: str, key: str) -> None:
            if not retrain_keys:
                notes.append(f"retrain wanted ({reason}, {month}) but no model lifecycle asset is defined")
                return
            requests.append(
                dg.RunRequest(
                    run_key=key,
                    asset_selection=retrain_keys,
                    # queued behind any other lifecycle run (dagster.yaml: one at a time)
                    tags={TRIGGER_TAG: reason, MONTH_TAG: month, LIFECYCLE_TAG: "true"},
                    run_config=run_config,
                )
            )

        if ready:
            newest = max(ready)  # one report and one retrain however many months became ready at once
            if wants_drift and (not repo or DRIFT_REPORT in present):
                requests.append(
                    dg.RunRequest(
                        run_key=f"drift_report:{newest}:{features_id}:{accepted_id}",
                        asset_selection=[DRIFT_REPORT],
                        tags={TRIGGER_TAG: "new_data", MONTH_TAG: newest},
                        run_config=run_config,
                    )
                )
            if wants_new:
                retrain("new_data", newest, f"retrain:new_data:{newest}:{features_id}:{accepted_id}")
                retrained_month = max(retrained_month, newest)

        for record in instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=DRIFT_REPORT, after_storage_id=drift_id),
            limit=100,
            ascending=True,
        ).records:
            drift_id = max(drift_id, record.storage_id)
            meta = values(record.asset_materialization.metadata if record.asset_materialization else {})
            drifted, month = bool(meta.get("dataset_drift", False)), str(meta.get("month", ""))
            # Under "both" a month already retrained for its new data is not retrained again for its drift.
            if drifted and wants_drift and not (s.retrain_policy == "both" and month <= retrained_month):
                retrain("drift", month, f"retrain:drift:{record.storage_id}")

        cursor = json.dumps(
            {
                "features_id": features_id,
                "drift_id": drift_id,
                "accepted_id": accepted_id,
                "pending": sorted(pending),
                "retrained_month": retrained_month,
            },
            sort_keys=True,
        )
        for note in notes:
            context.log.warning(note)
        skip = None
        if not requests:
            waiting = sorted(pending) or "none"
            skip = dg.SkipReason("; ".join(notes) or f"nothing new (pending months: {waiting})")
        return dg.SensorResult(run_requests=requests, cursor=cursor, skip_reason=skip)

    return retrain_sensor
