"""Sensors that run homeprice unattended: landing -> ingest, ready data -> drift/retrain, failures -> alerts.

Every sensor keeps its progress in its cursor (JSON) and sets run keys, so a restarted daemon neither loses
nor repeats work: a lost cursor at worst re-requests runs that Dagster then drops by their run key.
"""

import json
from collections.abc import Sequence
from typing import Any

import dagster as dg

from homeprice_assets.ingest.jobs import ingest_job
from homeprice_assets.monitoring import notify
from homeprice_assets.monitoring.assets import MONTH_TAG
from homeprice_assets.monitoring.checks import DRIFT_CHECK_NAME
from homeprice_assets.monitoring.notify import Notifier
from homeprice_assets.monitoring.settings import AutomationSettings, alert_settings, monitoring_settings
from homeprice_assets.monitoring.status import (
    blocking_check_keys,
    month_status,
    run_partition,
)
from homeprice_assets.partitions import sale_month_partitions
from homeprice_assets.resources.landing import LANDED_DIGEST_TAG, LandingZone, month_digest

TRIGGER_TAG = "homeprice/trigger"
DRIFT_REPORT = dg.AssetKey("drift_report")
# Promotion gates are blocking checks on validation_report; promoted_model moves the champion alias.
VALIDATION_REPORT = dg.AssetKey("validation_report")
PROMOTED_MODEL = dg.AssetKey("promoted_model")
SALE_FEATURES = dg.AssetKey("sale_features")


def _load(cursor: str | None) -> dict[str, Any]:
    return json.loads(cursor) if cursor else {}


# --------------------------------------------------------------------------------------------- landing
def build_landing_sensor(interval_seconds: int = 60, name: str = "landing_sensor") -> dg.SensorDefinition:
    @dg.sensor(
        name=name,
        target=ingest_job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="A new or changed file in the landing zone starts the ingest run of its sale month.",
    )
    def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult:
        """Cursor: {file key: fingerprint} of every file already requested."""
        seen: dict[str, str] = _load(context.cursor).get("files", {})
        files = landing.list_files()
        changed = [f for f in files if seen.get(f.key) != f.fingerprint]
        months = sorted({f.month for f in changed})
        known = set(context.instance.get_dynamic_partitions(sale_month_partitions.name))
        new_months = [m for m in months if m not in known]
        requests = []
        for month in months:
            # The run key names the month's exact content: the same files never run twice, a change does.
            digest = month_digest(files, month)
            requests.append(
                dg.RunRequest(
                    run_key=f"ingest:{month}:{digest}",
                    partition_key=month,
                    tags={TRIGGER_TAG: "landing", MONTH_TAG: month, LANDED_DIGEST_TAG: digest},
                )
            )
        if requests:
            context.log.info(f"landing: {len(changed)} new/changed file(s) -> months {months}")
        seen.update({f.key: f.fingerprint for f in changed})
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[sale_month_partitions.build_add_request(new_months)]
            if new_months
            else [],
            cursor=json.dumps({"files": seen}, sort_keys=True),
            skip_reason=None if requests else dg.SkipReason(f"no new files in {landing.describe()}"),
        )

    return landing_sensor


# --------------------------------------------------------------------------------------------- retrain
MONITORING_TARGET = dg.AssetSelection.assets(SALE_FEATURES).downstream() - dg.AssetSelection.groups(
    "ingest", "features"
)


