"""Asset checks for landed and cleaned sales, as pure functions of the data (and recent history).

Blocking checks guard the model: when one fails, the rest of its run stops and automation waits.
Each result carries the figures behind it, so the UI says which rule failed on how many rows. The checks
are partitioned like their assets: each month's evaluation is recorded for that month, also in a range run.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg
import pandas as pd

from homeprice_assets.config import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, DataConfig
from homeprice_assets.ingest.rules import NUMERIC_COLUMNS, RULES, null_rates, robust_median
from homeprice_assets.partitions import month_check

RAW_CHECKS = [
    month_check(
        "required_columns",
        asset="raw_sales",
        blocking=True,
        description="Every required canonical column is present in the landed files.",
    ),
    month_check(
        "readable_files",
        asset="raw_sales",
        description="Every landed file of the month could be read; set-aside files are listed with reasons.",
    ),
]
CLEAN_CHECKS = [
    month_check(
        "schema",
        asset="clean_sales",
        blocking=True,
        description="Canonical columns with their expected dtypes.",
    ),
    month_check(
        "quarantine_rate",
        asset="clean_sales",
        blocking=True,
        description="Share of quarantined rows within data.max_quarantine_rate; counts per rule.",
    ),
    month_check(
        "value_ranges",
        asset="clean_sales",
        blocking=True,
        description="Price and living area positive and in bounds, coordinates and dates plausible.",
    ),
    month_check(
        "unique_sales",
        asset="clean_sales",
        blocking=True,
        description="No sale id appears twice.",
    ),
    month_check(
        "null_rates",
        asset="clean_sales",
        description="Optional columns are null at most data.max_null_rate of the time.",
    ),
    month_check(
        "row_count",
        asset="clean_sales",
        description="Rows at least data.min_row_ratio x the median of recent months.",
    ),
    month_check(
        "freshness",
        asset="clean_sales",
        description="The newest landed month is at most data.max_lag_months ahead of this one.",
    ),
]


def required_columns(
    raw: pd.DataFrame, config: DataConfig, set_aside: list[dict[str, str]] | None = None
) -> dg.AssetCheckResult:
    """Blocking: the month's readable files have every required column (set-aside files say why not)."""
    present = set(raw.columns)
    missing = {
        c: config.source_name(c) for c in REQUIRED_COLUMNS if config.source_name(c, present) not in present
    }
    missing_text = ", ".join(f"{c} (source column '{s}')" for c, s in missing.items())
    reasons = "; ".join(f"{f['key']}: {f['reason']}" for f in set_aside or [])
    if not missing:
        description = "all required columns present"
    elif reasons:
        description = f"no readable file with the required columns: {reasons}"
    else:
        description = f"missing required column(s): {missing_text}"
    return dg.AssetCheckResult(
        check_name="required_columns",
        passed=not missing,
        description=description,
        metadata={
            "missing": missing_text or "none",
            "source_columns": ", ".join(sorted(str(c) for c in present if not str(c).startswith("_"))),
        },
    )


def readable_files(set_aside: list[dict[str, str]], n_files: int) -> dg.AssetCheckResult:
    """ERROR severity (alerted) but not blocking: one unreadable file never holds back its month."""
    return dg.AssetCheckResult(
        check_name="readable_files",
        passed=not set_aside,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{len(set_aside)} of {n_files} file(s) set aside: "
            + "; ".join(f"{f['key']}: {f['reason']}" for f in set_aside)
            if set_aside
            else f"all {n_files} file(s) read"
        ),
        metadata={
            "files": n_files,
            "quarantined_files": len(set_aside),
            "set_aside": dg.MetadataValue.json(set_aside),
        },
    )


def schema(clean: pd.DataFrame) -> dg.AssetCheckResult:
    problems = [f"{c} missing" for c in REQUIRED_COLUMNS if c not in clean.columns]
    problems += [
        f"{c} is {clean[c].dtype}, expected float64"
        for c in NUMERIC_COLUMNS
        if c in clean.columns and str(clean[c].dtype) != "float64"
    ]
    if "sale_date" in clean.columns and not pd.api.types.is_datetime64_any_dtype(clean["sale_date"]):
        problems.append(f"sale_date is {clean['sale_date'].dtype}, expected datetime64")
    return dg.AssetCheckResult(
        check_name="schema", passed=not problems, metadata={"problems": "; ".join(problems) or "none"}
    )


