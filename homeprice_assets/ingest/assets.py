"""Landed files -> raw sales -> clean sales + quarantine -> features, one sale month per partition.

The four software-defined assets (``raw_sales``, ``clean_sales``, ``quarantined_sales``, ``sale_features``)
are computed by one range-aware step, ``ingest_sales``: a run covers one month (the landing sensor) or a
range of months (``homeprice ingest``, a backfill with the single-run policy), and walks its months in order
in one process. Each month still gets its own materializations (data version, metadata, Parquet file) and
its own check evaluations (partition set), emitted as it is done; a month whose blocking check fails is held
back alone (nothing downstream of the failed check is materialized for it) while the later months go on.
Any failed blocking check still fails the run at the end, so alerts and the run status say so.

Why one step rather than a single-run backfill of separate steps: Dagster gives all partitions of a range
output one data version and one outcome, whereas each month here has its own content version and its own
verdict. Per-month work is light (pandas on a few hundred rows), so the run uses the in-process executor.
In a run of several months a forked worker process reads, cleans, featurizes and encodes the next months
while the step stores the current one's files and events (``_Prefetch``): the step still decides, stores
and emits everything, in month order, as it would alone.
"""

import hashlib
import multiprocessing
import queue
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import dagster as dg
import pandas as pd
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    compute_logical_data_version,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.instance.types import CachingDynamicPartitionsLoader
from dagster._core.log_manager import DagsterLogManager

from homeprice_assets.config import DataConfig
from homeprice_assets.features import assets as features
from homeprice_assets.features.engineering import FEATURE_VERSION, feature_table
from homeprice_assets.features.engineering import FEATURES as FEATURE_NAMES
from homeprice_assets.ingest import checks
from homeprice_assets.ingest.history import latest_records, prior_months, window
from homeprice_assets.ingest.reading import UnreadableFile, read_with_config, row_months
from homeprice_assets.ingest.report import (
    DATA_CONFIG_KEY,
    MONTH_ERRORS_KEY,
    data_config_digest,
)
from homeprice_assets.ingest.rules import (
    RULES,
    SchemaError,
    check_source_columns,
    combine_landed,
    content_version,
    file_sha256,
)
from homeprice_assets.ingest.rules import (
    clean_sales as clean_rows,
)
from homeprice_assets.ingest.status import LANDED_DIGEST_KEY
from homeprice_assets.partitions import sale_month_partitions
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.landing import LandingScan, LandingZone, month_digest
from homeprice_assets.resources.storage import EncodedParquet, ParquetIOManager, S3ParquetStorage

RAW = dg.AssetKey("raw_sales")
CLEAN = dg.AssetKey("clean_sales")
QUARANTINE = dg.AssetKey("quarantined_sales")
FEATURES = dg.AssetKey("sale_features")

SPECS = [
    dg.AssetSpec(
        RAW,
        group_name="ingest",
        kinds={"pandas", "parquet"},
        skippable=True,
        description="Every row landed for the month, unchanged (as text), with its source file, file hash "
        "and row number. Its data version depends on the set of rows only.",
    ),
    dg.AssetSpec(
        CLEAN,
        group_name="ingest",
        kinds={"pandas", "parquet"},
        deps=[RAW],
        skippable=True,
        description="Typed, validated, deduplicated sales of the month.",
    ),
    dg.AssetSpec(
        QUARANTINE,
        group_name="ingest",
        kinds={"pandas", "parquet"},
        deps=[RAW],
        skippable=True,
        description="Rows that broke a rule, with the rule and a detail.",
    ),
    dg.AssetSpec(
        FEATURES,
        group_name="features",
        kinds={"pandas", "parquet"},
        deps=[CLEAN],
        skippable=True,
        code_version=FEATURE_VERSION,
        description="Keys, target, raw inputs and engineered features: known at sale time only, no "
        "price-derived inputs.",
    ),
]
ALL_CHECKS = [*checks.RAW_CHECKS, *checks.CLEAN_CHECKS, *features.FEATURE_CHECKS]
_BLOCKING = {spec.key for spec in ALL_CHECKS if spec.blocking}

# The IO manager's contexts built inside the step would log to a console logger of their own at DEBUG
# ("Writing file at ...", four lines a month on the terminal of `homeprice run`); the step logs each month's
# outcome itself, so they log nowhere.
_QUIET = DagsterLogManager.create(loggers=[])


