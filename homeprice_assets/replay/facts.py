"""Every figure of the replay report, computed from stored facts only.

A policy's facts are its prediction log (model version, role, when valued, price, interval), its clean sales
(the stored ``clean_sales`` partitions), its registry (versions, their training cut-off, validation decision
and the rollout records on them) and its Dagster instance (the runs the sensors started, with their trigger
tags and durations). Nothing the runner merely remembered enters a figure, except the breakdown of wall time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from homeprice_assets.rollout.groundtruth import join_ground_truth, live_metrics

ANSWERING_ROLES = ("champion", "candidate")  # the valuation the caller got (shadow rows are not answers)
METRICS = ("n", "mdape", "ppe10", "median_ratio", "coverage")


@dataclass(frozen=True)
class PolicyFacts:
    name: str
    live: pd.DataFrame  # one row per sale with a valuation before it: the latest answer it got
    unmatched: dict[str, int]  # month -> sales with no valuation in the window
    versions: pd.DataFrame  # one row per registered version
    runs: pd.DataFrame  # one row per Dagster run
    rollbacks: pd.DataFrame  # one row per rollback the rollout_actions sensor recorded in Dagster
    broken_evaluations: int = 0  # rollout_evaluation materializations that found the champion broken


def stored_sales(storage: Path, months: list[str]) -> pd.DataFrame:
    """The clean sales of ``months`` as the ingest stored them (months not stored are skipped)."""
    frames = [
        pd.read_parquet(path) for m in months if (path := storage / "clean_sales" / f"{m}.parquet").is_file()
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def live_answers(
    sales: pd.DataFrame, predictions: pd.DataFrame, embargo_days: int, horizon_months: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Each sale joined to the latest answer (champion, or the A/B candidate) valued before it, within the
    embargo and horizon (``join_ground_truth``, month by month); and per month the sales left unmatched."""
    rows, unmatched = [], {}
    answers = predictions[predictions["model_role"].isin(ANSWERING_ROLES)]
    for month, sold in sales.groupby("sale_month", sort=True):
        joined, missing = join_ground_truth(sold, answers, embargo_days, horizon_months)
        unmatched[str(month)] = int(missing)
        if len(joined):
            joined = joined.sort_values(["valued_at", "created_at"]).drop_duplicates("sale_id", keep="last")
            rows.append(joined)
    live = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return live, unmatched


def monthly_metrics(live: pd.DataFrame) -> pd.DataFrame:
    """n, MdAPE, PPE10, median sale ratio and interval coverage per sale month, and the versions answering."""
    out = []
    for month, rows in live.groupby("sale_month", sort=True) if len(live) else []:
        figures = live_metrics(rows)
        versions = ",".join(sorted(rows["model_version"].astype(str).unique(), key=int))
        out.append({"month": str(month), **{k: figures[k] for k in METRICS}, "versions": versions})
    return pd.DataFrame(out, columns=["month", *METRICS, "versions"])


def _tag_json(tags: dict[str, str], key: str) -> dict[str, Any]:
    try:
        return json.loads(tags.get(key) or "{}")
    except ValueError:
        return {}


def cached_fit_seconds(fit_cache: Path | None) -> dict[str, float]:
    """Training cut-off month -> seconds its fit took, from the fit cache's entries (one settings set per
    replay, so one fit per cut-off)."""
    if fit_cache is None or not fit_cache.is_dir():
        return {}
    out = {}
    for path in fit_cache.glob("*.json"):
        meta = json.loads(path.read_text())
        out[str(meta["train_end"])] = float(meta["fit_seconds"])
    return out


def registry_versions(tracking_uri: str, model_name: str, fit_cache: Path | None = None) -> pd.DataFrame:
    """One row per registered version: training cut-off, validation decision, promotion, fit cost.

    The fit cost is the version's ``replay.fit_seconds`` tag; a version without one (a lifecycle run whose
    gates blocked it, before the runner tagged those too) takes its cut-off's entry in the fit cache
    (``fit_cache`` = ``unrecorded``)."""
    from homeprice_assets.resources.registry import Registry

    by_cutoff = cached_fit_seconds(fit_cache)

    reg = Registry(tracking_uri=tracking_uri, model_name=model_name)
    rows = []
    for mv in reg.versions():
        tags = dict(mv.tags or {})
        run = reg.client.get_run(mv.run_id) if mv.run_id else None
        params = run.data.params if run else {}
        run_tags = run.data.tags if run else {}
        promote = _tag_json(tags, "rollout.promote")
        rollback = _tag_json(tags, "rollout.rollback")
        rows.append(
            {
                "version": str(mv.version),
                "run_id": mv.run_id,
                "train_end": params.get("train_end"),
                "train_rows": int(float(params.get("train_rows", 0) or 0)),
                "validation_decision": tags.get("validation_decision"),
                "validation_reason": tags.get("validation_reason", ""),
                "promoted": bool(promote),
                "promoted_at": promote.get("at"),
                "rolled_back_to_at": rollback.get("at"),
                "val_mdape": run.data.metrics.get("val_mdape") if run else None,
                "fit_seconds": float(
                    run_tags.get("replay.fit_seconds") or by_cutoff.get(str(params.get("train_end")), "nan")
                ),
                "fit_cache": run_tags.get("replay.fit_cache") or "unrecorded",
                "dagster_run_id": tags.get("replay_dagster_run_id") or run_tags.get("dagster_run_id"),
            }
        )
    return pd.DataFrame(rows)


