"""Landed files -> raw sales -> clean sales + quarantine, one sale month per partition."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from homeprice_assets.ingest import checks
from homeprice_assets.ingest.reading import UnreadableFile, read_with_config, row_months
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
from homeprice_assets.partitions import sale_month_partitions
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.landing import LandingZone


@dg.asset(
    partitions_def=sale_month_partitions,
    group_name="ingest",
    kinds={"pandas", "parquet"},
    check_specs=checks.RAW_CHECKS,
)
def raw_sales(
    context: dg.AssetExecutionContext, landing: LandingZone, settings: ProjectConfigResource
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Every row landed for the month, unchanged (as text), with its source file, file hash and row number.

    Idempotent: the data version depends on the set of rows only, and a row already landed in another file
    is not added twice. A file that cannot be read (empty, undecodable, not a table, required columns
    missing) is set aside with its reason, counted in the metadata and failed in the ``readable_files``
    check (ERROR: alerted); the month's other files go on.
    """
    config = settings.get().data
    month = context.partition_key
    scan = landing.scan(config)
    for aside in scan.set_aside:
        context.log.warning(f"landing zone: {aside.key!r} is in no month: {aside.reason}")
    files = [f for f in scan.files if f.month == month]
    if not files:
        raise dg.Failure(f"raw_sales: no sales files for {month} in the landing zone {landing.describe()}")
    frames, described, set_aside = [], [], []
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
            context.log.error(f"{month}: file {f.key!r} set aside: {exc}")
            set_aside.append({"key": f.key, "sha256": digest, "reason": str(exc)})
            continue
        frames.append((f.key, digest, frame))
        described.append(
            {"key": f.key, "sha256": digest, "rows": len(frame), "split_by_date": f.split, **parsed.sniffed}
        )
        if parsed.sniffed:
            context.log.info(f"{month}: {f.key!r} read with sniffed {parsed.sniffed}")
    raw, repeated, within = combine_landed(frames)
    context.log.info(
        f"{month}: {len(raw)} rows from {len(frames)} of {len(files)} file(s), "
        f"{repeated} repeated row(s) left out ({within} inside one file), {len(set_aside)} file(s) set aside"
    )
    yield dg.Output(
        raw,
        data_version=dg.DataVersion(content_version(raw)),
        metadata={
            "rows": len(raw),
            "files": dg.MetadataValue.json(described),
            "quarantined_files": len(set_aside),
            "quarantined_file_reasons": dg.MetadataValue.json(set_aside),
            "repeated_rows_left_out": repeated,
            "repeated_rows_within_a_file": within,
            "landing_files_in_no_month": len(scan.set_aside),
            "landing_files_in_no_month_reasons": dg.MetadataValue.json(
                [{"key": a.key, "reason": a.reason} for a in scan.set_aside]
            ),
            "landing_zone": landing.describe(),
        },
    )
    yield checks.required_columns(raw, config, set_aside)
    yield checks.readable_files(set_aside, len(files))


def _recent_row_counts(context: dg.AssetExecutionContext, month: str, lookback: int) -> list[int]:
    """Row counts of the months before ``month`` from their latest materialization metadata."""
    prior = sorted(
        m for m in context.instance.get_dynamic_partitions(sale_month_partitions.name) if m < month
    )
    prior = prior[-lookback:]
    if not prior:
        return []
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("clean_sales"), asset_partitions=prior),
        limit=lookback * 5,
    ).records
    latest: dict[str, int] = {}
    for record in records:  # newest first
        mat = record.asset_materialization
        if mat and mat.partition not in latest and "rows" in mat.metadata:
            latest[mat.partition] = int(mat.metadata["rows"].value)
    return list(latest.values())


@dg.multi_asset(
    partitions_def=sale_month_partitions,
    group_name="ingest",
    outs={
        "clean_sales": dg.AssetOut(
            kinds={"pandas", "parquet"}, description="Typed, validated, deduplicated sales of the month."
        ),
        "quarantined_sales": dg.AssetOut(
            kinds={"pandas", "parquet"}, description="Rows that broke a rule, with the rule and a detail."
        ),
    },
    ins={"raw_sales": dg.AssetIn()},
    check_specs=checks.CLEAN_CHECKS,
)
def clean_sales(
    context: dg.AssetExecutionContext,
    raw_sales: pd.DataFrame,
    landing: LandingZone,
    settings: ProjectConfigResource,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Apply the data rules: each raw row becomes a clean row or a quarantined row, never nothing."""
    config = settings.get().data
    month = context.partition_key
    result = clean_rows(raw_sales, config, month=month)
    counts = result.counts_by_rule
    assert len(result.clean) + len(result.quarantine) == len(raw_sales), "a row was lost in cleaning"
    context.log.info(f"{month}: {len(result.clean)} clean, {len(result.quarantine)} quarantined {counts}")
    rule_meta = {f"quarantined_{rule}": counts[rule] for rule in RULES}
    yield dg.Output(
        result.clean,
        output_name="clean_sales",
        metadata={
            "rows": len(result.clean),
            "raw_rows": len(raw_sales),
            "quarantined_rows": len(result.quarantine),
            **rule_meta,
            "median_price": float(result.clean["sale_price"].median()) if len(result.clean) else 0.0,
        },
    )
    yield dg.Output(
        result.quarantine,
        output_name="quarantined_sales",
        metadata={"rows": len(result.quarantine), **rule_meta},
    )

    yield checks.schema(result.clean)
    yield checks.quarantine_rate(counts, len(raw_sales), config)
    yield checks.value_ranges(result.clean, config, month)
    yield checks.unique_sales(result.clean)
    yield checks.null_rate_check(result.clean, config, raw_sales.columns)
    yield checks.row_count(
        len(result.clean), _recent_row_counts(context, month, config.row_count_lookback), config
    )
    cleaned = context.instance.get_materialized_partitions(dg.AssetKey("clean_sales")) | {month}
    yield checks.freshness(month, max(cleaned), landing.months(config), config)