def _has_rows(mat: dg.AssetMaterialization) -> bool:
    return "rows" in mat.metadata


def _has_level(mat: dg.AssetMaterialization) -> bool:
    value = mat.metadata.get(features.LEVEL_KEY)
    return value is not None and float(value.value) > 0


@dataclass
class _Run:
    """What one ingest step knows once, for all its months: settings, the landing scan, storage, history."""

    context: dg.AssetExecutionContext
    config: DataConfig
    settings: Any
    landing: LandingZone
    scan: LandingScan
    known: list[str]  # every registered sale month (for the row-count and price-level history)
    cleaned: set[str]  # months with clean sales: the freshness check's "newest cleaned"
    # each month's latest clean row count and (positive) price level: read once for the months the run's
    # checks look back on, then kept up to date as the run materializes its months
    row_counts: dict[str, int]
    levels: dict[str, float]
    selected: set[dg.AssetKey]
    selected_checks: set[dg.AssetCheckKey]
    config_digest: str
    errors: dict[str, str] = field(default_factory=dict)
    # what the current month's stages did, logged as one line when the month is done (each log line is
    # an event Dagster stores: one per month, not one per stage)
    notes: list[str] = field(default_factory=list)
    records: dict[tuple[dg.AssetKey, str], dg.EventLogRecord | None] = field(default_factory=dict)
    prefetch: "_Prefetch | None" = None

    @property
    def instance(self) -> dg.DagsterInstance:
        return self.context.instance

    @cached_property
    def partitions(self) -> CachingDynamicPartitionsLoader:
        """The instance's sale months as the IO manager's contexts see them: each month asked once per run,
        not at every read and write (3 to 4 queries a month)."""
        return CachingDynamicPartitionsLoader(self.instance)

    @property
    def log(self):
        return self.context.log

    # ------------------------------------------------------------------ storage through the IO manager
    def write(self, key: dg.AssetKey, month: str, frame: "Stored") -> dict[str, Any]:
        """Store ``frame`` where the IO manager keeps ``key``'s month; returns the metadata it reported."""
        io = self.context.resources.io_manager
        with (
            partition_loading_context(dynamic_partitions_store=self.partitions),
            dg.build_output_context(
                asset_key=key,
                partition_key=month,
                asset_partitions_def=sale_month_partitions,
                resources=self.context.resources,  # built already: building them per call costs ~0.3 s
            ) as out,
        ):
            out._log = _QUIET
            io.handle_output(out, frame)
            return dict(out.consume_logged_metadata())

    def read(self, key: dg.AssetKey, month: str) -> pd.DataFrame:
        io = self.context.resources.io_manager
        with (
            partition_loading_context(dynamic_partitions_store=self.partitions),
            dg.build_input_context(
                asset_key=key,
                partition_key=month,
                asset_partitions_def=sale_month_partitions,
                resources=self.context.resources,
            ) as ctx,
        ):
            ctx._log = _QUIET
            value = io.load_input(ctx)
        return value[month] if isinstance(value, dict) else value

    # ------------------------------------------------------------------ events
    def latest(self, key: dg.AssetKey, month: str) -> dg.EventLogRecord | None:
        """``key``'s latest materialization of ``month`` (the one this run just made, once it made one)."""
        if (key, month) in self.records:
            return self.records[key, month]
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[month]), limit=1
        ).records
        return records[0] if records else None

    def materialize(
        self,
        key: dg.AssetKey,
        month: str,
        frame: "Stored",
        metadata: dict[str, Any],
        version: str | None = None,
        inputs: dict[dg.AssetKey, dg.EventLogRecord | None] | None = None,
    ) -> Iterator[dg.AssetMaterialization]:
        """Write the month and emit its materialization with the provenance tags Dagster itself records.

        ``version``: a user-provided data version (a content hash); without one the data version is the
        logical one of the code version and the inputs' data versions, as Dagster computes it.
        """
        stored = self.write(key, month, frame)
        spec = next(s for s in SPECS if s.key == key)
        code_version = spec.code_version or self.context.run_id
        tags = {CODE_VERSION_TAG: code_version}
        input_versions: dict[dg.AssetKey, dg.DataVersion] = {}
        for input_key, record in (inputs or {}).items():
            mat = record.asset_materialization if record else None
            value = (mat.tags or {}).get(DATA_VERSION_TAG) if mat else None
            input_versions[input_key] = dg.DataVersion(value or "INITIAL")
            tags[get_input_data_version_tag(input_key)] = input_versions[input_key].value
            tags[get_input_event_pointer_tag(input_key)] = str(record.storage_id) if record else "NULL"
        if version is None:
            tags[DATA_VERSION_TAG] = compute_logical_data_version(code_version, input_versions).value
        else:
            tags[DATA_VERSION_TAG] = version
            tags[DATA_VERSION_IS_USER_PROVIDED_TAG] = "true"
        yield dg.AssetMaterialization(
            asset_key=key, partition=month, metadata={**metadata, **stored}, tags=tags
        )
        if key != QUARANTINE:  # stored by now: its record (storage id) is what checks and inputs point at
            self.records.pop((key, month), None)
            self.records[key, month] = self._just_stored(key, month) or self.latest(key, month)

    def _just_stored(self, key: dg.AssetKey, month: str) -> dg.EventLogRecord | None:
        """The materialization of ``key``'s month this run just stored, as the storage remembers it (the
        repository's SQLite storage does; any other is asked, as ``latest`` does)."""
        stored = getattr(self.instance.event_log_storage, "stored_materialization", None)
        record = stored(key, month) if stored is not None else None
        return record if record is not None and record.run_id == self.context.run_id else None

    def evaluate(
        self, key: dg.AssetKey, month: str, results: list[dg.AssetCheckResult]
    ) -> Iterator[dg.AssetCheckEvaluation]:
        """The month's check results as evaluations of that partition, pointing at its materialization."""
        record = self.latest(key, month)
        target = (
            AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
            )
            if record and record.run_id == self.context.run_id
            else None
        )
        for result in results:
            check_key = dg.AssetCheckKey(key, str(result.check_name))
            if check_key not in self.selected_checks:
                continue
            yield dg.AssetCheckEvaluation(
                asset_key=key,
                check_name=check_key.name,
                passed=result.passed,
                metadata=result.metadata,
                target_materialization_data=target,
                severity=result.severity,
                description=result.description,
                blocking=check_key in _BLOCKING,
                partition=month,
            )


