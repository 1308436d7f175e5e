"""The landing zone: where new sales files arrive, as a local folder or an S3 prefix, chosen by URL.

A file belongs to the sale month named in its path (``.../2014-06/any.csv`` or ``sales_2014-06.parquet``);
a file whose path names no month is split by its sale-date column into the months its rows fall in (unless
``data.require_month_in_path``). Its fingerprint (content hash locally, ETag on S3) tells a new or changed
file from one already seen. Nothing on the landing zone is skipped silently: a file that belongs to no month
is listed by ``scan`` with the reason, for the log, the asset metadata and the CLI.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pandas as pd

from homeprice_assets.config import DataConfig, homeprice_home, project_config
from homeprice_assets.ingest.reading import UnreadableFile, read_with_config, row_months
from homeprice_assets.ingest.rules import file_sha256
from homeprice_assets.resources.s3 import parse_store_url, s3_client, s3_endpoint

SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".parquet")
_MONTH = re.compile(r"(?<!\d)(\d{4})-(0[1-9]|1[0-2])(?!\d)")


@dataclass(frozen=True)
class LandedFile:
    """One landed file as seen by one month. A file split by sale date appears once per month it holds."""

    key: str  # path relative to the landing root
    month: str  # "YYYY-MM"
    fingerprint: str
    size: int
    split: bool = False  # no month in the path: the month's rows are chosen by their sale date

    @property
    def partition_key(self) -> str:
        return f"{self.month}-01"


def month_of(key: str) -> str | None:
    """The sale month a landed file is for: the last ``YYYY-MM`` in its path, or None."""
    found = _MONTH.findall(key)
    return f"{found[-1][0]}-{found[-1][1]}" if found else None


def is_sales_file(key: str) -> bool:
    return key.lower().endswith(SUPPORTED_SUFFIXES)


def read_sales_bytes(key: str, data: bytes, config: DataConfig | None = None) -> pd.DataFrame:
    """Parse one landed file with every column as text: raw data is kept exactly as it came.

    Raises ``UnreadableFile`` (a ``ValueError``) with the reason when the file is not a readable table.
    """
    return read_with_config(key, data, config or project_config().data).frame


@dataclass(frozen=True)
class SetAside:
    """A file on the landing zone that belongs to no month, and why."""

    key: str
    reason: str


@dataclass(frozen=True)
class LandingScan:
    files: list[LandedFile]  # one entry per (file, month)
    set_aside: list[SetAside]  # everything else on the landing zone, with its reason


# Month assignment of files split by sale date, by (key, fingerprint, options): listing re-reads nothing.
_SPLIT_CACHE: dict[tuple[str, str, str], tuple[str, ...] | str] = {}


class LandingZone(dg.ConfigurableResource):
    """Interface shared by the local and S3 landing zones."""

    def _list_objects(self) -> list[tuple[str, str, int]]:
        """Every object under the root as ``(key, fingerprint, size)``, whatever its name."""
        raise NotImplementedError

    def scan(self, config: DataConfig | None = None) -> LandingScan:
        """What each file on the landing zone is for: its month(s), or why it belongs to none."""
        data = config or project_config().data
        files: list[LandedFile] = []
        set_aside: list[SetAside] = []
        for key, fingerprint, size in sorted(self._list_objects()):
            if key.endswith(".partial"):
                set_aside.append(SetAside(key, "being written (atomic landing in progress)"))
                continue
            if not is_sales_file(key):
                set_aside.append(
                    SetAside(key, f"not a sales file (expected one of {', '.join(SUPPORTED_SUFFIXES)})")
                )
                continue
            month = month_of(key)
            if month:
                files.append(LandedFile(key, month, fingerprint, size))
                continue
            if data.require_month_in_path:
                set_aside.append(
                    SetAside(key, "no month (YYYY-MM) in its path, and data.require_month_in_path is true")
                )
                continue
            months = self._split_months(key, fingerprint, data)
            if isinstance(months, str):
                set_aside.append(SetAside(key, months))
            else:
                files.extend(LandedFile(key, m, fingerprint, size, split=True) for m in months)
        return LandingScan(files, set_aside)

    def _split_months(self, key: str, fingerprint: str, config: DataConfig) -> tuple[str, ...] | str:
        """The months a file without a month in its path holds, or the reason it cannot be split."""
        cache_key = (
            key,
            fingerprint,
            config.model_dump_json(include={"columns", "read", "sources", "date_format"}),
        )
        if cache_key not in _SPLIT_CACHE:
            if len(_SPLIT_CACHE) > 1024:  # a long-running sensor process: forget files long replaced
                _SPLIT_CACHE.clear()
            try:
                frame = read_with_config(key, self.read_bytes(key), config).frame
                months = tuple(sorted(set(row_months(frame, key, config))))
                _SPLIT_CACHE[cache_key] = months or "no month (YYYY-MM) in its path and no rows to place"
            except UnreadableFile as exc:
                _SPLIT_CACHE[cache_key] = f"no month (YYYY-MM) in its path and unreadable: {exc}"
        return _SPLIT_CACHE[cache_key]

    def list_files(self, config: DataConfig | None = None) -> list[LandedFile]:
        return self.scan(config).files

    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def files_for_month(self, month: str, config: DataConfig | None = None) -> list[LandedFile]:
        return sorted((f for f in self.list_files(config) if f.month == month), key=lambda f: f.key)

    def months(self, config: DataConfig | None = None) -> list[str]:
        return sorted({f.month for f in self.list_files(config)})


class LocalLandingZone(LandingZone):
    """A folder on this machine (default ``$HOMEPRICE_HOME/landing``)."""

    root: str

    def _root(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def _list_objects(self) -> list[tuple[str, str, int]]:
        root = self._root()
        if not root.exists():
            return []
        return [
            (path.relative_to(root).as_posix(), file_sha256(path.read_bytes()), path.stat().st_size)
            for path in sorted(root.rglob("*"))
            if path.is_file()
        ]

    def read_bytes(self, key: str) -> bytes:
        return (self._root() / key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._root() / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a sensor never sees half a file

    def describe(self) -> str:
        return str(self._root())


class S3LandingZone(LandingZone):
    """An S3 prefix; ``endpoint_url`` (or ``AWS_ENDPOINT_URL``) points at any S3-compatible server."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region_name: str | None = None

    def _client(self):
        return s3_client(self.endpoint_url, self.region_name)

    def _full(self, key: str) -> str:
        return f"{self.prefix.strip('/')}/{key}".lstrip("/")

    def _list_objects(self) -> list[tuple[str, str, int]]:
        client = self._client()
        prefix = self.prefix.strip("/")
        out = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{prefix}/" if prefix else ""
        ):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(prefix) + 1 :] if prefix else obj["Key"]
                if key and not key.endswith("/"):
                    out.append((key, obj["ETag"].strip('"'), int(obj["Size"])))
        return out

    def read_bytes(self, key: str) -> bytes:
        return self._client().get_object(Bucket=self.bucket, Key=self._full(key))["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> None:
        self._client().put_object(Bucket=self.bucket, Key=self._full(key), Body=data)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix.strip('/')}"


LANDED_DIGEST_TAG = "homeprice/landed_digest"


def month_digest(files: list[LandedFile], month: str) -> str:
    """A short hash of which files (and contents) a month has: an equal digest means nothing new."""
    content = sorted(f"{f.key}={f.fingerprint}" for f in files if f.month == month)
    return hashlib.sha256("\n".join(content).encode()).hexdigest()[:16]


def landing_zone_from_url(url: str | None = None) -> LandingZone:
    """``s3://bucket/prefix`` or a local path; default ``$HOMEPRICE_LANDING_URL`` or the project home."""
    url = url or os.environ.get("HOMEPRICE_LANDING_URL") or str(homeprice_home() / "landing")
    s3 = parse_store_url(url, "HOMEPRICE_LANDING_URL")
    if s3:
        return S3LandingZone(bucket=s3[0], prefix=s3[1], endpoint_url=s3_endpoint())
    return LocalLandingZone(root=urlparse(url).path if url.startswith("file:") else url)
