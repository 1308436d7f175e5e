"""``drift_report``: the newest ready month against the training window, as an Evidently report.

Only months whose blocking checks passed enter either side, so a month held back from the model is not
measured against it either. The month to measure comes from the run tag ``homeprice/month`` (set by the
retrain sensor) or is the newest ready month.
"""

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from homeprice_assets.config import homeprice_home
from homeprice_assets.features.engineering import FEATURES, INPUT_FIELDS
from homeprice_assets.ingest.status import blocking_check_keys, code_location, month_status
from homeprice_assets.monitoring.checks import DRIFT_CHECK, drift_within_threshold
from homeprice_assets.monitoring.drift import (
    PREDICTION,
    TARGET,
    DriftSummary,
    compute_drift,
    sample_reference,
)
from homeprice_assets.monitoring.sensors.common import MONTH_TAG
from homeprice_assets.monitoring.settings import DriftSettings
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.registry import ModelRegistry, Registry
from homeprice_assets.resources.storage import COLUMNS, LAZY_PARTITIONS

log = logging.getLogger(__name__)


# What drift reads of each month: the features it measures, the target, and the champion's inputs.
DRIFT_COLUMNS = list(dict.fromkeys([*FEATURES, TARGET, *INPUT_FIELDS]))


def _read(month: Callable[[], pd.DataFrame] | pd.DataFrame) -> pd.DataFrame:
    """A month's frame, from its lazy loader (or as given, from an IO manager that reads eagerly)."""
    return month() if callable(month) else month


def choose_months(
    months: Iterable[str], is_ready: Callable[[str], bool], current: str | None, reference_months: int
) -> tuple[str, list[str], list[str]]:
    """(current month, reference months, held-back months seen): the reference is the window of ready
    months just before the current one (the newest ready month unless named).

    Months are judged newest first and only until the window is full: a month's readiness costs reads of
    the event log, so the cost follows the window, not the whole history. Held back: months judged not ready.
    """
    ordered = sorted(months, reverse=True)
    held_back: list[str] = []
    if current is not None:
        if current not in ordered or not is_ready(current):
            raise dg.Failure(
                f"drift_report: month {current} is not ready (missing, or blocking checks failed)"
            )
    else:
        for month in ordered:
            if is_ready(month):
                current = month
                break
            held_back.append(month)
        if current is None:
            raise dg.Failure("drift_report: no sale month has passed its blocking checks yet")
    reference: list[str] = []
    for month in (m for m in ordered if m < current):
        if reference_months and len(reference) >= reference_months:
            break
        (reference if is_ready(month) else held_back).append(month)
    if not reference:
        raise dg.Failure(f"drift_report: no ready month before {current} to compare it with")
    return current, sorted(reference), sorted(held_back)


def _champion_predictions(
    registry: Registry, settings: DriftSettings, frames: dict[str, pd.DataFrame], context_log: Any
) -> dict[str, pd.DataFrame]:
    """Add the serving champion's predictions to each frame, when there is a champion; else unchanged."""
    if not settings.prediction_drift:
        return frames
    try:
        champion = registry.version(settings.champion_alias)
        if champion is None:
            raise LookupError(f"no '{settings.champion_alias}' alias")
        model, _ = registry.load(champion.version)
    except Exception as exc:  # no registry, no model, no champion yet: prediction drift is simply absent
        context_log.info(f"prediction drift skipped: no champion model ({type(exc).__name__}: {exc})")
        return frames
    out = {}
    for name, frame in frames.items():
        inputs = frame[[c for c in INPUT_FIELDS if c in frame]].copy()
        predicted = model.predict(inputs)
        if isinstance(predicted, pd.DataFrame):
            column = next(
                (c for c in ("price", "prediction", "predicted_price") if c in predicted),
                predicted.columns[0],
            )
            predicted = predicted[column]
        out[name] = frame.assign(**{PREDICTION: pd.Series(list(predicted), index=frame.index, dtype=float)})
    return out


def _log_to_mlflow(
    registry: Registry,
    summary: DriftSummary,
    settings: DriftSettings,
    reference: list[str],
    dagster_run_id: str,
) -> tuple[str, str]:
    """Log the HTML and JSON as artifacts of an MLflow run (through the registry's client, no global
    state); returns (run id, experiment id)."""
    tags = {
        "homeprice.kind": "drift_report",
        "dagster.run_id": dagster_run_id,
        "homeprice.month": summary.current_label,
    }
    with registry.run(
        f"drift-{summary.current_label}", tags=tags, experiment=settings.mlflow_experiment
    ) as run:
        run.log_params(
            {
                "current_month": summary.current_label,
                "reference_from": reference[0],
                "reference_to": reference[-1],
                "reference_rows": summary.reference_rows,
                "reference_rows_used": summary.reference_rows_used,
                "current_rows": summary.current_rows,
                "drift_share_threshold": summary.threshold,
                "stattest_threshold": settings.stattest_threshold,
                "feature_score_threshold": settings.feature_score_threshold,
            }
        )
        metrics = {"drift_share": summary.drift_share, "dataset_drift": float(summary.dataset_drift)}
        metrics.update({f"drift_score.{c}": d.score for c, d in summary.columns.items()})
        run.log_metrics(metrics)
        for path in (summary.html_path, summary.json_path):
            if path:
                run.log_artifact(path, artifact_path="drift")
    return run.run_id, run.experiment_id