def _held_back(evaluations: list[dg.AssetCheckEvaluation]) -> bool:
    return any(e.blocking and not e.passed and e.severity == dg.AssetCheckSeverity.ERROR for e in evaluations)


# ---------------------------------------------------------------------- a month's own work (no instance)
# What a stage hands the IO manager: the frame, or (from the worker) the Parquet file it makes.
Stored = pd.DataFrame | EncodedParquet


@dataclass
class _RawMonth:
    """What a month's landed files hold: the raw rows and what reading them found."""

    out: Stored
    rows: int
    frame: pd.DataFrame | None  # the rows themselves (None from the worker when ``out`` is encoded)
    version: str
    n_files: int
    n_read: int
    described: list[dict[str, Any]]
    set_aside: list[dict[str, str]]
    messages: list[tuple[str, str]]  # ("error" | "info", text), logged by the step in this order
    repeated: int
    within: int
    results: list[dict[str, Any]]  # raw_sales check results (_portable)


@dataclass
class _CleanMonth:
    clean_out: Stored | None  # None: clean_sales not selected
    quarantine_out: Stored | None  # None: quarantined_sales not selected
    clean: pd.DataFrame | None  # the clean rows (None from the worker, which featurized them itself)
    raw_rows: int
    clean_rows: int
    quarantine_rows: int
    counts: dict[str, int]
    median_price: float
    clean_version: str | None
    quarantine_version: str | None
    results: list[dict[str, Any]]  # the checks of clean_sales that need the month's rows only


@dataclass
class _FeatureMonth:
    out: Stored
    rows: int
    level: float | None
    finite: dict[str, Any]


@dataclass
class _Prepared:
    """A month's raw, clean and feature work, done ahead by the run's worker process (``_Prefetch``)."""

    raw: _RawMonth
    clean: _CleanMonth | None
    features: _FeatureMonth | None


def _portable(result: dg.AssetCheckResult) -> dict[str, Any]:
    """A check result as its fields (Dagster's check results do not pickle; a worker returns these)."""
    return {
        "check_name": result.check_name,
        "passed": result.passed,
        "metadata": result.metadata,
        "severity": result.severity,
        "description": result.description,
        "asset_key": result.asset_key,
    }


def _stored(frame: pd.DataFrame, encode: bool) -> Stored:
    return EncodedParquet.of(frame) if encode else frame


