"""Live ground truth and the rollout evaluation as assets (thin: the logic is in groundtruth/evaluation).

``ground_truth`` (one partition per sale month) joins the month's clean sales to the prediction log;
``rollout_evaluation`` reads every ground-truth month, compares candidate and champion since the rollout
started, judges the live champion and writes the report. The ``rollout_actions`` sensor acts on it.
"""

import datetime as dt
import json
import os
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from homeprice_assets.config import homeprice_home
from homeprice_assets.ingest.status import blocking_check_keys, code_location, month_status
from homeprice_assets.partitions import sale_month_partitions
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.registry import ModelRegistry
from homeprice_assets.rollout import evaluation, report
from homeprice_assets.rollout.groundtruth import (
    GT_COLUMNS,
    join_ground_truth,
    live_by_version,
    metrics_by_model,
)
from homeprice_assets.rollout.state import current_state, offline_mdape, publish_live
from homeprice_assets.serving.predlog import read_predictions

ROLLOUT_EXPERIMENT = "homeprice-rollout"


class PredictionLogResource(dg.ConfigurableResource):
    """Where the service logs predictions (SQLAlchemy URL: SQLite by default, PostgreSQL in production)."""

    url: str | None = Field(
        default=None,
        description="default: $HOMEPRICE_PREDICTION_LOG_URL or SQLite predictions.db under the project home",
    )

    def resolved_url(self) -> str | None:
        return self.url or os.environ.get("HOMEPRICE_PREDICTION_LOG_URL") or None


def _md_table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".4f") if len(frame) else "no matched sales"


@dg.asset(
    partitions_def=sale_month_partitions,
    group_name="rollout",
    kinds={"pandas", "sql"},
    # A month's clean sales once updated, and only once its blocking checks have passed (the ingest step
    # stores the month before it judges it). Not ``eager()``: that also requests every month missing at the
    # sensor's first tick, a run per month of history that no live prediction could have valued.
    automation_condition=dg.AutomationCondition.any_deps_updated().since_last_handled()
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress(),
)
def ground_truth(
    context: dg.AssetExecutionContext,
    clean_sales: pd.DataFrame,
    settings: ProjectConfigResource,
    registry: ModelRegistry,
    prediction_log: PredictionLogResource,
) -> dg.Output[pd.DataFrame]:
    """The month's sales joined to the latest valuation of each home made before the sale (minus the
    embargo, within the horizon), per model version and role; live accuracy of each in metadata."""
    month = context.partition_key
    status = month_status(
        context.instance, month, blocking_check_keys(code_location(context), ["clean_sales"])
    )
    if status.state != "ready":  # a manual run or a backfill: sales the checks held back are no truth
        raise dg.Failure(
            f"ground_truth {month}: the month's clean sales are {status.state} "
            f"({', '.join(status.failed or status.waiting)}); ground truth waits for its blocking checks"
        )
    rollout = settings.get().rollout
    parcels = sorted(clean_sales["parcel_id"].dropna().astype(str).unique())
    predictions = read_predictions(
        prediction_log.resolved_url(), parcels, model_name=registry.get().model_name
    )
    rows, unmatched = join_ground_truth(
        clean_sales, predictions, rollout.embargo_days, rollout.horizon_months
    )
    by_model = metrics_by_model(rows)
    plot = report.write_accuracy_plot(rows, homeprice_home() / "reports" / "ground_truth" / f"{month}.png")
    context.log.info(f"{month}: {rows['sale_id'].nunique()} sale(s) matched, {unmatched} without a valuation")
    metadata: dict[str, object] = {
        "sales": len(clean_sales),
        "matched_sales": int(rows["sale_id"].nunique()),
        "sales_without_prediction": unmatched,
        "embargo_days": rollout.embargo_days,
        "horizon_months": rollout.horizon_months,
        "by_model": dg.MetadataValue.md(_md_table(by_model)),
        "accuracy_plot": dg.MetadataValue.path(str(plot)),
    }
    for r in by_model.itertuples():  # flat numbers: Dagster plots them across materializations
        key = f"v{r.model_version}_{r.model_role}"
        metadata.update(
            {f"{key}_n": int(r.n), f"{key}_mdape": float(r.mdape), f"{key}_ppe10": float(r.ppe10)}
        )
        metadata.update(
            {
                f"{key}_median_ratio": float(r.median_ratio),
                f"{key}_cod": float(r.cod),
                f"{key}_coverage": float(r.coverage),
            }
        )
    return dg.Output(rows[list(GT_COLUMNS)], metadata=metadata)


