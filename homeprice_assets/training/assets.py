"""The model lifecycle: split -> train (challenger) -> validate vs champion -> promote -> explain -> document.

MLflow's registry is the store of record for models. ``price_model`` registers a new version and hands that
version on by number (its asset value is a one-row ``ModelRef``): every later step works on exactly the model
this run trained, never on whatever an alias points to by the time it runs. ``promoted_model`` moves
``champion`` (and ``previous``, for rollback) only after the blocking promotion gates on ``validation_report``
passed. Lifecycle runs never interleave: they share a run-queue tag limited to one run at a time.
"""

import json
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from homeprice_assets.config import homeprice_home
from homeprice_assets.features.engineering import FEATURES, INPUT_FIELDS
from homeprice_assets.ingest.status import blocking_check_keys, month_status
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.registry import CHALLENGER, CHAMPION, ModelRegistry, Registry
from homeprice_assets.resources.storage import LAZY_PARTITIONS
from homeprice_assets.rollout import state as rollout_state
from homeprice_assets.training import promotion, reports
from homeprice_assets.training.baseline import fit_baseline
from homeprice_assets.training.model import DEFAULT_PARAMS, fit_price_model
from homeprice_assets.training.promotion import decision, evaluate_gates
from homeprice_assets.training.splits import time_split, window_table
from homeprice_assets.training.tracking import (
    FeatureMismatchError,
    check_feature_mismatch,
    input_example,
    save_price_model,
)
from homeprice_assets.training.update import update_plan, update_price_model

# One blocking check per promotion gate, named and described where the gate is defined (promotion.py).
GATES = tuple(g.name for g in promotion.GATES)
GATE_CHECKS = [
    dg.AssetCheckSpec(g.name, asset="validation_report", blocking=True, description=g.description)
    for g in promotion.GATES
]


def reports_dir(version: str) -> Path:
    return homeprice_home() / "reports" / f"v{version}"


@dataclass(frozen=True)
class ModelRef:
    """What ``price_model`` hands on: the registered version this run trained, and its MLflow run."""

    version: str
    run_id: str
    trained_through: str

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(self)])

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "ModelRef":
        if len(frame) != 1:
            raise dg.Failure(f"price_model: expected one model reference, got {len(frame)} rows")
        row = frame.iloc[0]
        return cls(str(row["version"]), str(row["run_id"]), str(row["trained_through"]))


# Lifecycle runs queue behind each other (dagster.yaml: tag concurrency limit 1 on this tag), so two runs
# never interleave their train / validate / promote steps. Sensors and schedules set it on their requests.
LIFECYCLE_TAG = "homeprice/lifecycle"