def _read_raw(
    landing: LandingZone, files: list[Any], month: str, config: DataConfig, encode: bool = False
) -> _RawMonth:
    """Landed files of ``month`` -> its raw rows, the files read and set aside, and the raw checks."""
    frames, described, set_aside, messages = [], [], [], []
    for f in files:
        data = landing.read_bytes(f.key)
        digest = file_sha256(data)
        try:
            parsed = read_with_config(f.key, data, config)
            frame = parsed.frame
            if f.split:  # no month in the path: this month's rows, by their sale date
                frame = frame[row_months(frame, f.key, config) == month]
            check_source_columns(frame.columns, config)
        except (UnreadableFile, SchemaError) as exc:
            messages.append(("error", f"{month}: file {f.key!r} set aside: {exc}"))
            set_aside.append({"key": f.key, "sha256": digest, "reason": str(exc)})
            continue
        frames.append((f.key, digest, frame))
        described.append(
            {"key": f.key, "sha256": digest, "rows": len(frame), "split_by_date": f.split, **parsed.sniffed}
        )
        if parsed.sniffed:
            messages.append(("info", f"{month}: {f.key!r} read with sniffed {parsed.sniffed}"))
    raw, repeated, within = combine_landed(frames)
    results = [checks.required_columns(raw, config, set_aside), checks.readable_files(set_aside, len(files))]
    return _RawMonth(
        out=_stored(raw, encode),
        rows=len(raw),
        frame=raw,
        version=content_version(raw),
        n_files=len(files),
        n_read=len(frames),
        described=described,
        set_aside=set_aside,
        messages=messages,
        repeated=repeated,
        within=within,
        results=[_portable(r) for r in results],
    )


def _clean_month(
    raw: pd.DataFrame, config: DataConfig, month: str, selected: set[dg.AssetKey], encode: bool = False
) -> _CleanMonth:
    """Raw rows -> clean and quarantined rows, their versions and the checks that need only them."""
    result = clean_rows(raw, config, month=month)
    assert len(result.clean) + len(result.quarantine) == len(raw), "a row was lost in cleaning"
    results = []
    if CLEAN in selected:
        results = [
            checks.schema(result.clean),
            checks.quarantine_rate(result.counts_by_rule, len(raw), config, result.quarantine),
            checks.value_ranges(result.clean, config, month),
            checks.unique_sales(result.clean),
            checks.null_rate_check(result.clean, config, raw.columns),
        ]
    clean, quarantine = result.clean, result.quarantine
    return _CleanMonth(
        clean_out=_stored(clean, encode) if CLEAN in selected else None,
        quarantine_out=_stored(quarantine, encode) if QUARANTINE in selected else None,
        clean=clean,
        raw_rows=len(raw),
        clean_rows=len(clean),
        quarantine_rows=len(quarantine),
        counts=result.counts_by_rule,
        median_price=float(clean["sale_price"].median()) if len(clean) else 0.0,
        clean_version=_frame_version(clean) if CLEAN in selected else None,
        quarantine_version=_frame_version(quarantine) if QUARANTINE in selected else None,
        results=[_portable(r) for r in results],
    )


def _feature_month(clean: pd.DataFrame, encode: bool = False) -> _FeatureMonth:
    table = feature_table(clean)
    return _FeatureMonth(
        out=_stored(table, encode),
        rows=len(table),
        level=features.price_per_sf(table),
        finite=_portable(features.finite_features(table)),
    )


# What the worker process works from: set before it is forked, read by _prepare in the worker.
_WORK: dict[str, Any] = {}


def _prepare(month: str) -> _Prepared:
    """In the worker: the month's raw, clean and feature work, as the step would do it (all of it, even
    what a failed blocking check will hold back: the step decides what it stores and emits)."""
    landing, files, config, selected, encode = (
        _WORK[k] for k in ("landing", "files", "config", "selected", "encode")
    )
    raw = _read_raw(landing, [f for f in files if f.month == month], month, config, encode)
    clean = table = None
    if selected & {CLEAN, QUARANTINE}:
        clean = _clean_month(raw.frame, config, month, selected, encode)
        if FEATURES in selected and CLEAN in selected:
            table = _feature_month(clean.clean, encode)
    if encode:  # the step gets the files; the frames stay here
        raw = replace(raw, frame=None)
        clean = replace(clean, clean=None) if clean is not None else None
    return _Prepared(raw, clean, table)


