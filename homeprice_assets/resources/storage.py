"""Asset storage: DataFrames as Parquet files (one per partition) that people can open with any tool."""

from __future__ import annotations

import io
import os
from typing import Any

import dagster as dg
import pandas as pd
from upath import UPath

from homeprice_assets.config import homeprice_home
from homeprice_assets.resources.s3 import parse_store_url, s3_client, s3_endpoint


class ParquetIOManager(dg.UPathIOManager):
    """Stores each (partition of an) asset as ``<base>/<asset>/<partition>.parquet``.

    Unpartitioned consumers of a partitioned asset receive ``{partition_key: frame}`` for the partitions
    that exist (missing months are allowed), so a training window can span months with no sales.
    """

    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: ParquetIOManager stores DataFrames, "
                f"got {type(obj).__name__}"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        obj.to_parquet(tmp, index=False)
        os.replace(tmp, path)  # readers never see a half-written file

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pd.DataFrame:
        return pd.read_parquet(path)


class ParquetStorage(dg.ConfigurableIOManagerFactory):
    """Local Parquet storage under ``base_dir`` (default ``$HOMEPRICE_HOME/storage``)."""

    base_dir: str | None = None

    def create_io_manager(self, context: dg.InitResourceContext) -> ParquetIOManager:
        return ParquetIOManager(base_path=UPath(self.base_dir or homeprice_home() / "storage"))


class S3ParquetStorage(dg.ConfigurableIOManager):
    """The same layout as ``ParquetStorage``, in an S3 bucket: ``s3://<bucket>/<prefix>/<asset>/<month>.parquet``.

    A partitioned consumer gets its own month as a DataFrame; an unpartitioned consumer of a partitioned asset
    gets ``{month: frame}`` (months without a file are skipped when the input allows missing partitions).
    """

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region_name: str | None = None

    def _client(self):
        return s3_client(self.endpoint_url, self.region_name)

    def _key(self, asset_key: dg.AssetKey, partition: str | None) -> str:
        base = "/".join(p for p in [self.prefix.strip("/"), *asset_key.path] if p)
        return f"{base}/{partition}.parquet" if partition else f"{base}.parquet"

    def _read(self, key: str) -> pd.DataFrame:
        return pd.read_parquet(
            io.BytesIO(self._client().get_object(Bucket=self.bucket, Key=key)["Body"].read())
        )

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: S3ParquetStorage stores DataFrames, "
                f"got {type(obj).__name__}"
            )
        partition = context.asset_partition_key if context.has_asset_partitions else None
        buffer = io.BytesIO()
        obj.to_parquet(buffer, index=False)
        key = self._key(context.asset_key, partition)
        self._client().put_object(Bucket=self.bucket, Key=key, Body=buffer.getvalue())
        context.add_output_metadata({"uri": f"s3://{self.bucket}/{key}"})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | dict[str, pd.DataFrame]:
        if not context.has_asset_partitions:
            return self._read(self._key(context.asset_key, None))
        if context.has_partition_key:  # a month of a partitioned consumer: that month's frame
            return self._read(self._key(context.asset_key, context.asset_partition_key))
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions", False))
        client, out = self._client(), {}
        for partition in context.asset_partition_keys:
            try:
                out[partition] = self._read(self._key(context.asset_key, partition))
            except client.exceptions.NoSuchKey:
                if not allow_missing:
                    raise
        return out


def storage_from_url(url: str | None = None) -> dg.ConfigurableIOManagerFactory | dg.ConfigurableIOManager:
    """``s3://bucket/prefix`` or a local folder; default ``$HOMEPRICE_STORAGE_URL`` or the project home."""
    url = url or os.environ.get("HOMEPRICE_STORAGE_URL") or os.environ.get("HOMEPRICE_STORAGE_DIR")
    s3 = parse_store_url(url, "HOMEPRICE_STORAGE_URL") if url else None
    if s3:
        return S3ParquetStorage(bucket=s3[0], prefix=s3[1], endpoint_url=s3_endpoint())
    return ParquetStorage(base_dir=url or None)
