"""Replay arrivals: write the bundled (or any) sales history into a landing zone, one file per sale month."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from homeprice_assets.config import BUNDLED_DATA, DataConfig
from homeprice_assets.resources.landing import LandingZone


def split_by_month(sales: pd.DataFrame, config: DataConfig) -> dict[str, pd.DataFrame]:
    """Source rows grouped by the month of their (source-named) sale date; unparsable dates are an error."""
    date_col = config.source_name("sale_date", sales.columns)
    if date_col not in sales.columns:
        raise ValueError(
            f"sale_date: source column {date_col!r} not found; columns are {list(sales.columns)}"
        )
    dates = pd.to_datetime(sales[date_col], format=config.date_format, errors="coerce")
    if dates.isna().any():
        bad = sales.loc[dates.isna(), date_col].head(3).tolist()
        raise ValueError(f"sale_date: {int(dates.isna().sum())} unparsable value(s), e.g. {bad}")
    # one pass over the rows (a mask per month compared every row once per month), months in order
    months = (dates.dt.year * 100 + dates.dt.month).to_numpy()
    return {f"{m // 100:04d}-{m % 100:02d}": part for m, part in sales.groupby(months, sort=True)}


def check_bounds(until: str | None, since: str | None) -> None:
    """``until`` and ``since`` are months (``ValueError`` naming the one that is not)."""
    for name, value in (("until", until), ("since", since)):
        if value is not None:
            try:
                pd.Period(value, "M")
            except Exception as exc:
                raise ValueError(f"{name}: expected a month like 2014-06, got {value!r}") from exc


def land_history(
    zone: LandingZone,
    config: DataConfig,
    until: str | None = None,
    since: str | None = None,
    source: Path = BUNDLED_DATA,
    progress: Callable[[Iterable[str]], Iterable[str]] = lambda it: it,
) -> list[str]:
    """Write ``sales_YYYY-MM.csv`` for each month in [since, until] (inclusive); returns the months written.

    Files are written whole (atomically), so a sensor never reads half a month. Re-landing a month rewrites
    identical bytes, which the pipeline recognises as unchanged.
    """
    check_bounds(until, since)
    sales = pd.read_csv(source, dtype=str, keep_default_na=False)
    by_month = split_by_month(sales, config)
    months = [m for m in by_month if (until is None or m <= until) and (since is None or m >= since)]
    for month in progress(months):
        zone.write_bytes(f"sales_{month}.csv", by_month[month].to_csv(index=False).encode())
    return months
