"""Parse one landed file into text columns, or say in one line why it cannot be read.

Reading options (delimiter, encoding, decimal mark, date format) come from ``data.read`` and the first
matching ``data.sources`` entry. Where nothing is configured, only safe guesses are made and reported: a
byte-order mark picks its encoding, and a header line in which exactly one of ``, ; tab |`` dominates picks
the delimiter.
A file that still cannot be read is set aside by the caller with the reason; it never stops its month.
"""

from __future__ import annotations

import codecs
import gzip
import io
import re
import warnings
import zlib
from dataclasses import dataclass, field

import pandas as pd

from homeprice_assets.config import DataConfig, ReadOptions

DELIMITERS = (",", ";", "\t", "|")
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class UnreadableFile(ValueError):
    """A landed file that cannot be parsed as a sales table; the message is the reason shown to the user."""


@dataclass
class ParsedFile:
    frame: pd.DataFrame  # every column as text (object dtype, None for empty cells)
    sniffed: dict[str, str] = field(default_factory=dict)  # what was guessed, e.g. {"delimiter": ";"}


def _encoding(data: bytes, configured: str | None) -> tuple[str, str | None]:
    """The codec to decode with, and what was sniffed (None when nothing was guessed)."""
    for bom, codec in _BOMS:
        same_family = configured is None or codecs.lookup(configured).name == codec.removesuffix("-sig")
        if data.startswith(bom) and same_family:
            return codec, f"{codec} (byte-order mark)"
    return configured or "utf-8", None


def _header_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def sniff_delimiter(text: str) -> str | None:
    """The delimiter of a header line when one candidate clearly dominates, else None (use ``,``)."""
    header = _header_line(text)
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts.values())
    winners = [d for d, n in counts.items() if n == best]
    return winners[0] if best > 0 and len(winners) == 1 else None


def _display(delimiter: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}.get(delimiter, repr(delimiter))


def parse_landed(key: str, data: bytes, options: ReadOptions) -> ParsedFile:
    """Parse ``data`` (the bytes of landed file ``key``) with every column as text.

    Raises ``UnreadableFile`` naming the problem: empty, not gzip/Parquet, undecodable, not a table.
    """
    if not data:
        raise UnreadableFile("empty file (0 bytes)")
    lower = key.lower()
    if lower.endswith(".parquet"):
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except Exception as exc:
            raise UnreadableFile(f"not a Parquet file: {exc}") from exc
        return ParsedFile(frame.astype("string").astype(object).where(frame.notna(), None))
    if lower.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise UnreadableFile(f"not a gzip file: {exc}") from exc
    sniffed: dict[str, str] = {}
    codec, bom = _encoding(data, options.encoding)
    if bom:
        sniffed["encoding"] = bom
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise UnreadableFile(
            f"cannot decode as {codec}: byte 0x{bad} at position {exc.start}; "
            "set data.read.encoding (e.g. latin-1) or an encoding for this source under data.sources"
        ) from exc
    if not text.strip():
        raise UnreadableFile("empty file (no header line)")
    delimiter = options.delimiter
    if delimiter is None:
        guess = sniff_delimiter(text)
        delimiter = guess or ","
        if guess and guess != ",":
            sniffed["delimiter"] = _display(guess)
    try:
        frame = pd.read_csv(
            io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, na_values=[""]
        )
    except Exception as exc:  # pandas' ParserError / EmptyDataError: not a table with this delimiter
        raise UnreadableFile(f"not a {_display(delimiter)}-delimited table: {exc}".strip()) from exc
    if frame.shape[1] < 2:
        header = _header_line(text)[:80]
        raise UnreadableFile(
            f"not a table: one column with {_display(delimiter)} as delimiter (header {header!r}); "
            "set data.read.delimiter or a delimiter for this source under data.sources"
        )
    frame = frame.astype(object).where(frame.notna(), None)
    return ParsedFile(frame, sniffed)


def read_with_config(key: str, data: bytes, config: DataConfig) -> ParsedFile:
    return parse_landed(key, data, config.read_options(key))


# Sales dated later than this many days ahead of today are typos (2104 for 2014): no month is made for them.
FUTURE_DAYS = 31


def latest_plausible_date() -> pd.Timestamp:
    return pd.Timestamp.now().normalize() + pd.Timedelta(days=FUTURE_DAYS)


