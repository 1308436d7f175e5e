"""The model lifecycle: split -> train (challenger) -> validate vs champion -> promote -> explain -> document.

MLflow's registry is the store of record for models: ``price_model`` registers a version under the alias
``challenger``; ``promoted_model`` moves ``champion`` (and ``previous``, for rollback) only after the
blocking promotion gates on ``validation_report`` passed. Reports are files under the project home, logged
to the challenger's MLflow run too.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from homeprice_assets.config import homeprice_home
from homeprice_assets.features.engineering import FEATURES, INPUT_FIELDS
from homeprice_assets.ingest.status import blocking_check_keys, month_status
from homeprice_assets.resources.mlflow import MlflowTracking
from homeprice_assets.training import promotion, reports
from homeprice_assets.training.baseline import fit_baseline
from homeprice_assets.training.model import DEFAULT_PARAMS, fit_price_model
from homeprice_assets.training.promotion import decision, evaluate_gates
from homeprice_assets.training.settings import promotion_settings, training_settings
from homeprice_assets.training.splits import time_split
from homeprice_assets.training.tracking import (
    CHALLENGER,
    CHAMPION,
    FeatureMismatchError,
    alias_version,
    check_feature_mismatch,
    input_example,
    load_price_model,
    log_price_model,
    model_uri,
    promote,
    set_alias,
)

# One blocking check per promotion gate, named and described where the gate is defined (promotion.py).
GATES = tuple(g.name for g in promotion.GATES)
GATE_CHECKS = [
    dg.AssetCheckSpec(g.name, asset="validation_report", blocking=True, description=g.description)
    for g in promotion.GATES
]


def reports_dir(version: str) -> Path:
    return homeprice_home() / "reports" / f"v{version}"


def _require_challenger(name: str) -> tuple[str, str]:
    version = alias_version(CHALLENGER, name)
    if version is None:
        raise dg.Failure(
            f"no '{CHALLENGER}' alias on registered model '{name}': materialize price_model first"
        )
    return str(version.version), str(version.run_id)


@dg.multi_asset(
    group_name="training",
    outs={
        "training_set": dg.AssetOut(kinds={"pandas", "parquet"}, description="Months before validation."),
        "validation_set": dg.AssetOut(kinds={"pandas", "parquet"}, description="The most recent months."),
    },
    ins={"sale_features": dg.AssetIn(metadata={"allow_missing_partitions": True})},
    check_specs=[
        dg.AssetCheckSpec(
            "no_time_overlap",
            asset="training_set",
            blocking=True,
            description="Every training sale precedes every validation sale (no leakage).",
        )
    ],
)
def model_datasets(
    context: dg.AssetExecutionContext, sale_features: dict[str, pd.DataFrame]
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Time split over the configured window of landed months: validation is the newest months."""
    settings = training_settings()
    checks = blocking_check_keys(None)
    blocked = {
        m: status.failed
        for m in sale_features
        if (status := month_status(context.instance, m, checks)).state == "blocked"
    }
    if blocked:  # stored data whose blocking checks failed in the run that made it: never train on it
        context.log.warning(f"left out {len(blocked)} month(s) with failed blocking checks: {blocked}")
    frames = [f for m, f in sale_features.items() if len(f) and m not in blocked]
    if not frames:
        raise dg.Failure("no usable sale_features partitions: land and ingest some months first")
    split = time_split(
        pd.concat(frames, ignore_index=True), settings.validation_months, settings.window_months
    )
    summary = split.summary()
    context.log.info(f"split: {summary}")
    left_out = ", ".join(sorted(blocked)) or "none"
    yield dg.Output(
        split.train,
        output_name="training_set",
        metadata={**summary, "rows": len(split.train), "months_left_out_blocked": left_out},
    )
    yield dg.Output(
        split.validation, output_name="validation_set", metadata={**summary, "rows": len(split.validation)}
    )
    last_train, first_val = split.train["sale_date"].max(), split.validation["sale_date"].min()
    yield dg.AssetCheckResult(
        check_name="no_time_overlap",
        asset_key="training_set",
        passed=bool(last_train < first_val),
        metadata={
            "last_training_sale": str(last_train.date()),
            "first_validation_sale": str(first_val.date()),
        },
    )


