"""Pure data logic for ingestion: map source columns, type them, and split good rows from quarantined ones.

Every row that enters ``clean`` leaves either as a clean row or as a quarantined row carrying the rule that
caught it, so ``len(raw) == len(clean) + len(quarantine)`` always holds: nothing is silently dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from homeprice_assets.config import CANONICAL_COLUMNS, OPTIONAL_COLUMNS, REQUIRED_COLUMNS, DataConfig
from homeprice_assets.ingest.reading import latest_plausible_date, parse_sale_dates

LINEAGE_COLUMNS = ("_source_file", "_source_hash", "_row_number", "_row_hash")
# What exports write for "no value" (compared stripped and lower-cased): an optional number stays missing,
# a required value quarantines the row as missing.
NULL_MARKERS = frozenset({"", "nan", "none", "<na>", "na", "n/a", "null"})
NUMERIC_COLUMNS = (
    "sale_price",
    "living_sf",
    "lot_sf",
    "waterfront",
    "bldg_grade",
    "beds",
    "baths",
    "age",
    "eff_age",
    "latitude",
    "longitude",
)
STRING_COLUMNS = ("sale_id", "parcel_id", "location", "use_type")

# Rule names, in the order they are applied; a row is quarantined by the first rule it breaks.
RULES: tuple[str, ...] = (
    "missing_required_value",
    "unparsable_date",
    "date_outside_partition",
    "non_numeric_value",
    "nonpositive_price",
    "price_out_of_range",
    "nonpositive_living_area",
    "living_area_out_of_range",
    "implausible_coordinates",
    "duplicate_sale",
)


class SchemaError(ValueError):
    """The source data lacks required columns (or maps them ambiguously)."""


@dataclass(frozen=True)
class CleanResult:
    clean: pd.DataFrame
    quarantine: pd.DataFrame

    @property
    def counts_by_rule(self) -> dict[str, int]:
        counts = self.quarantine["rule"].value_counts() if len(self.quarantine) else pd.Series(dtype=int)
        return {rule: int(counts.get(rule, 0)) for rule in RULES}


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def row_hashes(frame: pd.DataFrame, columns: Iterable[str]) -> pd.Series:
    """A stable hash of each row's source values: identical rows in two files hash alike."""
    cols = sorted(columns)
    if not len(frame):
        return pd.Series([], dtype=str, index=frame.index)
    as_text = frame[cols].astype(str).agg("\x1f".join, axis=1)
    return as_text.map(lambda s: hashlib.sha1(s.encode()).hexdigest())


def check_source_columns(columns: Iterable[str], config: DataConfig) -> None:
    """Fail with a message naming every required column that the source lacks."""
    present = set(columns)
    missing = [
        f"{canonical!r} (source column {config.source_name(canonical)!r})"
        for canonical in REQUIRED_COLUMNS
        if config.source_name(canonical, present) not in present
    ]
    if missing:
        raise SchemaError(
            "missing required column(s): " + ", ".join(missing) + f"; source columns are {sorted(present)}. "
            "Map your column names under data.columns in your HOMEPRICE_CONFIG file."
        )


def to_canonical(raw: pd.DataFrame, config: DataConfig) -> pd.DataFrame:
    """Rename mapped source columns to canonical names; keep lineage; add absent optional columns as NA."""
    check_source_columns(raw.columns, config)
    present = set(raw.columns)
    columns: dict[str, Any] = {}
    for canonical in CANONICAL_COLUMNS:
        source = config.source_name(canonical, present)
        columns[canonical] = raw[source] if source in present else pd.NA
    columns.update({col: raw[col] for col in LINEAGE_COLUMNS if col in raw.columns})
    return pd.DataFrame(columns, index=raw.index)


def _by_source(frame: pd.DataFrame) -> dict[str, pd.Index]:
    """Row labels per landed file (one group named "" when the rows carry no lineage)."""
    if "_source_file" not in frame.columns:
        return {"": frame.index}
    return {str(k): idx for k, idx in frame.groupby("_source_file", sort=False).groups.items()}


