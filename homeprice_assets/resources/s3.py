"""What the S3 variants of the stores share: one URL grammar and one way to get a client."""

from __future__ import annotations

import functools
import os
from typing import Any
from urllib.parse import urlparse

# What boto3 reads its credentials and region from: a client is reused only while these are unchanged.
_CLIENT_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


def s3_client(endpoint_url: str | None = None, region_name: str | None = None) -> Any:
    """The process's S3 client for these settings, built once.

    Building a boto3 client parses its service model (a large JSON file): about 0.5 s, which every
    read and write of every month paid before (37% of a production-profile ingest). Clients are
    thread-safe and refresh temporary credentials themselves; a changed AWS environment or a forked
    process gets a new one.
    """
    env = tuple(os.environ.get(name) for name in _CLIENT_ENV)
    return _cached_client(endpoint_url, region_name, env, os.getpid())


@functools.lru_cache(maxsize=8)
def _cached_client(
    endpoint_url: str | None, region_name: str | None, env: tuple[str | None, ...], pid: int
) -> Any:
    # imported here: dagster_aws (boto3, and Dagster's test utilities through its components) takes
    # about 0.4 s to import, which every process that imports the definitions paid without an S3 store
    from dagster_aws.s3 import S3Resource

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