@dg.asset(group_name="training", kinds={"lightgbm", "mlflow"})
def price_model(
    context: dg.AssetExecutionContext, training_set: pd.DataFrame, mlflow_tracking: MlflowTracking
) -> dg.MaterializeResult:
    """Fit the challenger, log it to MLflow as a pyfunc and register it under the alias ``challenger``."""
    settings = training_settings()
    name = mlflow_tracking.registered_model_name
    months = training_set["sale_month"]
    tags = {"dagster_run_id": context.run_id, "homeprice.stage": "train"}
    with mlflow_tracking.run(run_name=f"train-through-{months.max()}", tags=tags) as run:
        mlflow.log_params(
            {
                "train_start": months.min(),
                "train_end": months.max(),
                "train_rows": len(training_set),
                "interval_level": settings.interval_level,
                "calibration_months": settings.calibration_months,
                "early_stopping_months": settings.early_stopping_months,
                **{f"param_{k}": v for k, v in {**DEFAULT_PARAMS, **settings.params}.items()},
            }
        )
        mlflow.log_dict({"features": list(FEATURES), "input_fields": list(INPUT_FIELDS)}, "features.json")
        context.log.info(f"fitting on {len(training_set)} sales {months.min()}..{months.max()}")
        model = fit_price_model(
            training_set,
            settings.params,
            interval_level=settings.interval_level,
            calibration_months=settings.calibration_months,
            early_stopping_months=settings.early_stopping_months,
        )
        mlflow.log_metrics(
            {
                k: float(v)
                for k, v in model.facts.items()
                if isinstance(v, int | float | np.floating) and not isinstance(v, bool)
            }
        )
        for part, span in model.facts.get("ranges", {}).items():  # fit / early-stopping / calibration months
            if span:
                mlflow.log_param(f"{part}_range", "..".join(span))
        info = log_price_model(model, input_example(training_set), registered_model_name=name)
        version = str(info.registered_model_version)
        set_alias(CHALLENGER, version, name)
        MlflowClient().set_model_version_tag(name, version, "dagster_run_id", context.run_id)
    context.log.info(f"registered {name} v{version} as '{CHALLENGER}' (MLflow run {run.info.run_id})")
    link = mlflow_tracking.run_link(run.info.run_id)
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "model_uri": model_uri(CHALLENGER, name),
            "mlflow_run_id": run.info.run_id,
            "trained_through": model.trained_through,
            "train_rows": len(training_set),
            **({"mlflow_run": dg.MetadataValue.url(link)} if link else {}),
        }
    )


def _score(uri: str, inputs: pd.DataFrame) -> pd.DataFrame:
    pyfunc, _ = load_price_model(uri)
    return pyfunc.predict(inputs)