def _sale_dates(frame: pd.DataFrame, config: DataConfig) -> pd.Series:
    """Sale dates parsed with each source's date format (``data.sources`` over ``data.read``)."""
    parts = [
        parse_sale_dates(frame.loc[idx, "sale_date"], config.read_options(key).date_format)
        for key, idx in _by_source(frame).items()
    ]
    if not parts:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    return pd.concat(parts).reindex(frame.index).astype("datetime64[ns]")


def _decimal_marks(frame: pd.DataFrame, config: DataConfig) -> pd.Series | None:
    """Each row's decimal mark, or None when every source uses a point."""
    marks = {key: config.read_options(key).decimal for key in _by_source(frame)}
    if all(m == "." for m in marks.values()):
        return None
    out = pd.Series(".", index=frame.index, dtype=object)
    for key, idx in _by_source(frame).items():
        out[idx] = marks[key]
    return out


_GROUPED_BY_POINTS = r"[-+]?\d{1,3}(\.\d{3})+(,\d*)?"


def _with_decimal_point(values: pd.Series, decimal: pd.Series | None) -> pd.Series:
    if decimal is None:
        return values
    text = values.astype("string").str.strip()
    comma = decimal != "."
    part = text[comma]
    grouped = part.str.fullmatch(_GROUPED_BY_POINTS).fillna(False)  # 1.234.567,5: points group thousands
    part = part.where(~grouped, part.str.replace(".", "", regex=False))
    text[comma] = part.str.replace(",", ".", regex=False)
    return text


def _null_marker(values: pd.Series) -> pd.Series:
    """Which values are a "no value" marker (``NULL_MARKERS``, stripped and lower-cased; a missing value
    reads as one too)."""
    return values.astype(str).str.strip().str.lower().isin(NULL_MARKERS)


def _text(values: pd.Series) -> pd.Series:
    """Stripped text, null markers missing: sale ids "NULL" would otherwise all be one sale (the rest
    quarantined as duplicates), and parcel ids "n/a" one parcel with many earlier sales."""
    return values.astype("string").str.strip().mask(_null_marker(values))