class _Prefetch:
    """One worker process that does the months' pandas work ahead of the step, in month order.

    The step's own time goes largely to Dagster (storing each event, its checks): with a worker reading,
    cleaning, featurizing and encoding the next months on another core meanwhile, a range run takes
    about the longer of the two instead of their sum. The worker is forked (it inherits the imported
    modules and the run's settings), touches no Dagster instance and writes nothing: the step stores
    each month's files and emits its events as before, in order, and stores nothing a blocking check
    holds back. Each month comes back through a queue that the step reads in its own thread (a result
    thread in the step's process would contend with it for the GIL). Whatever the worker could not do
    (it died, a month raised) the step does itself, so errors and results are those of the step.
    """

    def __init__(self, months: list[str], work: dict[str, Any]) -> None:
        context = multiprocessing.get_context("fork")
        self._queue = context.Queue()
        self._pending = list(months)
        _WORK.clear()
        _WORK.update(work)
        try:
            self._process = context.Process(
                target=_prefetch_worker, args=(self._queue, months), name="ingest-prefetch", daemon=True
            )
            self._process.start()
        finally:
            _WORK.clear()

    def get(self, month: str) -> _Prepared | None:
        """The worker's work on ``month`` (None: the step does it itself)."""
        while month in self._pending:
            try:
                done, prepared = self._queue.get(timeout=_PREFETCH_POLL_SECONDS)
            except queue.Empty:
                if not self._process.is_alive():  # died: the step does the rest itself
                    self._pending.clear()
                continue
            self._pending.remove(done)
            if done == month:
                return prepared
        return None

    def close(self) -> None:
        if self._process.is_alive():  # the step stopped early: the rest of the work is not wanted
            self._process.terminate()
        self._process.join()
        self._queue.close()

    @staticmethod
    def suits(months: list[str], selected: set[dg.AssetKey]) -> bool:
        """A worker pays for a range run that reads landed files, where fork is safe (Linux)."""
        return len(months) >= _PREFETCH_MIN_MONTHS and RAW in selected and sys.platform == "linux"


def _prefetch_worker(out: Any, months: list[str]) -> None:
    """The worker's loop: each month's ``_Prepared``, or None where it raised."""
    for month in months:
        try:
            prepared = _prepare(month)
        except Exception:  # the step does the month itself, and raises what it raises
            prepared = None
        out.put((month, prepared))


_PREFETCH_POLL_SECONDS = 1.0
# Below this many months a run does its months itself (a worker's start-up would not pay).
_PREFETCH_MIN_MONTHS = 3


# ---------------------------------------------------------------------- the stages: events and storage
def _raw_stage(run: _Run, month: str, prepared: _Prepared | None) -> Iterator[Any]:
    """Landed files of ``month`` -> raw rows. Returns (the raw month, evaluations)."""
    config = run.config
    files = [f for f in run.scan.files if f.month == month]
    if not files:
        raise dg.Failure(
            f"raw_sales: no sales files for {month} in the landing zone {run.landing.describe()}"
        )
    got = prepared.raw if prepared is not None else _read_raw(run.landing, files, month, config)
    for level, message in got.messages:
        (run.log.error if level == "error" else run.log.info)(message)
    run.notes.append(
        f"{got.rows} rows from {got.n_read} of {got.n_files} file(s), "
        f"{got.repeated} repeated row(s) left out ({got.within} inside one file), "
        f"{len(got.set_aside)} file(s) set aside"
    )
    metadata = {
        "rows": got.rows,
        "files": dg.MetadataValue.json(got.described),
        "quarantined_files": len(got.set_aside),
        "quarantined_file_reasons": dg.MetadataValue.json(got.set_aside),
        "repeated_rows_left_out": got.repeated,
        "repeated_rows_within_a_file": got.within,
        "landing_files_in_no_month": len(run.scan.set_aside),
        "landing_files_in_no_month_reasons": dg.MetadataValue.json(
            [{"key": a.key, "reason": a.reason} for a in run.scan.set_aside]
        ),
        "landing_zone": run.landing.describe(),
        # which files and data settings made this month: the ingest report and the landing sensor skip a
        # month whose files and settings are unchanged since
        LANDED_DIGEST_KEY: month_digest(run.scan.files, month),
        DATA_CONFIG_KEY: run.config_digest,
    }
    yield from run.materialize(RAW, month, got.out, metadata, version=got.version)
    results = [dg.AssetCheckResult(**r) for r in got.results]
    return got, list(run.evaluate(RAW, month, results))