@dg.asset(group_name="training", deps=[price_model], check_specs=GATE_CHECKS, kinds={"mlflow", "html"})
def validation_report(
    context: dg.AssetExecutionContext,
    training_set: pd.DataFrame,
    validation_set: pd.DataFrame,
    mlflow_tracking: MlflowTracking,
) -> dg.MaterializeResult:
    """Score challenger, champion and a hedonic baseline on the same validation window; gate promotion.

    The challenger is loaded through ``mlflow.pyfunc`` exactly as serving loads it, so a model that cannot
    take the validation inputs (missing, extra or retyped columns) fails here, not in production.
    """
    mlflow_tracking.activate()
    name = mlflow_tracking.registered_model_name
    version, run_id = _require_challenger(name)
    inputs = validation_set[[c for c in INPUT_FIELDS if c in validation_set]].reset_index(drop=True)
    pyfunc, _ = load_price_model(model_uri(CHALLENGER, name))
    try:
        check_feature_mismatch(inputs, pyfunc)
    except FeatureMismatchError as exc:
        raise dg.Failure(f"challenger v{version} cannot score the validation set: {exc}") from exc
    predictions = {"challenger": pyfunc.predict(inputs)}
    champion = alias_version(CHAMPION, name)
    if champion is not None:
        try:
            predictions["champion"] = _score(model_uri(CHAMPION, name), inputs)
        except Exception as exc:  # an incompatible old champion must not block the pipeline forever
            context.log.warning(f"champion v{champion.version} could not score the validation set: {exc}")
    predictions["baseline"] = fit_baseline(training_set).predict(inputs)
    facts = {
        "challenger_version": version,
        "champion_version": champion.version if champion else None,
        "train_months": f"{training_set['sale_month'].min()}..{training_set['sale_month'].max()}",
    }
    report = reports.validation_report(
        reports_dir(version) / "validation", validation_set.reset_index(drop=True), predictions, facts=facts
    )
    summary = report.summary
    metrics = summary["metrics"]
    gates = evaluate_gates(
        metrics["challenger"], metrics.get("champion"), summary["churn"], promotion_settings()
    )
    promote_ok, reason = decision(gates)

    client = MlflowClient()
    client.log_artifacts(run_id, str(report.html_path.parent), artifact_path="validation")
    for metric, value in metrics["challenger"].items():
        client.log_metric(run_id, f"val_{metric}", float(value))
    client.set_model_version_tag(name, version, "validation_decision", "pass" if promote_ok else "blocked")
    client.set_model_version_tag(name, version, "validation_reason", reason[:5000])
    context.log.info(f"challenger v{version}: {reason}")
    return dg.MaterializeResult(
        metadata={
            "challenger_version": version,
            "champion_version": facts["champion_version"] or "none",
            "decision": "promote" if promote_ok else "blocked",
            "reason": reason,
            **{
                f"{m}_{k}": float(v)
                for m, vals in metrics.items()
                for k, v in vals.items()
                if k in ("mdape", "ppe10", "ppe20", "rmse", "interval_coverage", "interval_median_width")
            },
            "churn": summary["churn"] if summary["churn"] is not None else -1.0,
            "report": dg.MetadataValue.path(str(report.html_path)),
            "summary_json": dg.MetadataValue.path(str(report.json_path)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=g.name,
                passed=g.passed,
                description=g.reason,
                metadata={k: v if v is not None else "n/a" for k, v in g.figures.items()},
            )
            for g in gates
        ],
    )


@dg.asset(group_name="training", deps=[validation_report], kinds={"mlflow"})
def promoted_model(
    context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking
) -> dg.MaterializeResult:
    """Move ``champion`` to the validated challenger; the old champion keeps ``previous`` for rollback.

    Runs only after the blocking gates passed in the same run; materialized alone, it still refuses a
    challenger whose validation did not pass. Idempotent: promoting the champion again changes nothing.
    """
    mlflow_tracking.activate()
    name = mlflow_tracking.registered_model_name
    version, run_id = _require_challenger(name)
    client = MlflowClient()
    tags = client.get_model_version(name, version).tags
    if tags.get("validation_decision") != "pass":
        raise dg.Failure(
            f"challenger v{version} has not passed validation: "
            f"{tags.get('validation_reason', 'no validation_report for it yet')}"
        )
    result = promote(version, name)
    if result.changed:
        client.set_model_version_tag(name, version, "promotion", f"champion (previous: {result.previous})")
        client.set_tag(run_id, "homeprice.promoted", "true")
        context.log.info(f"promoted v{version} to '{CHAMPION}'; previous champion: {result.previous}")
    else:
        context.log.info(f"v{version} is already '{CHAMPION}': nothing to do")
    return dg.MaterializeResult(
        metadata={
            "champion_version": result.champion,
            "previous_version": result.previous or "none",
            "changed": result.changed,
            "reason": tags.get("validation_reason", ""),
            "model_uri": model_uri(CHAMPION, name),
        }
    )