# A UTC offset after a time of day ("10:00:00-07:00", "10:00Z"): dropped, the local date and time kept.
_TIME, _ZONE = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?", r"\s*(?:Z|UTC|[+-]\d{2}(?::?\d{2})?)$"
_OFFSET = re.compile(f"({_TIME}){_ZONE}")  # the time kept as group 1, for replacing
_HAS_OFFSET = re.compile(_TIME + _ZONE)  # no group: pandas' str.contains warns on one
_ISO_DATE = r"^\s*\d{4}-\d{2}-\d{2}"


def parse_sale_dates(values: pd.Series, date_format: str | None) -> pd.Series:
    """Sale dates as naive timestamps (NaT where unparsable), with the source's format or ISO 8601.

    Without a format (``data.date_format: null``) only full ISO 8601 dates are read, with or without a time
    of day, surrounding spaces ignored: a bare year, a month, a month name or a day-first date stay
    unparsable (quarantined), never guessed. A UTC offset (``2014-07-03T10:00:00-07:00``) is dropped,
    keeping the local date and time of the sale: offsets that differ between rows (a daylight-saving
    change) made pandas return objects, on which every later date operation failed.
    """
    if pd.api.types.is_datetime64_any_dtype(values):  # typed already (Parquet)
        return values.dt.tz_localize(None) if isinstance(values.dtype, pd.DatetimeTZDtype) else values
    if date_format is None:
        sample = values.head(1000).dropna().astype(str).str.strip()  # (offsets past it: caught below)
        if sample.str.contains(_HAS_OFFSET).any():
            return _iso_wall_times(values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            parsed = pd.to_datetime(values, format="ISO8601", errors="coerce")
        if parsed.dtype == object or isinstance(parsed.dtype, pd.DatetimeTZDtype):  # offsets past the sample
            return _iso_wall_times(values)
        text = values.astype("string")
        parsed = parsed.where(~(text.str.len() < 10).fillna(False).to_numpy())  # "2014", "2014-07": not a day
        retry = parsed.isna() & values.notna()
        if retry.any():  # surrounding spaces
            parsed = parsed.copy()
            parsed[retry] = _iso_wall_times(values[retry])
        return parsed
    with warnings.catch_warnings():  # pandas' notice that mixed offsets will need utc=True
        warnings.simplefilter("ignore", FutureWarning)
        parsed = pd.to_datetime(values, format=date_format, errors="coerce")
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        return parsed.dt.tz_localize(None)
    if parsed.dtype == object:  # offsets that differ row to row, from a format with %z (rare: row by row)
        wall = [v.replace(tzinfo=None) if getattr(v, "tzinfo", None) else v for v in parsed]
        return pd.Series(pd.to_datetime(wall, errors="coerce"), index=values.index)
    return parsed


def _iso_wall_times(values: pd.Series) -> pd.Series:
    """ISO 8601 dates and times (vectorised), any UTC offset dropped; anything else NaT."""
    text = values.astype("string").str.strip()
    iso = text.str.match(_ISO_DATE).fillna(False).astype(bool)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    if iso.any():
        stripped = text[iso].str.replace(_OFFSET, r"\1", regex=True)
        out[iso] = pd.to_datetime(stripped, format="ISO8601", errors="coerce").to_numpy("datetime64[ns]")
    return out


def sale_months(frame: pd.DataFrame, key: str, config: DataConfig) -> pd.Series:
    """The sale month ("YYYY-MM") of each row as landed file ``key`` is read, missing where the date is
    missing, unreadable or in the future. ``UnreadableFile`` when there is no sale-date column."""
    column = config.source_name("sale_date", frame.columns)
    if column not in frame.columns:
        raise UnreadableFile(f"no sale-date column {column!r}")
    dates = parse_sale_dates(frame[column], config.read_options(key).date_format)
    dates = dates.where(dates <= latest_plausible_date())  # a typo'd future date makes no month of its own
    return dates.dt.strftime("%Y-%m")


def row_months(frame: pd.DataFrame, key: str, config: DataConfig) -> pd.Series:
    """The sale month ("YYYY-MM") of each row of a file whose path names no month.

    Rows without a parsable date go to the file's newest month, where cleaning quarantines them as
    ``unparsable_date`` (never lost). Raises ``UnreadableFile`` when the file cannot be split at all.
    """
    try:
        months = sale_months(frame, key, config)
    except UnreadableFile as exc:
        raise UnreadableFile(f"no month (YYYY-MM) in its path and {exc}") from None
    if months.isna().all():
        if not len(frame):
            return months.astype(object)
        column = config.source_name("sale_date", frame.columns)
        raise UnreadableFile(f"no month (YYYY-MM) in its path and no parsable date in column {column!r}")
    return months.fillna(months.dropna().max()).astype(object)  # (max over text with NaN raised)
