"""Reading the Dagster instance: which sale months are fit for the model, and what their checks said.

This describes the ingest graph's output (raw -> clean -> features of a month), so it lives beside it; the
training assets, the drift report and the sensors all ask it the same question.

A month's verdict is read from the runs that produced its latest materializations: a month is ready only
when every blocking check of every asset the model consumes passed for that month in the run that
materialized that month's data, or failed but was accepted by a person (``homeprice accept-month``) for
exactly that run. A run may cover many months (a range run); its check evaluations carry their month as
their partition (those of one-month runs from before range runs carry none: they are the run's month).
"""

from __future__ import annotations

import getpass
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dagster as dg
from dagster._core.events import DagsterEventType

# Tag on ingest runs: the digest of the landed files they ingested (set by the landing sensor and the CLI).
from homeprice_assets.resources.landing import LANDED_DIGEST_TAG

# raw_sales metadata naming the digest of the landed files it was made from (see ingest/report.py).
LANDED_DIGEST_KEY = "landed_digest"

# The data the model consumes, upstream first; their blocking checks gate drift and retraining.
CONSUMED_ASSETS: tuple[str, ...] = ("raw_sales", "clean_sales", "sale_features")
PARTITION_TAG = "dagster/partition"
INGEST_JOB = "ingest_job"
SALE_FEATURES = dg.AssetKey("sale_features")
# Blocking checks a person may overrule for one month (the data is right, the world moved):
# ``homeprice accept-month`` records the acceptance as an observation of that month's ``sale_features``.
ACCEPTABLE_CHECKS: tuple[str, ...] = ("price_level",)
ACCEPTED_CHECKS_KEY = "accepted_checks"
ACCEPTED_RUN_KEY = "accepted_run_id"


def code_location(context: dg.AssetExecutionContext) -> dg.RepositoryDefinition | None:
    """The code location, when the executor knows it (in-process jobs may not; then the ingest modules)."""
    try:
        return context.repository_def
    except Exception:
        return None


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


def check_outcomes(
    instance: dg.DagsterInstance,
    run_id: str,
    month: str | None = None,
    cache: dict[str, list[Any]] | None = None,
) -> dict[dg.AssetCheckKey, CheckOutcome]:
    """Every asset check evaluated in one run (for ``month``, when given), by key (the last one wins).

    ``cache`` (run id -> the run's evaluations), shared by a caller that asks about many months: a range
    run holds every month's evaluations, and reading them once instead of once per month keeps judging a
    60-month window linear in its months (it was quadratic: 56 s of a 1M-sale training split).
    """
    out: dict[dg.AssetCheckKey, CheckOutcome] = {}
    evaluations = cache.get(run_id) if cache is not None else None
    if evaluations is None:
        evaluations = [
            entry.dagster_event.event_specific_data
            for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
            if entry.dagster_event
        ]
        if cache is not None:
            cache[run_id] = evaluations
    for evaluation in evaluations:
        if evaluation is None:
            continue
        if month is not None and evaluation.partition not in (None, month):
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
    failed: tuple[str, ...] = ()  # "asset.check" names that failed (and were not accepted)
    waiting: tuple[str, ...] = ()  # assets or checks not yet materialized / evaluated
    accepted: tuple[str, ...] = ()  # "asset.check" names that failed but a person accepted


def latest_record(
    instance: dg.DagsterInstance, asset: dg.AssetKey | str, month: str
) -> dg.EventLogRecord | None:
    """``asset``'s latest materialization for ``month``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey.from_coercible(asset), asset_partitions=[month]), limit=1
    ).records
    return records[0] if records else None


def latest_run_id(instance: dg.DagsterInstance, asset: dg.AssetKey | str, month: str) -> str | None:
    """The run of ``asset``'s latest materialization for ``month``."""
    record = latest_record(instance, asset, month)
    return record.run_id if record else None


def accepted_checks(instance: dg.DagsterInstance, month: str, run_id: str) -> set[str]:
    """Checks a person accepted for the ``sale_features`` of ``month`` made by run ``run_id``."""
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=SALE_FEATURES, asset_partitions=[month]), limit=50
    ).records
    out: set[str] = set()
    for record in records:
        obs = record.asset_observation
        meta = {k: getattr(v, "value", v) for k, v in (obs.metadata if obs else {}).items()}
        if meta.get(ACCEPTED_RUN_KEY) == run_id:
            out.update(json.loads(str(meta.get(ACCEPTED_CHECKS_KEY) or "[]")))
    return out