def clean_sales(raw: pd.DataFrame, config: DataConfig, month: str | None = None) -> CleanResult:
    """Type, validate and deduplicate one batch of raw sales.

    ``month`` ("YYYY-MM") is the partition the rows were landed for; sales dated outside it are quarantined.
    The input's index is not kept (both outputs are numbered from 0), so repeated labels, as ``pd.concat``
    of files leaves them, are renumbered first: the rules align rows by label.
    """
    if not raw.index.is_unique:
        raw = raw.reset_index(drop=True)
    frame = to_canonical(raw, config)
    bounds = config.bounds
    reasons = pd.Series(pd.NA, index=frame.index, dtype="object")
    details = pd.Series("", index=frame.index, dtype="object")

    def flag(mask: pd.Series, rule: str, detail: Callable[[], pd.Series] | str) -> None:
        """Quarantine the rows of ``mask`` no earlier rule caught; a detail series is built only then."""
        new = mask & reasons.isna()
        if not new.any():  # the usual case: cleaning a month costs no detail strings
            return
        reasons[new] = rule
        details[new] = detail()[new] if callable(detail) else detail

    # Required values present (blanks and the null markers, such as "NULL" or "n/a", count as missing).
    for col in REQUIRED_COLUMNS:
        values = frame[col]
        missing = values.isna() | _null_marker(values)
        flag(missing, "missing_required_value", f"{col} is null")

    dates = _sale_dates(frame, config)
    flag(dates.isna(), "unparsable_date", lambda: "sale_date=" + frame["sale_date"].astype(str))
    too_old = dates.notna() & (dates < pd.Timestamp(bounds.min_date))
    flag(too_old, "unparsable_date", f"sale_date before {bounds.min_date}")
    latest = latest_plausible_date()
    flag(dates > latest, "unparsable_date", f"sale_date after {latest.date()} (in the future)")
    if month is not None:  # (a typo'd date is unparsable_date above, not merely in another month)
        outside = dates.notna() & (dates.dt.strftime("%Y-%m") != month)
        flag(
            outside,
            "date_outside_partition",
            lambda: f"sale_date not in {month}: " + frame["sale_date"].astype(str),
        )

    decimal = _decimal_marks(frame, config)
    numeric = {}
    for col in NUMERIC_COLUMNS:
        parsed = pd.to_numeric(_with_decimal_point(frame[col], decimal), errors="coerce")
        suspect = parsed.isna() & frame[col].notna()
        if suspect.any():
            text = frame[col].astype(str)
            bad = suspect if col in REQUIRED_COLUMNS else suspect & ~_null_marker(frame[col])
            flag(bad, "non_numeric_value", lambda col=col, text=text: f"{col}=" + text)
        numeric[col] = parsed.astype("float64")
        infinite = np.isinf(numeric[col])
        if infinite.any():  # "inf" and "Infinity" parse as numbers: no field of a sale is infinite
            flag(infinite, "non_numeric_value", lambda col=col: f"{col}=" + frame[col].astype(str))

    price, area = numeric["sale_price"], numeric["living_sf"]
    flag(price <= 0, "nonpositive_price", lambda: "sale_price=" + price.astype(str))
    flag(
        (price < bounds.min_price) | (price > bounds.max_price),
        "price_out_of_range",
        lambda: f"sale_price outside [{bounds.min_price:g}, {bounds.max_price:g}]: " + price.astype(str),
    )
    flag(area <= 0, "nonpositive_living_area", lambda: "living_sf=" + area.astype(str))
    flag(
        (area < bounds.min_living_sf) | (area > bounds.max_living_sf),
        "living_area_out_of_range",
        lambda: (
            f"living_sf outside [{bounds.min_living_sf:g}, {bounds.max_living_sf:g}]: " + area.astype(str)
        ),
    )
    lat, lon = numeric["latitude"], numeric["longitude"]
    # Coordinates are optional: a row has both or neither; when present they must lie within the bounds.
    has_coords = lat.notna() | lon.notna()
    flag(
        has_coords
        & (
            ~lat.between(bounds.min_latitude, bounds.max_latitude)
            | ~lon.between(bounds.min_longitude, bounds.max_longitude)
        ),
        "implausible_coordinates",
        lambda: "lat/lon=" + lat.astype(str) + "/" + lon.astype(str),
    )

    columns: dict[str, pd.Series] = {col: _text(frame[col]) for col in STRING_COLUMNS}
    columns.update(numeric)
    columns["sale_date"] = dates
    columns.update({col: frame[col] for col in LINEAGE_COLUMNS if col in frame.columns})
    typed = pd.DataFrame(columns, index=frame.index)  # built at once: column by column costs ~2x here
    if typed["sale_id"].isna().any():
        typed["sale_id"] = typed["sale_id"].fillna(derived_ids(typed, raw, config))

    # The same sale id twice among otherwise-valid rows: keep the first (file order), quarantine the rest.
    # Only valid rows take part, so a bad row never shadows its corrected re-export.
    valid = reasons.isna()
    dup = pd.Series(False, index=frame.index)
    dup[valid] = typed.loc[valid, "sale_id"].duplicated(keep="first")
    dup_ids = typed["sale_id"].where(dup)
    flag(dup, "duplicate_sale", lambda: "sale_id=" + dup_ids.astype(str) + " seen earlier in this month")

    clean = typed[reasons.isna()].copy()
    clean["sale_month"] = clean["sale_date"].dt.strftime("%Y-%m")
    clean = clean.reset_index(drop=True)

    quarantine = raw[reasons.notna()].copy()
    quarantine.insert(0, "rule", reasons[reasons.notna()].astype(str))
    quarantine.insert(1, "detail", details[reasons.notna()].astype(str))
    quarantine = quarantine.astype({c: "string" for c in quarantine.columns if quarantine[c].dtype == object})
    quarantine = quarantine.reset_index(drop=True)
    return CleanResult(clean=clean, quarantine=quarantine)


# What tells two homes' sales apart when the source has no sale id: every identifying column it has.
IDENTITY_COLUMNS: tuple[str, ...] = (
    "parcel_id",
    "location",
    "latitude",
    "longitude",
    "living_sf",
    "lot_sf",
    "use_type",
    "bldg_grade",
    "beds",
    "baths",
    "age",
    "eff_age",
    "waterfront",
    "sale_date",
    "sale_price",
)


