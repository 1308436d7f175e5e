"""What the ``homeprice`` command says about ingesting each month: one line, and the reason when it failed.

The reasons come from the run itself (failed blocking checks with their descriptions: the missing column
names, the rule counts; a failed step's error message without its traceback) and are kept as tags on the
run, so a month that failed is not re-run until its files (or the ``data`` settings) change, and its
earlier reason is shown instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dagster as dg

from homeprice_assets.config import DataConfig
from homeprice_assets.resources.landing import LANDED_DIGEST_TAG, LandingZone, SetAside, month_digest

REASON_TAG = "homeprice/ingest_reason"
# A hash of the ``data`` configuration the run read with: fixing a mapping or an encoding retries the month.
DATA_CONFIG_TAG = "homeprice/data_config"
SUMMARY_TAG = "homeprice/ingest_summary"
_MAX_TAG = 2000  # run tags are short strings; reasons are trimmed to this

State = Literal["ran", "unchanged", "failed", "failed_before"]


@dataclass(frozen=True)
class MonthOutcome:
    month: str
    state: State
    summary: str = ""
    reasons: tuple[str, ...] = ()  # why the month failed (blocking checks, step errors)
    warnings: tuple[str, ...] = ()  # failed non-blocking checks (files set aside, null rates, ...)
    run_id: str | None = None

    @property
    def failed(self) -> bool:
        return self.state in ("failed", "failed_before")

    def lines(self) -> list[str]:
        head = {
            "ran": "ingested",
            "unchanged": "unchanged",
            "failed": "FAILED",
            "failed_before": "FAILED earlier, files unchanged (not retried)",
        }[self.state]
        out = [f"  {self.month}  {head}" + (f": {self.summary}" if self.summary else "")]
        out += [f"      - {r}" for r in self.reasons]
        out += [f"      ! {w}" for w in self.warnings]
        return out


@dataclass
class IngestReport:
    months: dict[str, MonthOutcome] = field(default_factory=dict)
    in_no_month: list[SetAside] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [m for m, o in self.months.items() if o.failed]

    def lines(self) -> list[str]:
        ran = sum(o.state in ("ran", "failed") for o in self.months.values())
        unchanged = sum(o.state == "unchanged" for o in self.months.values())
        failed = self.failed
        out = [line for o in self.months.values() for line in o.lines()]
        for aside in self.in_no_month:
            out.append(f"  landing zone: {aside.key} is in no month: {aside.reason}")
        out.append(
            f"ingested {len(self.months) - len(failed)}/{len(self.months)} month(s): {ran} run(s), "
            f"{unchanged} unchanged"
            + (f"; failed: {', '.join(failed)}" if failed else "")
            + (f"; {len(self.in_no_month)} landed file(s) in no month" if self.in_no_month else "")
        )
        return out


def _metadata_value(value: Any) -> Any:
    return getattr(value, "value", value)


def _check_text(evaluation: dg.AssetCheckEvaluation) -> str:
    name = f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name}"
    if evaluation.description:
        return f"{name}: {evaluation.description}"
    figures = ", ".join(f"{k}={_metadata_value(v)}" for k, v in list(evaluation.metadata.items())[:6])
    return f"{name}: failed ({figures})"


def _step_errors(result: dg.ExecuteInProcessResult) -> list[str]:
    """First line of each failed step's error (not the traceback); blocking-check stops are said elsewhere."""
    out = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            message = (error.message or "").strip().splitlines()
            text = message[0] if message else error.cls_name or "error"
            if "blocking" in text.lower() and "check" in text.lower():
                continue
            out.append(f"{event.step_key}: {text}")
    return out