def _request_counts(url: str | None) -> tuple[float, float] | None:
    """(requests, 5xx) from the service's ``/metrics`` now; None without a URL or when it does not answer."""
    if not url:
        return None
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return evaluation.request_counts_from_metrics(response.read().decode())
    except OSError:
        return None


def _previous_counts(context: dg.AssetExecutionContext) -> tuple[float, float] | None:
    """The counters the last evaluation read (its metadata), so this one judges only what came since."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    total, errors = meta.get("requests_total"), meta.get("requests_5xx")
    if total is None or errors is None:
        return None
    return float(getattr(total, "value", total)), float(getattr(errors, "value", errors))


@dg.asset(
    group_name="rollout",
    kinds={"html", "mlflow"},
    ins={"ground_truth": dg.AssetIn(metadata={"allow_missing_partitions": True})},
    # since_last_handled: an update seen while the evaluation (or another month) was running still counts
    automation_condition=dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress(),
)
def rollout_evaluation(
    context: dg.AssetExecutionContext,
    ground_truth: Any,
    settings: ProjectConfigResource,
    registry: ModelRegistry,
) -> dg.MaterializeResult:
    """Candidate vs champion (sequential test + bootstrap) and the live champion vs the rollback rules."""
    if isinstance(ground_truth, pd.DataFrame):  # one partition only: the storage hands it over unwrapped
        months = ground_truth["sale_month"].dropna().unique()
        ground_truth = {str(months[0]) if len(months) else "single": ground_truth}
    rollout = settings.get().rollout
    reg = registry.get()
    state = current_state(reg)
    counts = _request_counts(rollout.metrics_url)
    frames = [f for f in ground_truth.values() if len(f)]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(GT_COLUMNS))
    comparison = evaluation.compare(rows, state, rollout) if state.active else None
    health = evaluation.champion_health(
        rows,
        state.champion,
        offline_mdape(reg, state.champion) if state.champion else None,
        rollout.rollback,
        evaluation.error_rate_since(counts, _previous_counts(context)),
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    facts = {
        "champion": state.champion,
        "candidate": state.candidate,
        "mode": state.mode,
        "started_at": state.started_at,
        "months": sorted(m for m, f in ground_truth.items() if len(f)),
        "evaluated_at": stamp,
    }
    path = report.write_report(
        homeprice_home() / "reports" / "rollout" / stamp / "rollout_evaluation.html",
        comparison,
        health,
        metrics_by_model(rows),
        facts,
    )
    with reg.run(
        f"rollout-evaluation-{stamp}", tags={"dagster_run_id": context.run_id}, experiment=ROLLOUT_EXPERIMENT
    ) as run:
        run.log_artifacts(path.parent, "rollout_evaluation")
        run.set_tags(
            {"decision": comparison.decision if comparison else "no_rollout", "champion": state.champion}
        )
        if comparison is not None:
            run.log_metrics(
                {
                    k: v
                    for k, v in comparison.figures().items()
                    if isinstance(v, int | float) and v is not None and k != "crossed_at"
                }
            )
    live = live_by_version(rows, rollout.live_window_months)
    if live:  # the services export these on their next registry poll (homeprice_live_* gauges)
        publish_live(reg, live, stamp)
    link = reg.run_link(run.run_id)
    decision = comparison.decision if comparison else "no_rollout"
    context.log.info(f"rollout: {decision}; champion v{state.champion}: {health.breaches or 'healthy'}")
    cfig = comparison.figures() if comparison else {}
    nan = float("nan")
    return dg.MaterializeResult(
        metadata={
            "decision": decision,
            "reason": cfig.get("reason", "no rollout running"),
            "champion_version": state.champion or "none",
            "candidate_version": state.candidate or "none",
            "mode": state.mode or "off",
            "n_pairs": int(cfig.get("n_pairs", 0)),
            "mdape_candidate": float(cfig.get("mdape_candidate") or float("nan")),
            "mdape_champion": float(cfig.get("mdape_champion") or float("nan")),
            "statistic": float(cfig.get("statistic", 0.0)),
            "boundary": float(cfig.get("boundary", 0.0)),
            "ci_mdape_difference": f"[{cfig.get('ci_low', nan):+.4f}, {cfig.get('ci_high', nan):+.4f}]",
            "comparison": dg.MetadataValue.json(cfig),
            "champion_broken": health.broken,
            "champion_health": dg.MetadataValue.json(json.loads(json.dumps(health.figures(), default=str))),
            "report": dg.MetadataValue.path(str(path)),
            "live_by_version": dg.MetadataValue.json(live),
            "mlflow_run_id": run.run_id,
            **({"mlflow_run": dg.MetadataValue.url(link)} if link else {}),
            **({"requests_total": counts[0], "requests_5xx": counts[1]} if counts else {}),
        }
    )