def build_retrain_sensor(
    settings: AutomationSettings | None = None, name: str = "retrain_sensor"
) -> dg.SensorDefinition:
    """Ready months -> drift report and/or retraining, by ``monitoring.automation.retrain_policy``.

    Waits for the blocking checks of the data the model consumes (raw, clean, features of that month): a
    month whose checks have not run yet stays pending, one whose checks failed is held back until it is
    materialized again. Targets everything downstream of ``sale_features`` outside ingest/features; a
    retrain materializes the ``retrain_group`` (default ``training``: the model lifecycle job's assets).
    """
    s = settings or monitoring_settings().automation

    @dg.sensor(
        name=name,
        target=MONITORING_TARGET,
        minimum_interval_seconds=s.retrain_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Retraining by policy '{s.retrain_policy}': new ready months and/or drift.",
    )
    def retrain_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        state = _load(context.cursor)
        features_id = int(state.get("features_id", 0))
        drift_id = int(state.get("drift_id", 0))
        pending: set[str] = set(state.get("pending", []))
        retrained_month = state.get("retrained_month", "")
        instance = context.instance
        repo = context.repository_def

        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SALE_FEATURES, after_storage_id=features_id),
            limit=1000,
            ascending=True,
        ).records
        for record in records:
            if record.asset_materialization and record.asset_materialization.partition:
                pending.add(record.asset_materialization.partition)
            features_id = max(features_id, record.storage_id)

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
                    tags={TRIGGER_TAG: reason, MONTH_TAG: month},
                )
            )

        if ready:
            newest = max(ready)
            if wants_drift and (not repo or DRIFT_REPORT in present):
                requests.append(
                    dg.RunRequest(
                        run_key=f"drift_report:{newest}:{features_id}",
                        asset_selection=[DRIFT_REPORT],
                        tags={TRIGGER_TAG: "new_data", MONTH_TAG: newest},
                    )
                )
            if wants_new:
                retrain("new_data", newest, f"retrain:new_data:{newest}:{features_id}")
                retrained_month = max(retrained_month, newest)

        drift_records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=DRIFT_REPORT, after_storage_id=drift_id),
            limit=100,
            ascending=True,
        ).records
        for record in drift_records:
            drift_id = max(drift_id, record.storage_id)
            meta = record.asset_materialization.metadata if record.asset_materialization else {}
            drifted = bool(getattr(meta.get("dataset_drift"), "value", False))
            month = str(getattr(meta.get("month"), "value", ""))
            # Under "both" a month already retrained for its new data is not retrained again for its drift.
            if drifted and wants_drift and not (s.retrain_policy == "both" and month <= retrained_month):
                retrain("drift", month, f"retrain:drift:{record.storage_id}")

        cursor = json.dumps(
            {
                "features_id": features_id,
                "drift_id": drift_id,
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


# --------------------------------------------------------------------------------------------- alerts
def build_run_failure_sensor(name: str = "run_failure_alert_sensor") -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name=name,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Every failed run of this code location becomes an alert.",
    )
    def run_failure_alert_sensor(context: dg.RunFailureSensorContext, notifier: Notifier) -> None:
        run = context.dagster_run
        failed_steps = [e.step_key for e in context.get_step_failure_events() if e.step_key]
        error = context.failure_event.message if context.failure_event else None
        for step_event in context.get_step_failure_events():
            data = step_event.event_specific_data
            if data is not None and getattr(data, "error", None) is not None:
                error = data.error.message
                break
        alert = notify.run_failed(
            notifier.links,
            job_name=run.job_name,
            run_id=run.run_id,
            error=error,
            failed_steps=failed_steps,
            partition=run.tags.get("dagster/partition"),
        )
        notifier.send(alert, context.log)

    return run_failure_alert_sensor


_FAILED_ROW_KEYS = (
    "failed_rows",
    "quarantined_rows",
    "duplicate_sale_ids",
    "rows_with_infinite_values",
)
_TOTAL_ROW_KEYS = ("raw_rows", "rows", "total_rows")


def failed_rows_of(metadata: dict[str, Any]) -> tuple[int | None, int | None]:
    """(failing rows, total rows) from a check's metadata, whichever names it uses."""

    def number(keys: Sequence[str]) -> int | None:
        return next((int(metadata[k]) for k in keys if isinstance(metadata.get(k), int | float)), None)

    failed = number(_FAILED_ROW_KEYS)
    if failed is None:  # value_ranges-style metadata: one count per rule
        from homeprice_assets.ingest.rules import RULES

        per_rule = [int(v) for k, v in metadata.items() if k in RULES and isinstance(v, int | float)]
        failed = sum(per_rule) if per_rule else None
    total = number(_TOTAL_ROW_KEYS)
    return failed, total


def build_check_alert_sensor(
    interval_seconds: int = 60, name: str = "check_alert_sensor", alert_on_warn: bool | None = None
) -> dg.SensorDefinition:
    """Failed asset checks -> alerts. They do not fail their run (dagster-io/dagster #29896), so the
    run-failure sensor never sees them; this reads the check evaluations in the instance instead."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Failed asset checks (ERROR severity; WARN too if configured) and drift become alerts.",
    )
    def check_alert_sensor(context: dg.SensorEvaluationContext, notifier: Notifier) -> dg.SkipReason:
        """Cursor: {check key: id of the newest execution record already handled}."""
        warn = alert_settings().alert_on_warn_checks if alert_on_warn is None else alert_on_warn
        state: dict[str, int] = _load(context.cursor)
        repo = context.repository_def
        keys: Sequence[dg.AssetCheckKey] = sorted(
            repo.asset_graph.asset_check_keys if repo else [], key=lambda k: k.to_user_string()
        )
        storage = context.instance.event_log_storage
        sent = 0
        for key in keys:
            last = int(state.get(key.to_user_string(), 0))
            history = [r for r in storage.get_asset_check_execution_history(key, limit=100) if r.id > last]
            for record in sorted(history, key=lambda r: r.id):
                state[key.to_user_string()] = record.id
                evaluation = record.event.dagster_event.event_specific_data if record.event else None
                if evaluation is None or getattr(evaluation, "passed", True):
                    continue
                is_drift = key.name == DRIFT_CHECK_NAME
                if not is_drift and evaluation.severity != dg.AssetCheckSeverity.ERROR and not warn:
                    continue
                meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
                if is_drift:
                    alert = _drift_alert(context.instance, notifier, record.run_id, meta)
                elif key.asset_key == VALIDATION_REPORT:
                    alert = _blocked_alert(context.instance, notifier, record.run_id, key.name, meta)
                else:
                    failed, total = failed_rows_of(meta)
                    alert = notify.data_validation_failed(
                        notifier.links,
                        asset=key.asset_key.to_user_string(),
                        check=key.name,
                        failed_rows=failed,
                        total_rows=total,
                        partition=run_partition(context.instance, record.run_id),
                        description=evaluation.description,
                        run_id=record.run_id,
                    )
                notifier.send(alert, context.log)
                sent += 1
        context.update_cursor(json.dumps(state, sort_keys=True))
        return dg.SkipReason(f"{sent} failed check(s) alerted")

    return check_alert_sensor


def _drift_alert(
    instance: dg.DagsterInstance, notifier: Notifier, run_id: str, check_meta: dict[str, Any]
) -> notify.Alert:
    """The drift alert, with per-feature scores and the MLflow run from the report's materialization."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=DRIFT_REPORT), limit=20).records
    mat = next((r.asset_materialization for r in records if r.run_id == run_id), None)
    meta = {k: getattr(v, "value", v) for k, v in (mat.metadata if mat else {}).items()}
    scores: dict[str, float] = meta.get("feature_scores") or check_meta.get("top_scores") or {}
    drifted_names = meta.get("drifted_features") or check_meta.get("drifted_features") or []
    strong = check_meta.get("strongly_drifted") or []
    drifted = {f: float(scores.get(f, float("nan"))) for f in [*drifted_names, *strong]}
    target = meta.get("target_drift_score")
    return notify.drift_detected(
        notifier.links,
        month=str(meta.get("month") or check_meta.get("month")),
        drifted=drifted,
        share=float(meta.get("drift_share", check_meta.get("drift_share", 0.0))),
        threshold=float(meta.get("drift_share_threshold", check_meta.get("drift_share_threshold", 0.0))),
        method=str(meta.get("method", "Evidently")),
        target_score=float(target) if isinstance(target, int | float) and target >= 0 else None,
        report_path=meta.get("report_html"),
        run_id=run_id,
        mlflow_run_id=meta.get("mlflow_run_id"),
        mlflow_experiment_id=meta.get("mlflow_experiment_id"),
    )


def _metadata_in_run(instance: dg.DagsterInstance, asset: dg.AssetKey, run_id: str) -> dict[str, Any]:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset), limit=20).records
    mat = next((r.asset_materialization for r in records if r.run_id == run_id), None)
    return {k: getattr(v, "value", v) for k, v in (mat.metadata if mat else {}).items()}