@dg.asset(group_name="training", deps=[price_model], kinds={"shap", "html"})
def model_explanations(
    context: dg.AssetExecutionContext, validation_set: pd.DataFrame, mlflow_tracking: MlflowTracking
) -> dg.MaterializeResult:
    """SHAP (TreeExplainer) importances of the challenger on validation sales; permutation if SHAP fails."""
    mlflow_tracking.activate()
    version, run_id = _require_challenger(mlflow_tracking.registered_model_name)
    _, model = load_price_model(model_uri(CHALLENGER, mlflow_tracking.registered_model_name))
    report = reports.explanation_report(
        model,
        validation_set[list(INPUT_FIELDS)].reset_index(drop=True),
        reports_dir(version) / "explanations",
        y=validation_set["sale_price"].to_numpy(),
        max_rows=training_settings().explain_sample,
    )
    (report.html_path.parent / "method.txt").write_text(report.method)
    MlflowClient().log_artifacts(run_id, str(report.html_path.parent), artifact_path="explanations")
    if report.fallback_reason:
        context.log.warning(f"SHAP failed, used {report.method}: {report.fallback_reason}")
    return dg.MaterializeResult(
        metadata={
            "method": report.method,
            "fallback_reason": report.fallback_reason or "none",
            "top_features": dg.MetadataValue.md(report.importances.head(10).to_markdown(index=False)),
            "explanations": dg.MetadataValue.path(str(report.html_path)),
            "summary_plot": dg.MetadataValue.path(str(report.plot_path)),
        }
    )


def _version_facts(name: str, version: str | None) -> dict | None:
    """Hyperparameters, features and training end of a registered version (for the card's diff)."""
    if version is None:
        return None
    client = MlflowClient()
    run = client.get_run(client.get_model_version(name, version).run_id)
    params = run.data.params
    return {
        "version": version,
        "trained_through": params.get("train_end"),
        "hyperparameters": {k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")},
        "features": list(FEATURES),
    }


@dg.asset(group_name="training", deps=[promoted_model, model_explanations], kinds={"html"})
def model_card(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking) -> dg.MaterializeResult:
    """The champion's model card (HTML), written as a diff against the champion it replaced."""
    mlflow_tracking.activate()
    name = mlflow_tracking.registered_model_name
    champion = alias_version(CHAMPION, name)
    if champion is None:
        raise dg.Failure("no champion to document: promoted_model has not promoted a model yet")
    version = str(champion.version)
    run = MlflowClient().get_run(champion.run_id)
    out = reports_dir(version)
    summary = json.loads((out / "validation" / "validation_summary.json").read_text())
    importances = pd.read_csv(out / "explanations" / "feature_importance.csv")
    method_file = out / "explanations" / "method.txt"
    this = _version_facts(name, version) or {}
    previous_version = summary["facts"].get("champion_version")
    metrics = summary["metrics"]
    challenger_metrics = metrics["challenger"]
    facts = {
        "model_name": name,
        "version": version,
        "run_id": champion.run_id,
        "trained_through": this.get("trained_through"),
        "decision": "promoted to champion",
        "decision_reason": champion.tags.get("validation_reason"),
        "data_window": {
            "training": summary["facts"].get("train_months"),
            "validation": "..".join(summary["months"]),
        },
        "row_counts": {
            "training": int(float(run.data.params.get("train_rows", 0))),
            "validation": summary["rows"],
        },
        "metrics": metrics,
        "churn": summary.get("churn"),
        "interval": {
            "level": float(run.data.params.get("interval_level", 0.8)),
            "coverage": challenger_metrics.get("interval_coverage"),
            "width": challenger_metrics.get("interval_median_width"),
            "calibration_range": run.data.params.get("calibration_range"),
        },
        "hyperparameters": this.get("hyperparameters", {}),
        "features": list(FEATURES),
        "champion": _version_facts(name, previous_version) if previous_version != version else None,
        "images": {
            "Predicted vs actual": out / "validation" / "predicted_vs_actual.png",
            "Error by month": out / "validation" / "error_by_month.png",
            "SHAP summary": out / "explanations" / "shap_summary.png",
        },
        "importances": importances.to_dict(orient="records"),
        "explanation_method": method_file.read_text() if method_file.is_file() else "SHAP",
    }
    path = reports.model_card(facts, out / "model_card.html")
    MlflowClient().log_artifact(champion.run_id, str(path), artifact_path="model_card")
    context.log.info(f"model card for v{version}: {path}")
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "model_card": dg.MetadataValue.path(str(path)),
            "model_card_url": dg.MetadataValue.url(path.as_uri()),
            "mdape": float(challenger_metrics["mdape"]),
            "ppe10": float(challenger_metrics["ppe10"]),
        }
    )
