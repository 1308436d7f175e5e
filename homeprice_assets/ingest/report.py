"""What the ``homeprice`` command says about ingesting each month: one line, and the reason when it failed.

The months to ingest run together: one run per contiguous range of sale-month partitions (usually one run
for all of them), whose step emits each month's materializations and check evaluations with the month as
their partition. A month's reasons come from its own events (failed blocking checks with their
descriptions: the missing column names, the rule counts; the error of a month that raised, without its
traceback). Its ``raw_sales`` materialization records the digest of the files and of the ``data`` settings
it was made from, so a month that failed is not re-run until those change, and its earlier reason (read
back from the same events) is shown instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster._core.utils import make_new_run_id

from homeprice_assets.config import DataConfig
from homeprice_assets.ingest.history import latest_records
from homeprice_assets.ingest.status import LANDED_DIGEST_KEY, SALE_FEATURES, accepted_checks
from homeprice_assets.resources.landing import LANDED_DIGEST_TAG, LandingZone, SetAside, month_digest

REASON_TAG = "homeprice/ingest_reason"
# A hash of the ``data`` configuration the run read with: fixing a mapping or an encoding retries the month.
DATA_CONFIG_TAG = "homeprice/data_config"
SUMMARY_TAG = "homeprice/ingest_summary"
# raw_sales metadata: what the month was made from (landed files: LANDED_DIGEST_KEY; data settings).
DATA_CONFIG_KEY = "data_config"
# Metadata of the failure of an ingest step: {month: error} for the months that raised.
MONTH_ERRORS_KEY = "month_errors"
_MAX_TAG = 2000  # run tags are short strings; reasons are trimmed to this
# {month: [summary, [reasons]]} of every month of an ingest run, tagged on it when it ends: a month whose
# files did not change is then told from one tag, not from its run's stored events (a range run over the
# bundled history has about 1,300 of them; reading them cost 0.48 of the 0.53 s of an ingest with nothing
# new). A run without the tag (stopped before it, or launched by a sensor or the UI) is read from its events.
OUTCOMES_TAG = "homeprice/ingest_outcomes"
_MAX_OUTCOMES_TAG = 64_000  # about 50 bytes a month that passed: a few hundred months

State = Literal["ran", "unchanged", "failed", "failed_before", "accepted"]


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
            "accepted": "held back, then accepted (homeprice accept-month); files unchanged",
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
        unchanged = sum(o.state in ("unchanged", "accepted") for o in self.months.values())
        failed = self.failed
        out = [line for o in self.months.values() for line in o.lines()]
        for aside in self.in_no_month:
            out.append(f"  landing zone: {aside.key} is in no month: {aside.reason}")
        out.append(
            f"ingested {len(self.months) - len(failed)}/{len(self.months)} month(s): {ran} ran, "
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


def _month_errors(failure: Any) -> dict[str, str] | None:
    """{month: error} recorded by an ingest step that failed for some months (None: not such a failure)."""
    user = getattr(failure, "user_failure_data", None)
    entry = (user.metadata or {}).get(MONTH_ERRORS_KEY) if user is not None else None
    value = getattr(entry, "value", entry)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else None


def _step_errors(events: Iterable[Any], month: str) -> list[str]:
    """First line of each failed step's error that concerns ``month`` (not the traceback).

    Blocking-check stops are said by the checks themselves; an ingest step that names the months that
    raised blames only those.
    """
    out = []
    for event in events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            per_month = _month_errors(event.step_failure_data)
            if per_month is not None:
                if month in per_month:
                    out.append(f"{event.step_key}: {per_month[month]}")
                continue
            error = event.step_failure_data.error
            message = (error.message or "").strip().splitlines()
            text = message[0] if message else error.cls_name or "error"
            if "blocking" in text.lower() and "check" in text.lower():
                continue
            out.append(f"{event.step_key}: {text}")
    return out


def _of_month(partition: str | None, month: str) -> bool:
    """An event of ``month`` (events of runs before range runs carry no partition: the run's month)."""
    return partition is None or partition == month


def _summary(materializations: Iterable[dg.AssetMaterialization]) -> str:
    meta: dict[str, dict[str, Any]] = {}
    for mat in materializations:
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


def _judge(
    month: str,
    evaluations: Iterable[dg.AssetCheckEvaluation],
    materializations: Iterable[dg.AssetMaterialization],
    step_events: Iterable[Any],
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(summary, reasons, warnings) of ``month`` from its events in one run."""
    reasons, warnings = [], []
    for evaluation in evaluations:
        if not _of_month(evaluation.partition, month) or evaluation.passed:
            continue
        if evaluation.blocking:
            reasons.append(_check_text(evaluation))
        elif evaluation.severity == dg.AssetCheckSeverity.ERROR:
            warnings.append(_check_text(evaluation))
    reasons += _step_errors(step_events, month)
    summary = _summary(m for m in materializations if _of_month(m.partition, month))
    return summary, tuple(reasons), tuple(warnings)


def outcome_of(month: str, result: dg.ExecuteInProcessResult) -> MonthOutcome:
    """The one-line story of ``month`` in an ingest run (of it alone or of a range of months).

    Its failed blocking checks and its step errors are its reasons; another month's failure in the same
    run is not its own.
    """
    summary, reasons, warnings = _judge(
        month,
        result.get_asset_check_evaluations(),
        (e.materialization for e in result.get_asset_materialization_events()),
        result.all_events,
    )
    if not result.success and not reasons and not summary:
        reasons = (f"the run failed (Dagster run {result.run_id})",)
    return MonthOutcome(
        month=month,
        state="failed" if reasons else "ran",
        summary=summary,
        reasons=reasons,
        warnings=warnings,
        run_id=result.run_id,
    )


def data_config_digest(config: DataConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def earlier_run(
    instance: dg.DagsterInstance, month: str, digest: str, config_digest: str
) -> dg.DagsterRun | None:
    """The newest finished one-month ingest run of exactly these files and data settings (tagged)."""
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


class RunEvents:
    """The stored events of finished ingest runs, read once per run (a range run holds many months)."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self._runs: dict[str, list[Any]] = {}

    def of(self, run_id: str) -> list[Any]:
        if run_id not in self._runs:
            types = {
                DagsterEventType.ASSET_CHECK_EVALUATION,
                DagsterEventType.ASSET_MATERIALIZATION,
                DagsterEventType.STEP_FAILURE,
            }
            self._runs[run_id] = [
                e.dagster_event
                for e in self.instance.all_logs(run_id, of_type=types)
                if e.dagster_event is not None
            ]
        return self._runs[run_id]


def _outcome_from_events(month: str, run_id: str, stored: list[Any]) -> MonthOutcome:
    evaluations = [
        e.event_specific_data for e in stored if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    materializations = [
        e.event_specific_data.materialization
        for e in stored
        if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
    ]
    summary, reasons, _ = _judge(month, evaluations, materializations, stored)
    return _told_before(month, run_id, summary, reasons)


def _told_before(month: str, run_id: str, summary: str, reasons: tuple[str, ...]) -> MonthOutcome:
    """A month ingested before from the same files: failed then if it had reasons, else unchanged."""
    state: State = "failed_before" if reasons else "unchanged"
    return MonthOutcome(month, state, summary=summary, reasons=reasons, run_id=run_id)


def _made_from(record: dg.EventLogRecord | None, digest: str, config_digest: str) -> bool:
    """Was this ``raw_sales`` materialization made from exactly these files and data settings?"""
    mat = record.asset_materialization if record else None
    meta = {k: _metadata_value(v) for k, v in (mat.metadata if mat else {}).items()}
    made_from = (meta.get(LANDED_DIGEST_KEY), meta.get(DATA_CONFIG_KEY))
    return mat is not None and made_from == (digest, config_digest)


def earlier_outcome(
    instance: dg.DagsterInstance, month: str, digest: str, config_digest: str, events: RunEvents | None = None
) -> MonthOutcome | None:
    """What happened when exactly these files and data settings of ``month`` were ingested, if they were.

    Read from the month's latest ``raw_sales`` materialization (which names its files' and settings'
    digests) and that run's events for the month; runs from before range runs are found by their tags.
    """
    return earlier_outcomes(instance, {month: digest}, config_digest, events)[month]


def earlier_outcomes(
    instance: dg.DagsterInstance,
    digests: dict[str, str],
    config_digest: str,
    events: RunEvents | None = None,
) -> dict[str, MonthOutcome | None]:
    """``earlier_outcome`` of each month of ``digests`` ({month: digest of its landed files}), read in a
    few queries for all of them (the latest ``raw_sales`` of every month at once, each run's events once,
    the tagged runs of every month not found that way at once) rather than a few queries per month."""
    events = events or RunEvents(instance)
    raw = latest_records(instance, dg.AssetKey("raw_sales"), list(digests))
    made = {
        month: record.run_id
        for month, record in raw.items()
        if _made_from(record, digests[month], config_digest)
    }
    tagged = tagged_outcomes(instance, set(made.values()))
    out: dict[str, MonthOutcome | None] = {}
    missing = []
    for month in digests:
        run_id = made.get(month)
        if run_id is None:
            missing.append(month)
        elif month in tagged.get(run_id, {}):
            out[month] = _told_before(month, run_id, *tagged[run_id][month])
        else:
            out[month] = _outcome_from_events(month, run_id, events.of(run_id))
    if len(missing) == 1:
        run = earlier_run(instance, missing[0], digests[missing[0]], config_digest)
        out[missing[0]] = _earlier_outcome(missing[0], run) if run is not None else None
    elif missing:
        runs = instance.get_runs(
            filters=dg.RunsFilter(
                job_name="ingest_job",
                statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
                tags={
                    "dagster/partition": missing,
                    LANDED_DIGEST_TAG: sorted({digests[m] for m in missing}),
                    DATA_CONFIG_TAG: config_digest,
                },
            )
        )
        newest: dict[tuple[str, str], dg.DagsterRun] = {}
        for run in runs:  # newest first
            key = (run.tags.get("dagster/partition", ""), run.tags.get(LANDED_DIGEST_TAG, ""))
            newest.setdefault(key, run)
        for month in missing:
            run = newest.get((month, digests[month]))
            out[month] = _earlier_outcome(month, run) if run is not None else None
    return {month: out[month] for month in digests}


def tag_outcomes(instance: dg.DagsterInstance, run_id: str, outcomes: Iterable[MonthOutcome]) -> None:
    """Tag a finished ingest run with each month's summary and reasons (``OUTCOMES_TAG``)."""
    value = {o.month: [o.summary[:_MAX_TAG], [r[:_MAX_TAG] for r in o.reasons]] for o in outcomes}
    text = json.dumps(value, sort_keys=True)
    if len(text) <= _MAX_OUTCOMES_TAG:  # else (many long reasons) the run's events tell them
        instance.add_run_tags(run_id, {OUTCOMES_TAG: text})


def tagged_outcomes(
    instance: dg.DagsterInstance, run_ids: set[str]
) -> dict[str, dict[str, tuple[str, tuple[str, ...]]]]:
    """{run id: {month: (summary, reasons)}} of the runs of ``run_ids`` tagged by ``tag_outcomes``."""
    if not run_ids:
        return {}
    out = {}
    for run in instance.get_runs(filters=dg.RunsFilter(run_ids=sorted(run_ids))):
        text = run.tags.get(OUTCOMES_TAG)
        if text is None:
            continue
        with contextlib.suppress(ValueError, TypeError, AttributeError):  # a damaged tag: read the events
            out[run.run_id] = {
                str(month): (str(summary), tuple(str(r) for r in reasons))
                for month, (summary, reasons) in json.loads(text).items()
            }
    return out


def partition_blocks(instance: dg.DagsterInstance, months: Sequence[str]) -> list[list[str]]:
    """``months`` as runs of adjacent sale-month partitions: a Dagster run covers one range of partitions.

    Dynamic partitions are ordered as they were added, so a month landed late (history back-filled after
    newer months) starts a range of its own.
    """
    position = {m: i for i, m in enumerate(instance.get_dynamic_partitions("sale_month"))}
    unknown = [m for m in months if m not in position]
    if unknown:
        raise ValueError(f"months {unknown}: not registered as sale-month partitions")
    blocks: list[list[str]] = []
    for month in sorted(months, key=position.__getitem__):
        if blocks and position[month] == position[blocks[-1][-1]] + 1:
            blocks[-1].append(month)
        else:
            blocks.append([month])
    return sorted(blocks, key=min)


def range_tags(months: Sequence[str]) -> dict[str, str]:
    """Tags that make one run cover ``months`` (adjacent partitions, in partition order)."""
    return {ASSET_PARTITION_RANGE_START_TAG: months[0], ASSET_PARTITION_RANGE_END_TAG: months[-1]}


_MONTH_LINE = re.compile(r"^(\d{4}-\d{2}): ")


class MonthWatcher:
    """Calls ``done(month)`` as each month of a running ingest run finishes.

    A range run is one Dagster step over many months; the step logs one line per finished month
    (``"YYYY-MM: ..."``). The run goes on in this process, so the instance hands each of its events to a
    listener here as it stores it, and the command line shows progress per month. (Reading the run's events
    back from storage in a thread, as this did before, deserialized every event of the run a second time:
    about 5% of an ingest.) ``poll`` reads them back from storage, for a run that ran elsewhere.
    """

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        months: Sequence[str],
        done: Callable[[str], None],
    ) -> None:
        self.instance, self.run_id, self.months, self.done = instance, run_id, set(months), done
        self.cursor, self.seen, self.watching = None, set[str](), False
        self._lock = threading.Lock()

    def _saw(self, entry: Any) -> None:
        match = _MONTH_LINE.match(entry.user_message or "") if entry.dagster_event is None else None
        if match is None:
            return
        with self._lock:
            if match.group(1) not in self.months - self.seen:
                return
            self.seen.add(match.group(1))
        self.done(match.group(1))

    def poll(self) -> None:
        """The month lines stored since the last poll."""
        connection = self.instance.get_records_for_run(self.run_id, cursor=self.cursor)
        self.cursor = connection.cursor
        for record in connection.records:
            self._saw(record.event_log_entry)

    def __enter__(self) -> MonthWatcher:
        self.watching = True
        self.instance.add_event_listener(self.run_id, self._listen)
        return self

    def _listen(self, entry: Any) -> None:
        """Called by the instance with each event it stores: progress never fails the run."""
        if self.watching:
            with contextlib.suppress(Exception):
                self._saw(entry)

    def __exit__(self, *exc: object) -> None:
        self.watching = False  # the instance keeps its listeners: this one does nothing from now on
        for month in sorted(self.months - self.seen):  # months that ended without their line (an error)
            self.seen.add(month)
            self.done(month)


def ingest_months(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    landing: LandingZone,
    months: Sequence[str] | None,
    run_config: dict[str, Any],
    config: DataConfig,
    progress: Callable[[int], Callable[[str], None]] | None = None,
    register: Callable[[dg.DagsterInstance, list[str]], Any] | None = None,
) -> IngestReport:
    """Run ``job`` once over the landed months whose files (or ``data`` settings) changed since they ran.

    A month whose last ingest of the same files and settings passed is "unchanged"; one whose last such
    ingest failed is not retried ("failed_before") and reports the reason recorded then. The others run
    together, one run per range of adjacent partitions. ``progress(n)`` is called with the number of months
    to run and returns a callback called with each month as it finishes.
    """
    scan = landing.scan(config)
    config_digest = data_config_digest(config)
    todo = sorted(months) if months is not None else sorted({f.month for f in scan.files})
    if register is not None:
        register(instance, todo)
    report = IngestReport(in_no_month=list(scan.set_aside))
    outcomes: dict[str, MonthOutcome] = {}
    digests = {month: month_digest(scan.files, month) for month in todo}
    earlier_ones = earlier_outcomes(instance, digests, config_digest)
    to_run = []
    for month in todo:
        earlier = earlier_ones[month]
        if earlier is not None:
            outcomes[month] = earlier
        else:
            to_run.append(month)
    done = progress(len(to_run)) if progress is not None and to_run else None
    for block in partition_blocks(instance, to_run) if to_run else []:
        tags = {DATA_CONFIG_TAG: config_digest}
        if len(block) == 1:  # the landing sensor's runs are one month each and carry the same tag
            tags[LANDED_DIGEST_TAG] = digests[block[0]]
        else:
            tags.update(range_tags(block))
        run_id = make_new_run_id()
        with MonthWatcher(instance, run_id, block, done) if done else contextlib.nullcontext():
            result = job.execute_in_process(
                instance=instance,
                partition_key=block[0] if len(block) == 1 else None,
                raise_on_error=False,
                run_config=run_config,
                tags=tags,
                run_id=run_id,
            )
        for month in block:
            outcomes[month] = outcome_of(month, result)
        tag_outcomes(instance, result.run_id, (outcomes[m] for m in block))
    report.months = {m: _with_acceptance(instance, outcomes[m]) for m in todo}
    return report


def _with_acceptance(instance: dg.DagsterInstance, outcome: MonthOutcome) -> MonthOutcome:
    """A failed month whose every reason is a check a person accepted (``homeprice accept-month``) for
    that run is not failed: the model uses it. The accepted checks stay in view as warnings."""
    if outcome.state != "failed_before" or outcome.run_id is None:
        return outcome
    accepted = accepted_checks(instance, outcome.month, outcome.run_id)
    prefixes = tuple(f"{SALE_FEATURES.to_user_string()}.{name}:" for name in accepted)
    if not prefixes or not all(r.startswith(prefixes) for r in outcome.reasons):
        return outcome
    return MonthOutcome(
        outcome.month,
        "accepted",
        summary=outcome.summary,
        warnings=(*outcome.warnings, *(f"accepted: {r}" for r in outcome.reasons)),
        run_id=outcome.run_id,
    )
