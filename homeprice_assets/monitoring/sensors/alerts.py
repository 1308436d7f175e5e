"""Failures -> alerts: failed runs, failed checks (data, drift, price level, promotion gates), promotions.

Asset checks do not fail their run (dagster-io/dagster #29896), so the run-failure sensor never sees them;
the check-alert sensor reads check *evaluations* from the instance instead. A check that is only planned (its
run is still going) holds that check's cursor back until it is evaluated or its run ends, so no failure is
skipped because the sensor looked too early, and none is sent twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

from homeprice_assets.ingest.status import run_partition
from homeprice_assets.monitoring import messages
from homeprice_assets.monitoring.checks import DRIFT_CHECK_NAME
from homeprice_assets.monitoring.notify import Notifier
from homeprice_assets.monitoring.sensors.common import (
    DRIFT_REPORT,
    PROMOTED_MODEL,
    SALE_FEATURES,
    VALIDATION_REPORT,
    load_cursor,
    metadata_in_run,
    values,
)
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.registry import ModelRegistry, Registry

PRICE_LEVEL_CHECK = "price_level"


# --------------------------------------------------------------------------------------------- run failures
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
        alert = messages.run_failed(
            notifier.links,
            job_name=run.job_name,
            run_id=run.run_id,
            error=error,
            failed_steps=failed_steps,
            partition=run.tags.get("dagster/partition"),
        )
        notifier.send(alert, context.log)

    return run_failure_alert_sensor


# --------------------------------------------------------------------------------------------- checks
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


def _records_after(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, after: int, page: int = 200
) -> list[AssetCheckExecutionRecord]:
    """Every execution record of ``key`` newer than ``after``, oldest first (storage pages newest first)."""
    storage = instance.event_log_storage
    out: list[AssetCheckExecutionRecord] = []
    cursor = None
    while True:
        batch = storage.get_asset_check_execution_history(key, limit=page, cursor=cursor)
        newer = [r for r in batch if r.id > after]
        out.extend(newer)
        if len(batch) < page or len(newer) < len(batch):
            break
        cursor = batch[-1].id
    return sorted(out, key=lambda r: r.id)


def _run_finished(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is None or run.is_finished


def pending_evaluations(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, after: int, done: set[int]
) -> tuple[list[AssetCheckExecutionRecord], int, set[int], bool]:
    """(evaluated records to handle, new watermark, ids handled above it, waiting?) for one check.

    The watermark only moves over records that are settled: evaluated, or planned in a run that ended
    without evaluating them (skipped). A planned record of a running run stops it; evaluated records after
    that are handled now and remembered in ``done`` so they are not handled again.
    """
    evaluated: list[AssetCheckExecutionRecord] = []
    watermark, waiting = after, False
    done = set(done)
    for record in _records_after(instance, key, after):
        if record.id in done:
            settled = True
        elif record.status == AssetCheckExecutionRecordStatus.PLANNED:
            settled = _run_finished(instance, record.run_id)
        else:
            evaluated.append(record)
            settled = True
        if not settled:
            waiting = True
        elif waiting:
            done.add(record.id)
        else:
            watermark = record.id
    return evaluated, watermark, {i for i in done if i > watermark}, waiting


def build_check_alert_sensor(
    interval_seconds: int = 60, name: str = "check_alert_sensor", alert_on_warn: bool | None = None
) -> dg.SensorDefinition:
    """Failed asset check evaluations -> alerts, each exactly once."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Failed asset checks (ERROR severity; WARN too if configured) and drift become alerts.",
    )
    def check_alert_sensor(
        context: dg.SensorEvaluationContext,
        notifier: Notifier,
        settings: ProjectConfigResource,
        registry: ModelRegistry,
    ) -> dg.SensorResult:
        """Cursor: {"after": {check: watermark id}, "done": {check: [ids above it already handled]}}.

        Each tick also delivers what a channel failed to take before (``Notifier.retry_pending``)."""
        notifier.retry_pending(context.log)
        warn = settings.get().alerts.alert_on_warn_checks if alert_on_warn is None else alert_on_warn
        reg = registry.get()
        state = load_cursor(context.cursor)
        if "after" not in state:  # the cursor of earlier releases: {check: newest id handled}
            state = {"after": {k: int(v) for k, v in state.items()}, "done": {}}
        after: dict[str, int] = state["after"]
        done: dict[str, list[int]] = state.get("done", {})
        repo = context.repository_def
        keys: Sequence[dg.AssetCheckKey] = sorted(
            repo.asset_graph.asset_check_keys if repo else [], key=lambda k: k.to_user_string()
        )
        instance = context.instance
        alerts: list[messages.Alert] = []
        blocked: dict[str, dict[str, dict[str, Any]]] = {}  # run id -> gate -> figures
        waiting: list[str] = []
        for key in keys:
            name_ = key.to_user_string()
            records, after[name_], still, wait = pending_evaluations(
                instance, key, int(after.get(name_, 0)), set(done.get(name_, []))
            )
            if still:
                done[name_] = sorted(still)
            else:
                done.pop(name_, None)
            if wait:
                waiting.append(name_)
            for record in records:
                evaluation = record.event.dagster_event.event_specific_data if record.event else None
                if evaluation is None or getattr(evaluation, "passed", True):
                    continue
                is_drift = key.name == DRIFT_CHECK_NAME
                if not is_drift and evaluation.severity != dg.AssetCheckSeverity.ERROR and not warn:
                    continue
                meta = values(evaluation.metadata)
                if is_drift:
                    alerts.append(_drift_alert(instance, notifier, record.run_id, meta))
                elif key.asset_key == VALIDATION_REPORT:
                    blocked.setdefault(record.run_id, {})[key.name] = meta
                elif key.asset_key == SALE_FEATURES and key.name == PRICE_LEVEL_CHECK:
                    alerts.append(_price_level_alert(instance, notifier, record, meta))
                else:
                    failed, total = failed_rows_of(meta)
                    alerts.append(
                        messages.data_validation_failed(
                            notifier.links,
                            asset=key.asset_key.to_user_string(),
                            check=key.name,
                            failed_rows=failed,
                            total_rows=total,
                            partition=record.partition or run_partition(instance, record.run_id),
                            description=evaluation.description,
                            run_id=record.run_id,
                        )
                    )
        alerts.extend(
            _blocked_alert(instance, notifier, reg, run_id, gates) for run_id, gates in blocked.items()
        )
        for alert in alerts:
            notifier.send(alert, context.log)
        note = f"; waiting for planned check(s) {waiting}" if waiting else ""
        return dg.SensorResult(
            cursor=json.dumps({"after": after, "done": done}, sort_keys=True),
            skip_reason=dg.SkipReason(f"{len(alerts)} failed check(s) alerted{note}"),
        )

    return check_alert_sensor