def month_status(
    instance: dg.DagsterInstance,
    month: str,
    checks: Mapping[str, Sequence[dg.AssetCheckKey]],
    cache: dict[str, list[Any]] | None = None,
) -> MonthStatus:
    """Is ``month`` fit for the model? Reads each consumed asset's latest materialization and its run.

    Pass the same ``cache`` (a dict) when judging many months in one go (see ``check_outcomes``).
    """
    cache = {} if cache is None else cache
    failed: list[str] = []
    waiting: list[str] = []
    accepted: list[str] = []
    for asset, keys in checks.items():
        run_id = latest_run_id(instance, asset, month)
        if run_id is None:
            waiting.append(asset)
            continue
        outcomes = check_outcomes(instance, run_id, month, cache) if keys else {}
        overruled: set[str] | None = None
        for key in keys:
            outcome = outcomes.get(key)
            if outcome is None:
                waiting.append(f"{asset}.{key.name}")
            elif not outcome.passed:
                if key.name in ACCEPTABLE_CHECKS:
                    if overruled is None:
                        overruled = accepted_checks(instance, month, run_id)
                    if key.name in overruled:
                        accepted.append(f"{asset}.{key.name}")
                        continue
                failed.append(f"{asset}.{key.name}")
    state: Readiness = "blocked" if failed else ("pending" if waiting else "ready")
    return MonthStatus(month, state, tuple(failed), tuple(waiting), tuple(accepted))


def accept_month(instance: dg.DagsterInstance, month: str, note: str = "") -> list[str]:
    """Accept the failed, acceptable checks of ``month``'s latest features; returns the checks accepted.

    The acceptance names the run it overrules, so data landed again for the month is checked afresh.
    Raises ``ValueError`` when the month has no features or nothing a person may accept failed.
    """
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise ValueError(f"month: expected a sale month like 2016-08, got {month!r}")
    run_id = latest_run_id(instance, SALE_FEATURES, month)
    if run_id is None:
        raise ValueError(f"month {month}: no sale_features materialized for it (land and ingest it first)")
    outcomes = check_outcomes(instance, run_id, month)
    failing = sorted(
        o.key.name
        for o in outcomes.values()
        if o.key.asset_key == SALE_FEATURES and not o.passed and o.key.name in ACCEPTABLE_CHECKS
    )
    if not failing:
        raise ValueError(
            f"month {month}: nothing to accept; no check among {list(ACCEPTABLE_CHECKS)} failed in its "
            f"latest ingest run {run_id}"
        )
    try:
        who = getpass.getuser()
    except Exception:
        who = "unknown"
    instance.report_runless_asset_event(
        dg.AssetObservation(
            asset_key=SALE_FEATURES,
            partition=month,
            description=f"accepted by {who}: " + ", ".join(failing) + (f" ({note})" if note else ""),
            metadata={
                ACCEPTED_CHECKS_KEY: json.dumps(failing),
                ACCEPTED_RUN_KEY: run_id,
                "accepted_by": who,
                "note": note,
            },
        )
    )
    return failing


def already_ingested(
    instance: dg.DagsterInstance, month: str, digest: str, include_failed: bool = False
) -> bool:
    """These landed files of ``month`` were ingested (with ``include_failed``: even if a check held it back).

    Whoever ran it, alone or in a range: the month's latest ``raw_sales`` materialization names the digest
    of the files it was made from, and is accepted when the month was not held back (or ``include_failed``).
    One-month runs (the landing sensor's, ``homeprice ingest`` of one month) also carry the digest as a tag,
    which finds a run that failed before ``raw_sales`` was stored. A run failed by a blocking check has said
    what it had to say (alert, month held back); running the same files again would only repeat it, so the
    landing sensor counts it too.
    """
    record = latest_record(instance, "raw_sales", month)
    mat = record.asset_materialization if record else None
    entry = (mat.metadata if mat else {}).get(LANDED_DIGEST_KEY)
    if record is not None and getattr(entry, "value", entry) == digest:
        if include_failed:
            return True
        outcomes = check_outcomes(instance, record.run_id, month)
        if not any(
            o.key.asset_key.to_user_string() in CONSUMED_ASSETS and not o.passed for o in outcomes.values()
        ):
            return latest_run_id(instance, SALE_FEATURES, month) == record.run_id
    statuses = [dg.DagsterRunStatus.SUCCESS]
    if include_failed:
        statuses.append(dg.DagsterRunStatus.FAILURE)
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=INGEST_JOB,
            statuses=statuses,
            tags={PARTITION_TAG: month, LANDED_DIGEST_TAG: digest},
        ),
        limit=1,
    )
    return bool(runs)


def run_partition(instance: dg.DagsterInstance, run_id: str) -> str | None:
    run = instance.get_run_by_id(run_id)
    return run.tags.get(PARTITION_TAG) if run else None