def quarantine_rate(
    counts_by_rule: dict[str, int],
    n_raw: int,
    config: DataConfig,
    quarantine: pd.DataFrame | None = None,
) -> dg.AssetCheckResult:
    """The share of quarantined rows; when it fails, the description shows the most common rule's first
    detail (the value itself), and how dates are read when they are what failed."""
    quarantined = sum(counts_by_rule.values())
    rate = quarantined / n_raw if n_raw else 0.0
    passed = rate <= config.max_quarantine_rate
    failing = {rule: n for rule, n in counts_by_rule.items() if n}
    description = f"{quarantined} of {n_raw} rows quarantined ({rate:.1%}): " + (
        ", ".join(f"{r}: {n}" for r, n in failing.items()) or "none"
    )
    if not passed and failing and quarantine is not None and len(quarantine):
        top = max(failing, key=lambda r: failing[r])
        details = quarantine.loc[quarantine["rule"] == top, "detail"]
        if len(details):
            description += f"; e.g. {top} {details.iloc[0]}"
        if top == "unparsable_date" and details.str.startswith("sale_date=").any():  # not read at all
            fmt = config.read.date_format or config.date_format  # (as read_options ranks them)
            description += (
                f" (dates are read with the format {fmt!r} unless a data.sources entry sets one"
                if fmt
                else " (dates are read as ISO 8601 unless a date format is set"
            ) + ": set data.read.date_format, or a date_format for the source under data.sources)"
    return dg.AssetCheckResult(
        check_name="quarantine_rate",
        passed=passed,
        description=description,
        metadata={
            "quarantined_rows": quarantined,
            "raw_rows": n_raw,
            "rate": rate,
            "max_rate": config.max_quarantine_rate,
            **{f"rule_{r}": counts_by_rule.get(r, 0) for r in RULES},
        },
    )


def value_ranges(clean: pd.DataFrame, config: DataConfig, month: str) -> dg.AssetCheckResult:
    b = config.bounds
    violations = {
        "nonpositive_price": int((clean["sale_price"] <= 0).sum()),
        "price_out_of_range": int((~clean["sale_price"].between(b.min_price, b.max_price)).sum()),
        "nonpositive_living_area": int((clean["living_sf"] <= 0).sum()),
        "implausible_coordinates": int(
            (
                (clean["latitude"].notna() | clean["longitude"].notna())
                & (
                    ~clean["latitude"].between(b.min_latitude, b.max_latitude)
                    | ~clean["longitude"].between(b.min_longitude, b.max_longitude)
                )
            ).sum()
        ),
        "date_outside_partition": int((clean["sale_date"].dt.strftime("%Y-%m") != month).sum()),
    }
    bad = {k: v for k, v in violations.items() if v}
    return dg.AssetCheckResult(
        check_name="value_ranges",
        passed=not bad,
        description=", ".join(f"{k}: {v} rows" for k, v in bad.items()) or "all values in range",
        metadata={
            **violations,
            "min_price": float(clean["sale_price"].min()) if len(clean) else 0.0,
            "max_price": float(clean["sale_price"].max()) if len(clean) else 0.0,
        },
    )


def unique_sales(clean: pd.DataFrame) -> dg.AssetCheckResult:
    dups = int(clean["sale_id"].duplicated().sum())
    return dg.AssetCheckResult(
        check_name="unique_sales", passed=dups == 0, metadata={"duplicate_sale_ids": dups}
    )


def null_rate_check(
    clean: pd.DataFrame, config: DataConfig, source_columns: Iterable[str] | None = None
) -> dg.AssetCheckResult:
    """WARN: optional columns the source maps are null at most ``max_null_rate`` of the time.

    Columns the source does not have at all are not judged (a dataset without coordinates is not 100% null).
    """
    present = set(source_columns) if source_columns is not None else None
    mapped = [c for c in OPTIONAL_COLUMNS if present is None or config.source_name(c, present) in present]
    rates = null_rates(clean, mapped)
    over = {c: r for c, r in rates.items() if r > config.max_null_rate}
    return dg.AssetCheckResult(
        check_name="null_rates",
        passed=not over,
        severity=dg.AssetCheckSeverity.WARN,
        description=", ".join(f"{c}: {r:.0%} null" for c, r in over.items()) or "null rates within limit",
        metadata={
            **{f"null_rate_{c}": r for c, r in rates.items()},
            "unmapped_columns": ", ".join(c for c in OPTIONAL_COLUMNS if c not in mapped) or "none",
        },
    )


def row_count(n_rows: int, recent_counts: list[int], config: DataConfig) -> dg.AssetCheckResult:
    median = robust_median(recent_counts)
    floor = config.min_row_ratio * median if recent_counts else 0.0
    return dg.AssetCheckResult(
        check_name="row_count",
        passed=n_rows >= floor and n_rows > 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rows": n_rows,
            "recent_median": median if recent_counts else 0.0,
            "floor": floor,
            "recent_months": len(recent_counts),
        },
    )


def freshness(
    month: str, newest_processed: str, landed_months: list[str], config: DataConfig
) -> dg.AssetCheckResult:
    """Is the pipeline keeping up with the newest landed month? Judged on that month only.

    A back-filled month (older than the newest landed one) is history, not lateness: it passes and says so.
    On the newest landed month the lag between it and the newest cleaned month is measured.
    """
    newest = max(landed_months) if landed_months else newest_processed
    lag = max((pd.Period(newest, "M") - pd.Period(newest_processed, "M")).n, 0)
    backfill = month < newest
    return dg.AssetCheckResult(
        check_name="freshness",
        passed=backfill or lag <= config.max_lag_months,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"back-filled month {month}: freshness is judged on the newest landed month {newest}"
            if backfill
            else f"newest landed {newest}, newest cleaned {newest_processed}: {lag} month(s) behind"
        ),
        metadata={
            "newest_landed_month": newest,
            "newest_cleaned_month": newest_processed,
            "lag_months": lag,
            "max_lag_months": config.max_lag_months,
            "back_filled": backfill,
        },
    )