def _mlflow_run_of(model_name: str, version: str | None) -> tuple[str | None, str | None]:
    """(run id, experiment id) behind a registered model version, when the registry can say."""
    if not version or version == "none":
        return None, None
    try:
        from mlflow import MlflowClient

        from homeprice_assets.config import mlflow_tracking_uri

        client = MlflowClient(tracking_uri=mlflow_tracking_uri())
        run_id = client.get_model_version(model_name, str(version)).run_id
        return run_id, client.get_run(run_id).info.experiment_id
    except Exception:
        return None, None


def _model_name() -> str:
    return monitoring_settings().drift.model_name


def _blocked_alert(
    instance: dg.DagsterInstance, notifier: Notifier, run_id: str, gate: str, check_meta: dict[str, Any]
) -> notify.Alert:
    report = _metadata_in_run(instance, VALIDATION_REPORT, run_id)
    version = str(report.get("challenger_version", "?"))
    name = _model_name()
    mlflow_run, experiment = _mlflow_run_of(name, version)
    figures = {k: v for k, v in check_meta.items() if isinstance(v, int | float | str)}
    if report.get("reason"):
        figures["reason"] = report["reason"]
    return notify.promotion_blocked(
        notifier.links,
        model_name=name,
        version=version,
        gate=gate,
        figures=figures,
        run_id=run_id,
        mlflow_run_id=mlflow_run,
        mlflow_experiment_id=experiment,
    )


