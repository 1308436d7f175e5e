"""Replay arrivals: write the bundled (or any) sales history into a landing zone, one file per sale month.

The history is read as ingest will read the files written here (``sales_YYYY-MM.csv`` at the zone's root):
with ``data.read`` and any ``data.sources`` entry matching that name, so its delimiter, encoding, decimal
mark and date format hold on both sides, and the values are written back as they came. Rows without a
usable sale date go to ``sales_undated.csv``: ingest finds no month in it, lists it and leaves it out, so a
few bad dates in a long history neither vanish nor hold back the newest month.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from homeprice_assets.config import BUNDLED_DATA, DataConfig, ReadOptions
from homeprice_assets.ingest.reading import UnreadableFile, parse_landed, sale_months
from homeprice_assets.resources.landing import LandingZone

LANDED_NAME = "sales_{month}.csv"
_OPTIONS_KEY = LANDED_NAME.format(month="0000-00")  # the landed name read options are chosen for
UNDATED = "undated"  # split_by_month's key for rows without a usable sale date
UNDATED_NAME = "sales_undated.csv"


def landed_options(config: DataConfig) -> ReadOptions:
    """How ingest reads the files ``land_history`` writes."""
    return config.read_options(_OPTIONS_KEY)


def read_history(source: Path, options: ReadOptions) -> pd.DataFrame:
    """A sales history file as text columns, read as a landed file would be (``ValueError`` naming it)."""
    try:
        return parse_landed(Path(source).name, Path(source).read_bytes(), options).frame
    except UnreadableFile as exc:
        raise ValueError(f"source: {source} cannot be read: {exc}") from None


def split_by_month(
    sales: pd.DataFrame, config: DataConfig, report: Callable[[str], None] = lambda _: None
) -> dict[str, pd.DataFrame]:
    """Source rows grouped by the month of their (source-named) sale date, months in order.

    Rows whose date is missing, unreadable or in the future are under ``UNDATED`` (last); ``report`` is told
    how many. A sale-date column of which no value reads is an error naming the format tried.
    """
    try:
        months = sale_months(sales, _OPTIONS_KEY, config)
    except UnreadableFile as exc:
        raise ValueError(f"sale_date: {exc}; columns are {list(sales.columns)}") from None
    if months.isna().all() and len(sales):
        column = config.source_name("sale_date", sales.columns)
        fmt = landed_options(config).date_format
        tried = f"the format {fmt!r}" if fmt else "ISO 8601 (YYYY-MM-DD; no date format is configured)"
        example = sales[column].dropna().head(3).tolist()
        raise ValueError(
            f"sale_date: no value of column {column!r} reads as {tried}, e.g. {example}; "
            "set data.read.date_format (or a date_format for the source under data.sources) to their "
            "format, e.g. '%m/%d/%Y'"
        )
    # one pass over the rows (a mask per month compared every row once per month)
    out = {month: part for month, part in sales.groupby(months.to_numpy(), sort=True)}
    undated = months.isna()
    if undated.any():
        out[UNDATED] = sales[undated.to_numpy()]
        report(
            f"{int(undated.sum())} row(s) with a missing, unreadable or future sale date are in "
            f"{UNDATED_NAME}, which ingest lists as in no month and leaves out: correct them, land again"
        )
    return out


def month_file(part: pd.DataFrame, options: ReadOptions) -> bytes:
    """One month's rows as ``sales_YYYY-MM.csv`` bytes that read back, with ``options``, to the same text."""
    text = part.to_csv(index=False, sep=options.delimiter or ",")
    return text.encode(options.encoding or "utf-8")


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
    report: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Write ``sales_YYYY-MM.csv`` for each month in [since, until] (inclusive); returns the months written.

    Files are written whole (atomically), so a sensor never reads half a month. Re-landing a month rewrites
    identical bytes, which the pipeline recognises as unchanged.
    """
    check_bounds(until, since)
    options = landed_options(config)
    by_month = split_by_month(read_history(source, options), config, report)
    undated = by_month.pop(UNDATED, None)
    months = [m for m in by_month if (until is None or m <= until) and (since is None or m >= since)]
    for month in progress(months):
        zone.write_bytes(LANDED_NAME.format(month=month), month_file(by_month[month], options))
    if undated is not None:  # whatever months were asked for: these rows belong to none of them
        zone.write_bytes(UNDATED_NAME, month_file(undated, options))
    return months