def _clean_stage(
    run: _Run, month: str, raw: pd.DataFrame | None, raw_record, prepared: _CleanMonth | None
) -> Iterator[Any]:
    """Raw rows -> clean + quarantined rows and the clean checks. Returns (the clean month, evaluations).

    ``raw``: the month's raw rows (only needed when the worker did not clean them).
    """
    config = run.config
    got = prepared if prepared is not None else _clean_month(raw, config, month, run.selected)
    counts = got.counts
    failing = {rule: n for rule, n in counts.items() if n}
    run.notes.append(f"{got.clean_rows} clean, {got.quarantine_rows} quarantined {failing or ''}".strip())
    rule_meta = {f"quarantined_{rule}": counts[rule] for rule in RULES}
    inputs = {RAW: raw_record}
    if CLEAN in run.selected:
        clean_meta = {
            "rows": got.clean_rows,
            "raw_rows": got.raw_rows,
            "quarantined_rows": got.quarantine_rows,
            **rule_meta,
            "median_price": got.median_price,
        }
        yield from run.materialize(CLEAN, month, got.clean_out, clean_meta, got.clean_version, inputs)
        run.cleaned.add(month)
        run.row_counts[month] = got.clean_rows
    if QUARANTINE in run.selected:
        quarantine_meta = {"rows": got.quarantine_rows, **rule_meta}
        yield from run.materialize(
            QUARANTINE, month, got.quarantine_out, quarantine_meta, got.quarantine_version, inputs
        )
    if CLEAN not in run.selected:
        return got, []
    results = [
        *(dg.AssetCheckResult(**r) for r in got.results),
        checks.row_count(
            got.clean_rows,
            list(window(run.row_counts, run.known, month, config.row_count_lookback).values()),
            config,
        ),
        checks.freshness(
            month, max(run.cleaned | {month}), sorted({f.month for f in run.scan.files}), config
        ),
    ]
    return got, list(run.evaluate(CLEAN, month, results))


def _features_stage(
    run: _Run, month: str, clean: pd.DataFrame | None, clean_record, prepared: _FeatureMonth | None
) -> Iterator[Any]:
    got = prepared if prepared is not None else _feature_month(clean)
    level = got.level
    metadata = {
        "rows": got.rows,
        "feature_version": FEATURE_VERSION,
        "features": dg.MetadataValue.json(list(FEATURE_NAMES)),
        "n_features": len(FEATURE_NAMES),
        features.LEVEL_KEY: -1.0 if level is None else level,
    }
    yield from run.materialize(FEATURES, month, got.out, metadata, inputs={CLEAN: clean_record})
    if level is not None and level > 0:
        run.levels[month] = level
    bound = run.settings.monitoring.price_level
    recent = window(run.levels, run.known, month, bound.lookback_months)
    results = [dg.AssetCheckResult(**got.finite), features.price_level(month, level, recent, bound)]
    return list(run.evaluate(FEATURES, month, results))


def _frame_version(frame: pd.DataFrame) -> str:
    """A data version of a cleaned frame from its content (columns, types, values): the same table, the
    same version, whichever run made it; a settings change that alters a value changes it."""
    digest = hashlib.sha256(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:24]


def _month(run: _Run, month: str) -> Iterator[Any]:
    """raw -> clean + quarantine -> features for one month, each stage only if its checks let it."""
    sel = run.selected
    prepared = run.prefetch.get(month) if run.prefetch is not None else None
    raw_frame, raw_record, clean, clean_record = None, None, None, None
    clean_ahead = features_ahead = None
    if RAW in sel:
        raw, evaluations = yield from _raw_stage(run, month, prepared)
        raw_frame = raw.frame
        yield from evaluations
        raw_record = run.latest(RAW, month)
        if _held_back(evaluations):
            run.notes.append("held back by a blocking raw_sales check")
            return
        if prepared is not None:  # the worker's clean and features are of these same raw rows
            clean_ahead, features_ahead = prepared.clean, prepared.features
    if sel & {CLEAN, QUARANTINE}:
        if RAW not in sel:
            raw_frame, raw_record = run.read(RAW, month), run.latest(RAW, month)
        clean, evaluations = yield from _clean_stage(run, month, raw_frame, raw_record, clean_ahead)
        yield from evaluations
        clean_record = run.latest(CLEAN, month) if CLEAN in sel else None
        if _held_back(evaluations):
            run.notes.append("held back by a blocking clean_sales check")
            return
    if FEATURES in sel:
        if clean is None or clean_record is None:  # not cleaned by this run: its stored clean rows
            clean_frame, clean_record = run.read(CLEAN, month), run.latest(CLEAN, month)
            features_ahead = None
        else:
            clean_frame = clean.clean
            if clean_frame is None and features_ahead is None:  # (the worker always featurizes)
                clean_frame = run.read(CLEAN, month)
        yield from (yield from _features_stage(run, month, clean_frame, clean_record, features_ahead))