def _drift_alert(
    instance: dg.DagsterInstance, notifier: Notifier, run_id: str, check_meta: dict[str, Any]
) -> messages.Alert:
    """The drift alert, with per-feature scores and the MLflow run from the report's materialization."""
    meta = metadata_in_run(instance, DRIFT_REPORT, run_id)
    scores: dict[str, float] = meta.get("feature_scores") or check_meta.get("top_scores") or {}
    drifted_names = meta.get("drifted_features") or check_meta.get("drifted_features") or []
    strong = check_meta.get("strongly_drifted") or []
    drifted = {f: float(scores.get(f, float("nan"))) for f in [*drifted_names, *strong]}
    target = meta.get("target_drift_score")
    return messages.drift_detected(
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
        decision=str(meta["decision"]) if meta.get("decision") else None,
    )


def _price_level_alert(
    instance: dg.DagsterInstance, notifier: Notifier, record: AssetCheckExecutionRecord, meta: dict[str, Any]
) -> messages.Alert:
    def number(key: str) -> float | None:
        value = meta.get(key)
        return float(value) if isinstance(value, int | float) and value >= 0 else None

    month = str(meta.get("month") or record.partition or run_partition(instance, record.run_id))
    change = meta.get("change")
    return messages.month_needs_confirmation(
        notifier.links,
        month=month,
        level=number("median_price_per_sf"),
        reference=number("reference_price_per_sf"),
        change=float(change) if isinstance(change, int | float) else None,
        max_change=float(meta.get("max_change", 0.0)),
        run_id=record.run_id,
    )