def dagster_runs(instance: Any) -> pd.DataFrame:
    """Every run of the policy's instance with its trigger tags, status and duration."""
    import dagster as dg

    rows = []
    for record in instance.get_run_records():
        run = record.dagster_run
        start, end = record.start_time, record.end_time
        rows.append(
            {
                "run_id": run.run_id,
                "status": run.status.value,
                "trigger": run.tags.get("homeprice/trigger", ""),
                "month": run.tags.get("homeprice/month", run.tags.get("dagster/partition", "")),
                "lifecycle": run.tags.get("homeprice/lifecycle") == "true",
                "assets": ",".join(sorted(k.to_user_string() for k in (run.asset_selection or []))),
                "start": start,
                "seconds": (end - start) if start and end else np.nan,
            }
        )
    del dg
    return pd.DataFrame(rows)


def dagster_rollbacks(instance: Any) -> pd.DataFrame:
    """Rollbacks as the rollout_actions sensor reported them (``promoted_model`` events, decision
    rollback)."""
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("promoted_model")), limit=10_000, ascending=True
    ).records
    rows = []
    for r in records:
        meta = r.asset_materialization.metadata if r.asset_materialization else {}
        decision = getattr(meta.get("decision"), "value", None)
        if decision == "rollback":
            rows.append(
                {
                    "storage_id": r.storage_id,
                    "to_version": str(getattr(meta.get("champion_version"), "value", "")),
                    "from_version": str(getattr(meta.get("previous_version"), "value", "")),
                    "reason": str(getattr(meta.get("reason"), "value", "")),
                    "timestamp": r.timestamp,
                }
            )
    return pd.DataFrame(rows, columns=["storage_id", "to_version", "from_version", "reason", "timestamp"])


def broken_evaluations(instance: Any) -> int:
    """How many ``rollout_evaluation`` materializations found the live champion broken (rollback rules)."""
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("rollout_evaluation")), limit=10_000
    ).records
    return sum(
        bool(getattr(r.asset_materialization.metadata.get("champion_broken"), "value", False))
        for r in records
        if r.asset_materialization
    )


def events(facts: PolicyFacts, first_version: str) -> pd.DataFrame:
    """The policy's timeline: each retrain (month: the one whose arrival triggered it, from its Dagster run's
    tags) with its outcome (promoted, blocked), and each rollback (the month judged when it happened)."""
    runs = facts.runs.set_index("run_id") if len(facts.runs) else pd.DataFrame()
    out = []
    for v in facts.versions.itertuples():
        if v.version == first_version:
            continue
        known = v.dagster_run_id in runs.index
        trigger = runs.loc[v.dagster_run_id, "trigger"] if known else ""
        # the month whose arrival started the retrain (its run's month tag); else the training cut-off
        month = (runs.loc[v.dagster_run_id, "month"] if known else "") or v.train_end
        kind = "promoted" if v.promoted else ("blocked" if v.validation_decision == "blocked" else "trained")
        out.append(
            {
                "month": month,
                "event": kind,
                "version": v.version,
                "trigger": trigger,
                "detail": v.validation_reason[:200],
            }
        )
    month_of = _rollback_months(facts)
    for r, month in zip(facts.rollbacks.itertuples(), month_of, strict=True):
        out.append(
            {
                "month": month,
                "event": "rollback",
                "version": r.to_version,
                "trigger": "rollout_actions",
                "detail": r.reason[:200],
            }
        )
    frame = pd.DataFrame(out, columns=["month", "event", "version", "trigger", "detail"])
    return frame.sort_values(["month", "event"], kind="stable").reset_index(drop=True)


def _rollback_months(facts: PolicyFacts) -> list[str]:
    """The sale month judged when each rollback happened (the newest month ingested before it)."""
    landed = facts.runs[facts.runs["trigger"] == "landing"] if len(facts.runs) else facts.runs
    months = []
    for r in facts.rollbacks.itertuples():
        before = landed[landed["start"] <= r.timestamp] if len(landed) else landed
        months.append(str(before["month"].max()) if len(before) else "")
    return months


def summarize(facts: PolicyFacts, first_version: str) -> dict[str, Any]:
    """One policy's row of the comparison table."""
    figures = live_metrics(facts.live) if len(facts.live) else {"n": 0}
    monthly = monthly_metrics(facts.live)
    later = facts.versions[facts.versions["version"] != first_version]
    lifecycle = facts.runs[facts.runs["lifecycle"] & (facts.runs["trigger"] != "initial")]
    fits = later["fit_seconds"].astype(float)
    return {
        "policy": facts.name,
        "months": len(monthly),
        "sales": int(figures["n"]),
        "mdape": figures.get("mdape"),
        "ppe10": figures.get("ppe10"),
        "median_ratio": figures.get("median_ratio"),
        "coverage": figures.get("coverage"),
        "mean_monthly_mdape": float(monthly["mdape"].mean()) if len(monthly) else None,
        "worst_monthly_mdape": float(monthly["mdape"].max()) if len(monthly) else None,
        "unmatched_sales": int(sum(facts.unmatched.values())),
        "retrains": len(later),
        "promotions": int(later["promoted"].sum()) if len(later) else 0,
        "blocked": int((later["validation_decision"] == "blocked").sum()) if len(later) else 0,
        "rollbacks": len(facts.rollbacks),
        "broken_evaluations": int(facts.broken_evaluations),
        "fit_seconds": float(fits.sum()) if len(fits) else 0.0,
        "fit_seconds_computed": float(fits[later["fit_cache"] == "miss"].sum()) if len(fits) else 0.0,
        "fit_cache_hits": int((later["fit_cache"] == "hit").sum()) if len(later) else 0,
        "lifecycle_runs": len(lifecycle),
        "lifecycle_seconds": float(lifecycle["seconds"].sum()) if len(lifecycle) else 0.0,
    }