@dg.multi_asset(
    name="ingest_sales",
    specs=SPECS,
    check_specs=ALL_CHECKS,
    partitions_def=sale_month_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
    # the IO manager is called per month (the step writes each month as it is done)
    required_resource_keys={"io_manager", "landing", "settings"},
)
def ingest_sales(
    context: dg.AssetExecutionContext,
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """Every month of the run's partition (range), in order: landed files -> raw -> clean -> features.

    The landing zone is scanned once per run (not once per month). A month that raises (no files for it,
    an unexpected error) is logged and named at the end; the months after it are still ingested.
    """
    landing: LandingZone = context.resources.landing
    settings: ProjectConfigResource = context.resources.settings
    project = settings.get()
    config = project.data
    scan = landing.scan(config)
    for aside in scan.set_aside:
        context.log.warning(f"landing zone: {aside.key!r} is in no month: {aside.reason}")
    months = sorted(context.partition_keys)
    known = list(context.instance.get_dynamic_partitions(sale_month_partitions.name))
    selected = set(context.selected_asset_keys)
    row_counts, levels = {}, {}
    if CLEAN in selected:
        prior = prior_months(known, months, config.row_count_lookback)
        records = latest_records(context.instance, CLEAN, prior, _has_rows)
        row_counts = {m: int(r.asset_materialization.metadata["rows"].value) for m, r in records.items()}
    if FEATURES in selected:
        prior = prior_months(known, months, project.monitoring.price_level.lookback_months)
        records = latest_records(context.instance, FEATURES, prior, _has_level)
        levels = {
            m: float(r.asset_materialization.metadata[features.LEVEL_KEY].value) for m, r in records.items()
        }
    run = _Run(
        context=context,
        config=config,
        settings=project,
        landing=landing,
        scan=scan,
        known=known,
        cleaned=set(context.instance.get_materialized_partitions(CLEAN)),
        row_counts=row_counts,
        levels=levels,
        selected=selected,
        selected_checks=set(context.selected_asset_check_keys),
        config_digest=data_config_digest(config),
    )
    if len(months) > 1:
        context.log.info(f"ingesting {len(months)} month(s) {months[0]}..{months[-1]} in this run")
    if _Prefetch.suits(months, selected):
        # the worker encodes the Parquet files our IO managers write; another IO manager gets frames
        encode = isinstance(context.resources.io_manager, ParquetIOManager | S3ParquetStorage)
        work = {
            "landing": landing,
            "files": scan.files,
            "config": config,
            "selected": selected,
            "encode": encode,
        }
        run.prefetch = _Prefetch(months, work)
    try:
        yield from _months(run, months)
    finally:
        if run.prefetch is not None:
            run.prefetch.close()


def _months(run: _Run, months: list[str]) -> Iterator[Any]:
    """The run's months in order; a month that raises is logged and named at the end."""
    context = run.context
    for month in months:
        run.notes = []
        try:
            yield from _month(run, month)
            held_back = any(n.startswith("held back") for n in run.notes)
            (run.log.warning if held_back else run.log.info)(f"{month}: " + "; ".join(run.notes))
        except Exception as exc:  # one month's error never stops the months after it
            text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if isinstance(exc, dg.Failure) and exc.description:
                text = exc.description.strip().splitlines()[0]
            context.log.error(f"{month}: {text}")
            run.errors[month] = text
    if run.errors:
        first = next(iter(run.errors.items()))
        raise dg.Failure(
            description=first[1]
            if len(run.errors) == 1
            else f"{len(run.errors)} month(s) failed: "
            + "; ".join(f"{m}: {t}" for m, t in run.errors.items()),
            metadata={MONTH_ERRORS_KEY: dg.MetadataValue.json(run.errors)},
        )


# The asset names people and tests know; all four are computed by ``ingest_sales``.
raw_sales = clean_sales = quarantined_sales = ingest_sales