@dg.multi_asset(
    group_name="training",
    outs={
        "training_set": dg.AssetOut(kinds={"pandas", "parquet"}, description="Months before validation."),
        "validation_set": dg.AssetOut(kinds={"pandas", "parquet"}, description="The most recent months."),
    },
    # Months are read lazily: only the training window's, not every landed month (resources/storage.py).
    ins={"sale_features": dg.AssetIn(metadata={"allow_missing_partitions": True, LAZY_PARTITIONS: True})},
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
    context: dg.AssetExecutionContext,
    sale_features: dict[str, Any],  # month -> loader (lazy partitions)
    settings: ProjectConfigResource,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Time split over the configured window of landed months: validation is the newest months."""
    settings = settings.get().training
    checks = blocking_check_keys(None)
    blocked: dict[str, tuple[str, ...]] = {}
    runs: dict = {}  # ingest runs' check evaluations, read once for all months

    def usable(month: str) -> bool:
        """Judged only for the months the window reaches (each costs event-log reads)."""
        status = month_status(context.instance, month, checks, runs)
        if status.state == "blocked":
            blocked[month] = status.failed
        return status.state != "blocked"

    # stored data whose blocking checks failed in the run that made it: never train on it
    table = window_table(sale_features, settings.window_months, usable=usable)
    if blocked:
        context.log.warning(f"left out {len(blocked)} month(s) with failed blocking checks: {blocked}")
    if not len(table):
        raise dg.Failure("no usable sale_features partitions: land and ingest some months first")
    split = time_split(table, settings.validation_months, settings.window_months)
    del table  # the split holds its own copies
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


class PriceModelConfig(dg.Config):
    """Run config of ``price_model``: ``full_refit`` skips the monthly update (``training/update.py``)."""

    full_refit: bool = False


def _champion_for_update(
    reg: Registry, context: dg.AssetExecutionContext
) -> tuple[str | None, Any, str | None]:
    """(version, inner model, model code version) of the champion, read once; (None, None, None) if none."""
    version = reg.version_number(CHAMPION)
    if version is None:
        return None, None, None
    try:
        pyfunc, inner = reg.load(version)
    except Exception as exc:  # a champion that no longer loads is refit from scratch, not fatal
        context.log.warning(f"champion v{version} did not load for an update ({exc}); fitting in full")
        return version, None, None
    meta = pyfunc.metadata.metadata or {}
    return version, inner, meta.get("model_code_version")


@dg.asset(group_name="training", kinds={"lightgbm", "mlflow"})
def price_model(
    context: dg.AssetExecutionContext,
    config: PriceModelConfig,
    training_set: pd.DataFrame,
    registry: ModelRegistry,
    settings: ProjectConfigResource,
) -> dg.Output[pd.DataFrame]:
    """Fit the challenger (or update the champion by a month), log it to MLflow as a pyfunc, register a
    version and hand that version on."""
    project = settings.get()
    training = project.training
    reg = registry.get()
    months = training_set["sale_month"]
    base_version, champion, code_version = (
        _champion_for_update(reg, context)
        if training.update.max_consecutive and not config.full_refit
        else (None, None, None)
    )
    # imported here: the sensors package imports this module
    from homeprice_assets.monitoring.sensors.common import TRIGGER_TAG

    trigger = context.run.tags.get(TRIGGER_TAG) if context.run else None
    plan = update_plan(
        champion, code_version, training_set, training.params, training.update, trigger, config.full_refit
    )
    context.log.info(
        f"{'updating champion v' + str(base_version) if plan.update else 'full fit'}: {plan.reason}"
    )
    tags = {"dagster_run_id": context.run_id, "homeprice.stage": "train"}
    with reg.run(run_name=f"train-through-{months.max()}", tags=tags) as run:
        run.log_params(
            {
                "train_start": months.min(),
                "train_end": months.max(),
                "train_rows": len(training_set),
                "interval_level": training.interval_level,
                "calibration_months": training.calibration_months,
                "early_stopping_months": training.early_stopping_months,
                **{f"param_{k}": v for k, v in {**DEFAULT_PARAMS, **training.params}.items()},
            }
        )
        what = (
            f"adding {training.update.rounds} trees to champion v{base_version}, from the newest "
            f"{training.update.months} months of"
            if plan.update
            else "fitting on"
        )
        context.log.info(f"{what} {len(training_set)} sales {months.min()}..{months.max()}")
        if plan.update:
            model = update_price_model(
                champion, training_set, training.update, base_version=base_version, bounds=project.data.bounds
            )
        else:
            model = fit_price_model(
                training_set,
                training.params,
                interval_level=training.interval_level,
                calibration_months=training.calibration_months,
                early_stopping_months=training.early_stopping_months,
                # the request limits the served model (and its Bento) will hold callers to
                bounds=project.data.bounds,
            )
            model.facts = {**model.facts, "fit_mode": "full", "updates_since_full": 0}
        run.set_tags({"homeprice.fit_mode": model.facts["fit_mode"], "homeprice.fit_reason": plan.reason})
        run.log_dict(
            {
                "features": list(model.feature_names),
                "input_fields": list(getattr(model, "input_fields", INPUT_FIELDS)),
            },
            "features.json",
        )
        run.log_metrics(
            {
                k: float(v)
                for k, v in model.facts.items()
                if isinstance(v, int | float | np.floating) and not isinstance(v, bool)
            }
        )
        ranges = model.facts.get("ranges", {})
        run.log_params({f"{part}_range": "..".join(span) for part, span in ranges.items() if span})
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = save_price_model(model, Path(tmp) / "model", input_example(training_set))
            registered = reg.register(run, model_dir, tags={"dagster_run_id": context.run_id})
    ref = ModelRef(str(registered.version), run.run_id, model.trained_through)
    # Informational only: the lifecycle hands the version on by number, never by re-reading this alias.
    reg.set_alias(CHALLENGER, ref.version)
    context.log.info(f"registered {reg.model_name} v{ref.version} (MLflow run {ref.run_id})")
    link = reg.run_link(ref.run_id)
    return dg.Output(
        ref.to_frame(),
        metadata={
            "model_version": ref.version,
            "model_uri": reg.model_uri(ref.version),
            "mlflow_run_id": ref.run_id,
            "trained_through": ref.trained_through,
            "train_rows": len(training_set),
            "fit_mode": model.facts["fit_mode"],
            "fit_reason": plan.reason,
            "fit_seconds": float(model.facts.get("fit_seconds", 0.0)),
            **({"update_base_version": base_version} if plan.update else {}),
            **({"mlflow_run": dg.MetadataValue.url(link)} if link else {}),
        },
    )


@dg.asset(group_name="training", check_specs=GATE_CHECKS, kinds={"mlflow", "html"})
def validation_report(
    context: dg.AssetExecutionContext,
    price_model: pd.DataFrame,
    training_set: pd.DataFrame,
    validation_set: pd.DataFrame,
    registry: ModelRegistry,
    settings: ProjectConfigResource,
) -> dg.MaterializeResult:
    """Score this run's challenger, the champion and a hedonic baseline on the same window; gate promotion.

    The challenger is loaded from the registry exactly as serving loads it, so a model that cannot take the
    validation inputs (missing, extra or retyped columns) fails here, not in production.
    """
    reg = registry.get()
    ref = ModelRef.from_frame(price_model)
    version = ref.version
    pyfunc, inner = reg.load(version)
    # parcel_id only for a model that takes it (repeat sales); every other model ignores it.
    takes = [*INPUT_FIELDS, *(c for c in getattr(inner, "input_fields", ()) if c not in INPUT_FIELDS)]
    inputs = validation_set[[c for c in takes if c in validation_set]].reset_index(drop=True)
    try:
        check_feature_mismatch(inputs, pyfunc)
    except FeatureMismatchError as exc:
        raise dg.Failure(f"challenger v{version} cannot score the validation set: {exc}") from exc
    predictions = {"challenger": pyfunc.predict(inputs)}
    champion = reg.version_number(CHAMPION)
    if champion == version:  # re-validating the champion itself: there is nothing to compare with
        champion = None
    champion_note = None
    if champion is not None:
        # A registry or artifact store that fails fails the run (to be retried): read as "no champion", it
        # would wave anything in. Once its files are here, a champion this release cannot load or score
        # (its pickled code, its library versions, its inputs) must not block the pipeline forever: the
        # challenger then meets the absolute gates only.
        local = reg.download(champion)
        try:
            champion_pyfunc, _ = reg.load_dir(local)
            check_feature_mismatch(inputs, champion_pyfunc, allow_extra=True, require_optional=False)
            predictions["champion"] = champion_pyfunc.predict(inputs)
        except (OSError, MemoryError):  # files that cannot be read, a machine out of memory: not the model's
            raise
        except Exception as exc:
            champion_note = f"v{champion} could not score the validation set ({exc}): absolute gates only"
            context.log.warning(f"champion {champion_note}")
    baseline = fit_baseline(training_set)
    predictions["baseline"] = baseline.predict(inputs)
    facts = {
        "challenger_version": version,
        "champion_version": champion,  # (the model card reads it back as a version)
        **({"champion_not_scored": champion_note} if champion_note else {}),
        "train_months": f"{training_set['sale_month'].min()}..{training_set['sale_month'].max()}",
        "baseline_fit_rows": f"{baseline.fit_rows:,} of {len(training_set):,} training sales",
    }
    report = reports.validation_report(
        reports_dir(version) / "validation", validation_set.reset_index(drop=True), predictions, facts=facts
    )
    summary = report.summary
    metrics = summary["metrics"]
    gates = evaluate_gates(
        metrics["challenger"], metrics.get("champion"), summary["churn"], settings.get().promotion
    )
    promote_ok, reason = decision(gates)

    reg.client.log_artifacts(ref.run_id, str(report.html_path.parent), artifact_path="validation")
    for metric, value in metrics["challenger"].items():
        reg.client.log_metric(ref.run_id, f"val_{metric}", float(value))
    reg.tag_version(
        version,
        validation_decision="pass" if promote_ok else "blocked",
        validation_reason=reason,
        validated_against=champion or "none",
    )
    against = f"champion v{champion}" if champion else "no champion"
    context.log.info(f"challenger v{version} against {against}: {reason}")
    return dg.MaterializeResult(
        metadata={
            "challenger_version": version,
            "champion_version": champion or "none",
            **({"champion_not_scored": champion_note} if champion_note else {}),
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


def promotion_refusal(version: str, tags: dict[str, str], champion: str | None) -> str | None:
    """Why a version that passed its gates must still not be put in place now (None: it may).

    The gates compared it with one champion: if another serves now (a rollback, another run's promotion),
    the comparison no longer holds. A version rolled back from champion is never brought back by itself.
    """
    if tags.get("rolled_back"):
        return (
            f"v{version} was rolled back from champion ({tags['rolled_back']}); it is not promoted again "
            f"automatically: `homeprice rollback --to {version}` or `homeprice rollout start --version "
            f"{version}` brings it back by hand"
        )
    against = tags.get("validated_against")
    if against is not None and against != (champion or "none"):
        return (
            f"v{version} was validated against champion {against}, but the champion is now "
            f"{champion or 'none'}: materialize validation_report again to compare it with the champion "
            "it would replace"
        )
    return None


@dg.asset(group_name="training", deps=[validation_report], kinds={"mlflow"})
def promoted_model(
    context: dg.AssetExecutionContext,
    price_model: pd.DataFrame,
    registry: ModelRegistry,
    settings: ProjectConfigResource,
) -> dg.MaterializeResult:
    """Put this run's validated version where ``rollout.mode`` says: champion (``direct``, or the first model
    of an empty registry; the old champion keeps ``previous`` for rollback) or the ``candidate`` of a live
    ``shadow`` / ``ab`` rollout, where later sales decide.

    Runs only after the blocking gates passed in the same run; materialized alone, it still refuses a
    version whose validation did not pass, one validated against a champion that no longer serves, and one
    rolled back since (``promotion_refusal``). Idempotent: a version already in place changes nothing.
    """
    reg = registry.get()
    ref = ModelRef.from_frame(price_model)
    tags = reg.get_version(ref.version).tags
    if tags.get("validation_decision") != "pass":
        raise dg.Failure(
            f"v{ref.version} has not passed validation: "
            f"{tags.get('validation_reason', 'no validation_report for it yet')}"
        )
    before = rollout_state.current_state(reg)
    if ref.version not in (before.champion, before.candidate):
        refusal = promotion_refusal(ref.version, tags, before.champion)
        if refusal:
            raise dg.Failure(refusal)
    decision = rollout_state.decide_promotion(reg, ref.version, settings.get().rollout)
    action = rollout_state.apply_promotion(reg, decision, tags.get("validation_reason", ""))
    after = rollout_state.current_state(reg)
    changed = after.champion != before.champion
    if changed:
        reg.tag_version(ref.version, promotion=f"champion (previous: {before.champion})")
        reg.client.set_tag(ref.run_id, "homeprice.promoted", "true")
        context.log.info(f"promoted v{ref.version} to '{CHAMPION}'; previous champion: {before.champion}")
    elif action is not None:
        context.log.info(f"v{ref.version} is the rollout candidate ({decision.mode}): {decision.reason}")
    else:
        context.log.info(f"v{ref.version} is already in place ({decision.action}): nothing to do")
    return dg.MaterializeResult(
        metadata={
            "model_version": ref.version,
            "decision": decision.action,  # promote | candidate
            "rollout_mode": decision.mode,
            "champion_version": after.champion or "none",
            "previous_version": after.previous or "none",
            "candidate_version": after.candidate or "none",
            "changed": changed,
            # what this run did to a live rollout (start | replace), for the alert sensor; none otherwise
            "rollout_action": action.kind if action is not None and not changed else "none",
            "reason": f"{decision.reason}; {tags.get('validation_reason', '')}",
            "model_uri": reg.model_uri(after.champion) if after.champion else "none",
        }
    )


# Steps ready at the same time run highest priority first (Dagster's ``dagster/priority`` op tag): in a
# run's own process (the sensors' and the schedule's runs, ``homeprice run``) the explanation (seconds of
# TreeSHAP) waits until the gates and the promotion are done, so a new champion is live (services follow
# the registry's aliases) before its explanation is drawn. A multiprocess run may start both at once.
AFTER_PROMOTION = {"dagster/priority": "-1"}


@dg.asset(group_name="training", kinds={"shap", "html"}, op_tags=AFTER_PROMOTION)
def model_explanations(
    context: dg.AssetExecutionContext,
    price_model: pd.DataFrame,
    validation_set: pd.DataFrame,
    registry: ModelRegistry,
    settings: ProjectConfigResource,
) -> dg.MaterializeResult:
    """TreeSHAP importances of this run's model on validation sales; permutation importance if SHAP fails."""
    reg = registry.get()
    ref = ModelRef.from_frame(price_model)
    _, model = reg.load(ref.version)
    fields = [c for c in getattr(model, "input_fields", INPUT_FIELDS) if c in validation_set]
    sample = settings.get().training.explain_sample
    report = reports.explanation_report(
        model,
        validation_set[fields].reset_index(drop=True),
        reports_dir(ref.version) / "explanations",
        y=validation_set["sale_price"].to_numpy(),
        max_rows=sample,
    )
    (report.html_path.parent / "method.txt").write_text(report.method)
    reg.client.log_artifacts(ref.run_id, str(report.html_path.parent), artifact_path="explanations")
    if report.fallback_reason:
        context.log.warning(f"SHAP failed, used {report.method}: {report.fallback_reason}")
    return dg.MaterializeResult(
        metadata={
            "model_version": ref.version,
            "method": report.method,
            "rows_explained": min(len(validation_set), sample),
            "fallback_reason": report.fallback_reason or "none",
            "top_features": dg.MetadataValue.md(report.importances.head(10).to_markdown(index=False)),
            "explanations": dg.MetadataValue.path(str(report.html_path)),
            "summary_plot": dg.MetadataValue.path(str(report.plot_path)),
        }
    )


def _version_facts(reg: Registry, version: str | None) -> dict | None:
    """Hyperparameters, features and training end of a registered version, as that version logged them."""
    if version is None:
        return None
    run = reg.client.get_run(reg.get_version(version).run_id)
    params = run.data.params
    logged = reg.features_of(version)
    return {
        "version": version,
        "trained_through": params.get("train_end"),
        "hyperparameters": {k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")},
        "features": list(logged.get("features") or []),
    }


@dg.asset(group_name="training", deps=[promoted_model, model_explanations], kinds={"html"})
def model_card(
    context: dg.AssetExecutionContext, price_model: pd.DataFrame, registry: ModelRegistry
) -> dg.MaterializeResult:
    """This run's model card (HTML): what it is, how it did, and a diff against the champion it met."""
    reg = registry.get()
    ref = ModelRef.from_frame(price_model)
    version = ref.version
    registered = reg.get_version(version)
    run = reg.client.get_run(ref.run_id)
    out = reports_dir(version)
    summary_path = out / "validation" / "validation_summary.json"
    if not summary_path.is_file():
        raise dg.Failure(
            f"no validation report for v{version} at {summary_path}: run validation_report first"
        )
    summary = json.loads(summary_path.read_text())
    importances = pd.read_csv(out / "explanations" / "feature_importance.csv")
    method_file = out / "explanations" / "method.txt"
    this = _version_facts(reg, version) or {}
    compared_with = summary["facts"].get("champion_version")
    champion_now = reg.version_number(CHAMPION)
    if champion_now == version:
        decision_text = "promoted to champion"
    elif registered.tags.get("validation_decision") == "blocked":
        decision_text = "blocked: not promoted"
    else:
        decision_text = f"not champion (champion is v{champion_now or 'none'})"
    metrics = summary["metrics"]
    challenger_metrics = metrics["challenger"]
    facts = {
        "model_name": reg.model_name,
        "version": version,
        "run_id": ref.run_id,
        "trained_through": this.get("trained_through"),
        "decision": decision_text,
        "decision_reason": registered.tags.get("validation_reason"),
        # a monthly update of an earlier champion, or a full refit (training/update.py), and why
        "fit_mode": run.data.tags.get("homeprice.fit_mode"),
        "fit_reason": run.data.tags.get("homeprice.fit_reason"),
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
        "ratio_study": (summary.get("ratio_study") or {}).get("challenger"),
        "hyperparameters": this.get("hyperparameters", {}),
        "features": this.get("features") or list(FEATURES),
        "champion": _version_facts(reg, compared_with) if compared_with not in (None, version) else None,
        "images": {
            "Predicted vs actual": out / "validation" / "predicted_vs_actual.png",
            "Error by month": out / "validation" / "error_by_month.png",
            "Ratio study (IAAO bands shaded)": out / "validation" / "ratio_study.png",
            "SHAP summary": out / "explanations" / "shap_summary.png",
        },
        "importances": importances.to_dict(orient="records"),
        "explanation_method": method_file.read_text() if method_file.is_file() else "SHAP",
    }
    path = reports.model_card(facts, out / "model_card.html")
    reg.client.log_artifact(ref.run_id, str(path), artifact_path="model_card")
    context.log.info(f"model card for v{version}: {path}")
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "decision": decision_text,
            "model_card": dg.MetadataValue.path(str(path)),
            "model_card_url": dg.MetadataValue.url(path.as_uri()),
            "mdape": float(challenger_metrics["mdape"]),
            "ppe10": float(challenger_metrics["ppe10"]),
        }
    )
