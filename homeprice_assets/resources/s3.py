"""What the S3 variants of the stores share: one URL grammar and one way to get a client."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from dagster_aws.s3 import S3Resource


def s3_client(endpoint_url: str | None = None, region_name: str | None = None):
    return S3Resource(endpoint_url=endpoint_url, region_name=region_name).get_client()


def s3_endpoint() -> str | None:
    """``$HOMEPRICE_S3_ENDPOINT_URL``: an S3-compatible server (MinIO, moto) instead of AWS."""
    return os.environ.get("HOMEPRICE_S3_ENDPOINT_URL") or None


def parse_store_url(url: str, setting: str) -> tuple[str, str] | None:
    """``(bucket, prefix)`` for ``s3://bucket/prefix``, None for a local path (or ``file://``).

    Anything else is a ``ValueError`` that names the setting the URL came from.
    """
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{setting}: no bucket in {url!r} (expected s3://bucket/prefix)")
        return parsed.netloc, parsed.path.strip("/")
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"{setting}: unsupported scheme {parsed.scheme!r} in {url!r}")
    return None