def build_promotion_alert_sensor(
    interval_seconds: int = 60, name: str = "promotion_alert_sensor", metric: str = "mdape"
) -> dg.SensorDefinition:
    """A champion that changed becomes an alert with the old and new version and the metric change."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Promotions (promoted_model materializations that moved the champion) become alerts.",
    )
    def promotion_alert_sensor(context: dg.SensorEvaluationContext, notifier: Notifier) -> dg.SkipReason:
        after = int(_load(context.cursor).get("promoted_id", 0))
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=PROMOTED_MODEL, after_storage_id=after), limit=100, ascending=True
        ).records
        sent = 0
        for record in records:
            after = max(after, record.storage_id)
            meta = {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}
            if not meta.get("changed"):
                continue
            report = _metadata_in_run(context.instance, VALIDATION_REPORT, record.run_id)
            model_uri = str(meta.get("model_uri", ""))
            model = model_uri.removeprefix("models:/").split("@")[0] or _model_name()
            new = str(meta.get("champion_version"))
            old = meta.get("previous_version")
            mlflow_run, experiment = _mlflow_run_of(model, new)
            new_value = report.get(f"challenger_{metric}")
            old_value = report.get(f"champion_{metric}")
            alert = notify.promotion_succeeded(
                notifier.links,
                model_name=model,
                old_version=None if old in (None, "none") else str(old),
                new_version=new,
                metric=metric,
                old_value=float(old_value) if isinstance(old_value, int | float) else None,
                new_value=float(new_value) if isinstance(new_value, int | float) else float("nan"),
                run_id=record.run_id,
                mlflow_run_id=mlflow_run,
                mlflow_experiment_id=experiment,
            )
            notifier.send(alert, context.log)
            sent += 1
        context.update_cursor(json.dumps({"promoted_id": after}))
        return dg.SkipReason(f"{sent} promotion(s) alerted")

    return promotion_alert_sensor
