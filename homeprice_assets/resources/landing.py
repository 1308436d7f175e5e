"""The landing zone: where new sales files arrive, as a local folder or an S3 prefix, chosen by URL.

A file belongs to the sale month named in its path (``.../2014-06/any.csv`` or ``sales_2014-06.parquet``);
its fingerprint (content hash locally, ETag on S3) tells a new or changed file from one already seen.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pandas as pd

from homeprice_assets.config import homeprice_home
from homeprice_assets.ingest.rules import file_sha256
from homeprice_assets.resources.s3 import parse_store_url, s3_client, s3_endpoint

SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".parquet")
_MONTH = re.compile(r"(?<!\d)(\d{4})-(0[1-9]|1[0-2])(?!\d)")


@dataclass(frozen=True)
class LandedFile:
    key: str  # path relative to the landing root
    month: str  # "YYYY-MM"
    fingerprint: str
    size: int

    @property
    def partition_key(self) -> str:
        return f"{self.month}-01"


def month_of(key: str) -> str | None:
    """The sale month a landed file is for: the last ``YYYY-MM`` in its path, or None."""
    found = _MONTH.findall(key)
    return f"{found[-1][0]}-{found[-1][1]}" if found else None


def is_sales_file(key: str) -> bool:
    return key.lower().endswith(SUPPORTED_SUFFIXES)


def read_sales_bytes(key: str, data: bytes) -> pd.DataFrame:
    """Parse one landed file with every column as text: raw data is kept exactly as it came."""
    if key.lower().endswith(".parquet"):
        frame = pd.read_parquet(io.BytesIO(data))
        return frame.astype("string").astype(object).where(frame.notna(), None)
    compression = "gzip" if key.lower().endswith(".gz") else None
    return pd.read_csv(
        io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""], compression=compression
    )


class LandingZone(dg.ConfigurableResource):
    """Interface shared by the local and S3 landing zones."""

    def list_files(self) -> list[LandedFile]:
        raise NotImplementedError

    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def files_for_month(self, month: str) -> list[LandedFile]:
        return sorted((f for f in self.list_files() if f.month == month), key=lambda f: f.key)

    def months(self) -> list[str]:
        return sorted({f.month for f in self.list_files()})


class LocalLandingZone(LandingZone):
    """A folder on this machine (default ``$HOMEPRICE_HOME/landing``)."""

    root: str

    def _root(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def list_files(self) -> list[LandedFile]:
        root = self._root()
        if not root.exists():
            return []
        out = []
        for path in sorted(root.rglob("*")):
            key = path.relative_to(root).as_posix()
            month = month_of(key)
            if path.is_file() and is_sales_file(key) and month:
                out.append(LandedFile(key, month, file_sha256(path.read_bytes()), path.stat().st_size))
        return out

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

    def list_files(self) -> list[LandedFile]:
        client = self._client()
        prefix = self.prefix.strip("/")
        out = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{prefix}/" if prefix else ""
        ):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(prefix) + 1 :] if prefix else obj["Key"]
                month = month_of(key)
                if is_sales_file(key) and month:
                    out.append(LandedFile(key, month, obj["ETag"].strip('"'), int(obj["Size"])))
        return sorted(out, key=lambda f: f.key)

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