def identity_columns(source_columns: Iterable[str], config: DataConfig) -> list[str]:
    """The columns a derived sale id is built from.

    With a parcel id, parcel + date + price name one sale (a corrected re-export of it is a repeat); without
    one, every identifying column the source has, so that different homes sold on the same day for the same
    price in the same area do not share an id.
    """
    present = set(source_columns)
    mapped = [c for c in IDENTITY_COLUMNS if config.source_name(c, present) in present]
    if "parcel_id" in mapped:
        return ["parcel_id", "sale_date", "sale_price"]
    return mapped


def derived_ids(typed: pd.DataFrame, raw: pd.DataFrame, config: DataConfig) -> pd.Series:
    """``h`` + a hash of the typed identifying values (so ``1800`` and ``1800.0`` give the same id)."""
    cols = identity_columns(raw.columns, config)
    parts = []
    for col in cols:
        values = typed[col]
        if col == "sale_date":
            text = values.dt.strftime("%Y-%m-%d")
        elif pd.api.types.is_float_dtype(values):
            text = values.map(lambda v: "" if pd.isna(v) else repr(float(v)))
        else:
            text = values.astype("string")
        parts.append(text.astype("string").fillna(""))
    if not parts:
        return pd.Series(pd.NA, index=typed.index, dtype="string")
    joined = parts[0].str.cat(parts[1:], sep="|") if len(parts) > 1 else parts[0]
    return joined.map(lambda s: "h" + hashlib.sha1(s.encode()).hexdigest()[:16]).astype("string")


def null_rates(frame: pd.DataFrame, columns: Iterable[str] = OPTIONAL_COLUMNS) -> dict[str, float]:
    return {c: float(frame[c].isna().mean()) if len(frame) else 0.0 for c in columns if c in frame.columns}


def robust_median(values: Iterable[float]) -> float:
    arr = np.asarray(list(values), dtype=float)
    return float(np.median(arr)) if arr.size else float("nan")


class Landed(NamedTuple):
    raw: pd.DataFrame
    repeated: int  # rows left out because the same row came earlier (this file or another)
    repeated_within_file: int  # of which: exact duplicate rows inside one file


def combine_landed(frames: list[tuple[str, str, pd.DataFrame]]) -> Landed:
    """Stack landed files ``(key, sha256, frame)`` in key order, adding lineage and dropping repeated rows.

    A row whose source values already came earlier (a file landed twice, overlapping exports, the same row
    twice inside one export) is counted and not added again. ``_row_number`` is the row's line in its file
    (1 = first data row), also for a file split by sale date into several months.
    """
    parts = []
    within = 0
    for key, digest, frame in sorted(frames, key=lambda t: t[0]):
        part = frame.copy()
        source_cols = list(frame.columns)
        part["_source_file"] = key
        part["_source_hash"] = digest
        part["_row_number"] = np.asarray(frame.index, dtype=int) + 1
        part["_row_hash"] = row_hashes(part, source_cols)
        within += int(part["_row_hash"].duplicated().sum())
        parts.append(part)
    if not parts:
        return Landed(pd.DataFrame(columns=list(LINEAGE_COLUMNS)), 0, 0)
    raw = pd.concat(parts, ignore_index=True, sort=False)
    repeated = raw["_row_hash"].duplicated(keep="first")
    raw = raw[~repeated].reset_index(drop=True)
    source_cols = [c for c in raw.columns if c not in LINEAGE_COLUMNS]
    raw = raw[source_cols + list(LINEAGE_COLUMNS)]
    return Landed(raw.astype({c: object for c in source_cols}), int(repeated.sum()), within)


def content_version(raw: pd.DataFrame) -> str:
    """A data version that depends on which rows there are, not on file names or landing order."""
    digest = hashlib.sha256()
    for h in sorted(raw["_row_hash"].astype(str)):
        digest.update(h.encode())
    return digest.hexdigest()[:24]
