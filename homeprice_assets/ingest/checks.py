"""Asset checks for landed and cleaned sales, as pure functions of the data (and recent history).

Blocking checks guard the model: when one fails, the rest of its run stops and automation waits.
Each result carries the figures behind it, so the UI says which rule failed on how many rows.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd

from homeprice_assets.config import REQUIRED_COLUMNS, DataConfig
from homeprice_assets.ingest.rules import NUMERIC_COLUMNS, RULES, null_rates, robust_median

RAW_CHECKS = [
    dg.AssetCheckSpec(
        "required_columns",
        asset="raw_sales",
        blocking=True,
        description="Every required canonical column is present in the landed files.",
    )
]
CLEAN_CHECKS = [
    dg.AssetCheckSpec(
        "schema",
        asset="clean_sales",
        blocking=True,
        description="Canonical columns with their expected dtypes.",
    ),
    dg.AssetCheckSpec(
        "quarantine_rate",
        asset="clean_sales",
        blocking=True,
        description="Share of quarantined rows within data.max_quarantine_rate; counts per rule.",
    ),
    dg.AssetCheckSpec(
        "value_ranges",
        asset="clean_sales",
        blocking=True,
        description="Price and living area positive and in bounds, coordinates and dates plausible.",
    ),
    dg.AssetCheckSpec(
        "unique_sales", asset="clean_sales", blocking=True, description="No sale id appears twice."
    ),
    dg.AssetCheckSpec(
        "null_rates",
        asset="clean_sales",
        description="Optional columns are null at most data.max_null_rate of the time.",
    ),
    dg.AssetCheckSpec(
        "row_count",
        asset="clean_sales",
        description="Rows at least data.min_row_ratio x the median of recent months.",
    ),
    dg.AssetCheckSpec(
        "freshness",
        asset="clean_sales",
        description="The newest landed month is at most data.max_lag_months ahead of this one.",
    ),
]


def required_columns(raw: pd.DataFrame, config: DataConfig) -> dg.AssetCheckResult:
    present = set(raw.columns)
    missing = {c: config.source_name(c) for c in REQUIRED_COLUMNS if config.source_name(c) not in present}
    return dg.AssetCheckResult(
        check_name="required_columns",
        passed=not missing,
        metadata={
            "missing": ", ".join(f"{c} (source column '{s}')" for c, s in missing.items()) or "none",
            "source_columns": ", ".join(sorted(str(c) for c in present)),
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


def quarantine_rate(counts_by_rule: dict[str, int], n_raw: int, config: DataConfig) -> dg.AssetCheckResult:
    quarantined = sum(counts_by_rule.values())
    rate = quarantined / n_raw if n_raw else 0.0
    failing = {rule: n for rule, n in counts_by_rule.items() if n}
    return dg.AssetCheckResult(
        check_name="quarantine_rate",
        passed=rate <= config.max_quarantine_rate,
        description=(
            f"{quarantined} of {n_raw} rows quarantined ({rate:.1%}): "
            + (", ".join(f"{r}: {n}" for r, n in failing.items()) or "none")
        ),
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
                ~clean["latitude"].between(b.min_latitude, b.max_latitude)
                | ~clean["longitude"].between(b.min_longitude, b.max_longitude)
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


def null_rate_check(clean: pd.DataFrame, config: DataConfig) -> dg.AssetCheckResult:
    rates = null_rates(clean)
    over = {c: r for c, r in rates.items() if r > config.max_null_rate}
    return dg.AssetCheckResult(
        check_name="null_rates",
        passed=not over,
        severity=dg.AssetCheckSeverity.WARN,
        description=", ".join(f"{c}: {r:.0%} null" for c, r in over.items()) or "null rates within limit",
        metadata={f"null_rate_{c}": r for c, r in rates.items()},
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


def freshness(newest_processed: str, landed_months: list[str], config: DataConfig) -> dg.AssetCheckResult:
    """Is the newest month the pipeline has cleaned keeping up with the newest month that has landed?"""
    newest = max(landed_months) if landed_months else newest_processed
    lag = (pd.Period(newest, "M") - pd.Period(newest_processed, "M")).n
    return dg.AssetCheckResult(
        check_name="freshness",
        passed=lag <= config.max_lag_months,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"newest landed {newest}, newest cleaned {newest_processed}: {lag} month(s) behind",
        metadata={
            "newest_landed_month": newest,
            "newest_cleaned_month": newest_processed,
            "lag_months": lag,
            "max_lag_months": config.max_lag_months,
        },
    )