def _mlflow_run_of(registry: Registry, version: str | None) -> tuple[str | None, str | None]:
    """(run id, experiment id) behind a registered model version, when the registry can say."""
    if not version or version in ("none", "?"):
        return None, None
    try:
        run_id = registry.get_version(version).run_id
        return run_id, registry.client.get_run(run_id).info.experiment_id
    except Exception:
        return None, None


def _blocked_alert(
    instance: dg.DagsterInstance,
    notifier: Notifier,
    registry: Registry,
    run_id: str,
    gates: dict[str, dict[str, Any]],
) -> messages.Alert:
    """One alert per blocked challenger, naming every gate it failed with that gate's figures."""
    report = metadata_in_run(instance, VALIDATION_REPORT, run_id)
    version = str(report.get("challenger_version", "?"))
    name = registry.model_name
    mlflow_run, experiment = _mlflow_run_of(registry, version)
    figures = {g: {k: v for k, v in m.items() if isinstance(v, int | float | str)} for g, m in gates.items()}
    return messages.promotion_blocked(
        notifier.links,
        model_name=name,
        version=version,
        gates=figures,
        reason=str(report.get("reason") or ""),
        run_id=run_id,
        mlflow_run_id=mlflow_run,
        mlflow_experiment_id=experiment,
    )


# --------------------------------------------------------------------------------------------- promotions
def _rollout_started_alert(
    reg: Registry, meta: dict[str, Any], notifier: Notifier, run_id: str
) -> messages.Alert:
    """A validated version entered a live rollout: the action recorded on it in the registry, as an alert."""
    from homeprice_assets.rollout.sensors import action_alert
    from homeprice_assets.rollout.state import Action

    version = str(meta.get("candidate_version"))
    recorded = reg.get_version(version).tags.get(f"rollout.{meta['rollout_action']}")
    action = Action(**json.loads(recorded)) if recorded else Action("start", version, str(meta.get("reason")))
    return action_alert(action, reg.model_name, notifier.links.dagster_run(run_id))


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
    def promotion_alert_sensor(
        context: dg.SensorEvaluationContext, notifier: Notifier, registry: ModelRegistry
    ) -> dg.SkipReason:
        reg = registry.get()
        after = int(load_cursor(context.cursor).get("promoted_id", 0))
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=PROMOTED_MODEL, after_storage_id=after), limit=100, ascending=True
        ).records
        sent = 0
        for record in records:
            after = max(after, record.storage_id)
            meta = values(record.asset_materialization.metadata if record.asset_materialization else {})
            if meta.get("alerted"):  # recorded by the rollout sensor, which sent its own alert
                continue
            if meta.get("rollout_action") in ("start", "replace"):
                notifier.send(_rollout_started_alert(reg, meta, notifier, record.run_id), context.log)
                sent += 1
                continue
            if not meta.get("changed"):
                continue
            report = metadata_in_run(context.instance, VALIDATION_REPORT, record.run_id)
            model = reg.model_name
            new = str(meta.get("champion_version"))
            old = meta.get("previous_version")
            mlflow_run, experiment = _mlflow_run_of(reg, new)
            new_value = report.get(f"challenger_{metric}")
            old_value = report.get(f"champion_{metric}")
            alert = messages.promotion_succeeded(
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