def _summary(result: dg.ExecuteInProcessResult) -> str:
    meta: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        meta[mat.asset_key.to_user_string()] = {k: _metadata_value(v) for k, v in mat.metadata.items()}
    raw, clean = meta.get("raw_sales", {}), meta.get("clean_sales", {})
    parts = []
    if clean:
        parts.append(f"{clean.get('rows', 0)} clean, {clean.get('quarantined_rows', 0)} quarantined")
    elif raw:
        parts.append(f"{raw.get('rows', 0)} raw rows")
    if raw.get("repeated_rows_left_out"):
        parts.append(f"{raw['repeated_rows_left_out']} repeated row(s) left out")
    if raw.get("quarantined_files"):
        parts.append(f"{raw['quarantined_files']} file(s) set aside")
    return ", ".join(parts)


def outcome_of(month: str, result: dg.ExecuteInProcessResult) -> MonthOutcome:
    """The one-line story of an ingest run: failed blocking checks and step errors are its reasons."""
    reasons, warnings = [], []
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed:
            continue
        if evaluation.blocking:
            reasons.append(_check_text(evaluation))
        elif evaluation.severity == dg.AssetCheckSeverity.ERROR:
            warnings.append(_check_text(evaluation))
    reasons += _step_errors(result)
    if not result.success and not reasons:
        reasons.append(f"the run failed (Dagster run {result.run_id})")
    return MonthOutcome(
        month=month,
        state="ran" if result.success else "failed",
        summary=_summary(result),
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        run_id=result.run_id,
    )


def data_config_digest(config: DataConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def earlier_run(
    instance: dg.DagsterInstance, month: str, digest: str, config_digest: str
) -> dg.DagsterRun | None:
    """The newest finished ingest run of exactly these files and data settings (success or failure)."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name="ingest_job",
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
            tags={"dagster/partition": month, LANDED_DIGEST_TAG: digest, DATA_CONFIG_TAG: config_digest},
        ),
        limit=1,
    )
    return runs[0] if runs else None


def _earlier_outcome(month: str, run: dg.DagsterRun) -> MonthOutcome:
    if run.status == dg.DagsterRunStatus.SUCCESS:
        return MonthOutcome(month, "unchanged", summary=run.tags.get(SUMMARY_TAG, ""), run_id=run.run_id)
    reason = run.tags.get(REASON_TAG) or f"see Dagster run {run.run_id}"
    return MonthOutcome(
        month,
        "failed_before",
        summary=run.tags.get(SUMMARY_TAG, ""),
        reasons=tuple(reason.split("\n")),
        run_id=run.run_id,
    )


def ingest_months(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    landing: LandingZone,
    months: Sequence[str] | None,
    run_config: dict[str, Any],
    config: DataConfig,
    progress: Callable[[Iterable[str]], Iterable[str]] = lambda it: it,
    register: Callable[[dg.DagsterInstance, list[str]], Any] | None = None,
) -> IngestReport:
    """Run ``job`` for each landed month whose files changed since its last finished run.

    A month whose last run of the same files (and ``data`` settings) succeeded is "unchanged"; one whose
    last such run failed is not retried ("failed_before") and reports the reason that run recorded.
    """
    scan = landing.scan(config)
    config_digest = data_config_digest(config)
    todo = list(months) if months is not None else sorted({f.month for f in scan.files})
    if register is not None:
        register(instance, todo)
    report = IngestReport(in_no_month=list(scan.set_aside))
    for month in progress(todo):
        digest = month_digest(scan.files, month)
        earlier = earlier_run(instance, month, digest, config_digest)
        if earlier is not None:
            report.months[month] = _earlier_outcome(month, earlier)
            continue
        result = job.execute_in_process(
            instance=instance,
            partition_key=month,
            raise_on_error=False,
            run_config=run_config,
            tags={LANDED_DIGEST_TAG: digest, DATA_CONFIG_TAG: config_digest},
        )
        outcome = outcome_of(month, result)
        tags = {SUMMARY_TAG: outcome.summary[:_MAX_TAG]}
        if outcome.reasons:
            tags[REASON_TAG] = "\n".join(outcome.reasons)[:_MAX_TAG]
        instance.add_run_tags(result.run_id, tags)
        report.months[month] = outcome
    return report
