"""Reading the Dagster instance: which sale months are ready for the model, and what their checks said.

The ingest checks are not partitioned, so their execution records carry no month. A month's verdict is
therefore read from the runs that produced its latest materializations: a month is ready only when every
blocking check of every asset the model consumes passed in the run that materialized that month's data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import dagster as dg
from dagster._core.events import DagsterEventType

# The data the model consumes, upstream first; their blocking checks gate drift and retraining.
CONSUMED_ASSETS: tuple[str, ...] = ("raw_sales", "clean_sales", "sale_features")
PARTITION_TAG = "dagster/partition"


def blocking_check_keys(
    repository_def: dg.RepositoryDefinition | None, assets: Iterable[str] = CONSUMED_ASSETS
) -> dict[str, list[dg.AssetCheckKey]]:
    """Blocking checks per consumed asset, from the code location (or the ingest modules without one)."""
    wanted = {dg.AssetKey(a) for a in assets}
    out: dict[str, list[dg.AssetCheckKey]] = {a: [] for a in assets}
    if repository_def is not None:
        graph = repository_def.asset_graph
        for key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
            spec = graph.get_check_spec(key)
            if spec.blocking and key.asset_key in wanted:
                out[key.asset_key.to_user_string()].append(key)
        return out
    from homeprice_assets.features.assets import FEATURE_CHECKS
    from homeprice_assets.ingest.checks import CLEAN_CHECKS, RAW_CHECKS

    for spec in [*RAW_CHECKS, *CLEAN_CHECKS, *FEATURE_CHECKS]:
        if spec.blocking and spec.asset_key in wanted:
            out[spec.asset_key.to_user_string()].append(spec.key)
    return out


@dataclass(frozen=True)
class CheckOutcome:
    key: dg.AssetCheckKey
    passed: bool
    severity: str
    run_id: str
    description: str | None
    metadata: Mapping[str, object]


def check_outcomes(instance: dg.DagsterInstance, run_id: str) -> dict[dg.AssetCheckKey, CheckOutcome]:
    """Every asset check evaluated in one run, by key (the last evaluation wins)."""
    out: dict[dg.AssetCheckKey, CheckOutcome] = {}
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if evaluation is None:
            continue
        out[evaluation.asset_check_key] = CheckOutcome(
            key=evaluation.asset_check_key,
            passed=bool(evaluation.passed),
            severity=evaluation.severity.value,
            run_id=run_id,
            description=evaluation.description,
            metadata={k: getattr(v, "value", v) for k, v in evaluation.metadata.items()},
        )
    return out


Readiness = Literal["ready", "blocked", "pending"]


@dataclass(frozen=True)
class MonthStatus:
    month: str
    state: Readiness
    failed: tuple[str, ...] = ()  # "asset.check" names that failed
    waiting: tuple[str, ...] = ()  # assets or checks not yet materialized / evaluated


def month_status(
    instance: dg.DagsterInstance,
    month: str,
    checks: Mapping[str, Sequence[dg.AssetCheckKey]],
) -> MonthStatus:
    """Is ``month`` fit for the model? Reads each consumed asset's latest materialization and its run."""
    failed: list[str] = []
    waiting: list[str] = []
    for asset, keys in checks.items():
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[month]), limit=1
        ).records
        if not records:
            waiting.append(asset)
            continue
        outcomes = check_outcomes(instance, records[0].run_id) if keys else {}
        for key in keys:
            outcome = outcomes.get(key)
            if outcome is None:
                waiting.append(f"{asset}.{key.name}")
            elif not outcome.passed:
                failed.append(f"{asset}.{key.name}")
    state: Readiness = "blocked" if failed else ("pending" if waiting else "ready")
    return MonthStatus(month, state, tuple(failed), tuple(waiting))


def ready_months(
    instance: dg.DagsterInstance, months: Iterable[str], checks: Mapping[str, Sequence[dg.AssetCheckKey]]
) -> list[str]:
    return sorted(m for m in months if month_status(instance, m, checks).state == "ready")


def run_partition(instance: dg.DagsterInstance, run_id: str) -> str | None:
    run = instance.get_run_by_id(run_id)
    return run.tags.get(PARTITION_TAG) if run else None