@dg.asset(
    group_name="monitoring",
    kinds={"evidently", "mlflow"},
    check_specs=[DRIFT_CHECK],
    # A registered month whose ingest failed has no data yet: leave it out rather than fail. Months are
    # read lazily (only the current month and its reference window), and only the columns drift measures.
    ins={
        "sale_features": dg.AssetIn(
            metadata={"allow_missing_partitions": True, LAZY_PARTITIONS: True, COLUMNS: DRIFT_COLUMNS}
        )
    },
)
def drift_report(
    context: dg.AssetExecutionContext,
    sale_features: dict[str, Any],  # month -> loader (lazy partitions)
    settings: ProjectConfigResource,
    registry: ModelRegistry,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Data, target and prediction drift of the newest month against the training window (Evidently)."""
    config = settings.get()
    drift = config.monitoring.drift
    reg = registry.get()
    checks = blocking_check_keys(code_location(context))
    runs: dict = {}  # ingest runs' check evaluations, read once for all months
    current, reference, held_back = choose_months(
        sale_features,
        lambda m: month_status(context.instance, m, checks, runs).state == "ready",
        context.run.tags.get(MONTH_TAG),
        drift.reference_months,
    )
    whole = pd.concat([_read(sale_features[m]) for m in reference], ignore_index=True)
    # Sampled before the champion scores it: at millions of reference sales, scoring all of them cost more
    # than the report. The sample size is in the metadata (reference_rows_used of reference_rows).
    frames = {"reference": sample_reference(whole, drift), "current": _read(sale_features[current])}
    reference_rows = len(whole)
    del whole
    frames = _champion_predictions(reg, drift, frames, context.log)
    window = f"{reference[0]}..{reference[-1]} ({len(reference)} months)"

    out_dir = homeprice_home() / "reports" / "drift" / current
    summary = compute_drift(
        frames["reference"],
        frames["current"],
        drift,
        out_dir,
        current_label=current,
        reference_label=window,
        reference_rows=reference_rows,
    )
    context.log.info(
        f"drift {current} vs {reference[0]}..{reference[-1]}: share {summary.drift_share:.2f}, "
        f"drifted {summary.drifted_features}, dataset drift {summary.dataset_drift}"
    )
    mlflow_meta: dict[str, Any] = {}
    try:
        run_id, experiment_id = _log_to_mlflow(reg, summary, drift, reference, context.run_id)
    except Exception as exc:  # the report on disk and in Dagster is still worth having
        context.log.warning(f"drift report not logged to MLflow: {exc!r}")
    else:
        mlflow_meta = {"mlflow_run_id": run_id, "mlflow_experiment_id": experiment_id}
        base = reg.ui_url or config.alerts.mlflow_base_url
        if base:
            mlflow_meta["mlflow_run"] = dg.MetadataValue.url(
                f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
            )

    scores = summary.feature_scores
    table = pd.DataFrame(
        [
            {
                "column": d.column,
                "kind": d.kind,
                "method": d.method,
                "threshold": d.threshold,
                "score": d.score,
                "drifted": d.drifted,
            }
            for d in summary.columns.values()
        ]
    )
    score_md = "| feature | score | drifted |\n|---|---|---|\n" + "\n".join(
        f"| {c} | {s:.4f} | {'yes' if summary.columns[c].drifted else ''} |"
        for c, s in sorted(scores.items(), key=lambda kv: -kv[1])
    )
    yield dg.Output(
        table,
        metadata={
            "month": current,
            "reference_months": window,
            "held_back_months": dg.MetadataValue.json(held_back),
            "reference_rows": summary.reference_rows,
            "reference_rows_used": summary.reference_rows_used,
            "current_rows": summary.current_rows,
            "dataset_drift": summary.dataset_drift,
            "decision": summary.decision,
            "stattest_threshold": drift.stattest_threshold or -1.0,
            "feature_score_threshold": drift.feature_score_threshold or -1.0,
            "drift_share": summary.drift_share,
            "drift_share_threshold": summary.threshold,
            "drifted_features": dg.MetadataValue.json(summary.drifted_features),
            "feature_scores": dg.MetadataValue.json(scores),
            "scores_table": dg.MetadataValue.md(score_md),
            "target_drift": str(summary.target_drift),
            "target_drift_score": summary.score("sale_price") if summary.target_drift is not None else -1.0,
            "prediction_drift": str(summary.prediction_drift),
            "method": summary.method,
            "report_html": dg.MetadataValue.path(str(summary.html_path)),
            "report_url": dg.MetadataValue.url(Path(str(summary.html_path)).as_uri()),
            "summary_json": dg.MetadataValue.path(str(summary.json_path)),
            **mlflow_meta,
        },
    )
    yield drift_within_threshold(summary, drift.feature_score_threshold)
