"""Asset storage: DataFrames as Parquet files (one per partition) that people can open with any tool."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
from upath import UPath

from homeprice_assets.config import homeprice_home
from homeprice_assets.resources.s3 import parse_store_url, s3_client, s3_endpoint

# Input metadata a consumer may set (``dg.AssetIn(metadata={...})``):
# the columns to read (those a partition lacks are skipped: optional inputs such as coordinates) ...
COLUMNS = "columns"
# ... and, for an unpartitioned consumer of a partitioned asset, ``{partition: loader}`` instead of
# ``{partition: frame}``: the consumer reads only the months it needs, one at a time (a training window
# of 60 months, a drift reference of 24, out of however many months have landed).
LAZY_PARTITIONS = "lazy_partitions"

Loader = Callable[[], pd.DataFrame]


@dataclass(frozen=True)
class EncodedParquet:
    """A DataFrame already encoded as the Parquet file these IO managers write for it (the same bytes).

    The ingest step's worker process encodes its months' frames itself: the step then hands the IO
    manager bytes to store rather than frames to copy back from the worker and encode.
    """

    data: bytes

    @classmethod
    def of(cls, frame: pd.DataFrame) -> EncodedParquet:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return cls(buffer.getvalue())


def _input_meta(context: dg.InputContext) -> dict[str, Any]:
    return dict(context.definition_metadata or {})


def _present(wanted: list[str] | None, names: list[str]) -> list[str] | None:
    """The wanted columns a file has, in the wanted order (None: every column)."""
    return None if wanted is None else [c for c in wanted if c in names]


class ParquetIOManager(dg.UPathIOManager):
    """Stores each (partition of an) asset as ``<base>/<asset>/<partition>.parquet``.

    Unpartitioned consumers of a partitioned asset receive ``{partition_key: frame}`` for the partitions
    that exist (missing months are allowed), so a training window can span months with no sales; with
    ``lazy_partitions`` in the input's metadata, ``{partition_key: loader}``. ``columns`` in the input's
    metadata prunes the read to those columns.
    """

    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        if not isinstance(obj, pd.DataFrame | EncodedParquet):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: ParquetIOManager stores DataFrames, "
                f"got {type(obj).__name__}"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own per write: two runs storing the same month at once (a second file landed while
        # the first ingest ran) must not write into, or rename away, each other's temporary file.
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.partial")
        if isinstance(obj, EncodedParquet):
            tmp.write_bytes(obj.data)
        else:
            obj.to_parquet(tmp, index=False)
        os.replace(tmp, path)  # readers never see a half-written file

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pd.DataFrame:
        return self._read(path, _input_meta(context).get(COLUMNS))

    @staticmethod
    def _read(path: UPath, columns: list[str] | None) -> pd.DataFrame:
        if columns is not None:
            with path.open("rb") as f:
                columns = _present(columns, pq.read_schema(f).names)
        return pd.read_parquet(path, columns=columns)

    def load_partitions(self, context: dg.InputContext) -> Any:
        meta = _input_meta(context)
        if not meta.get(LAZY_PARTITIONS) or context.has_partition_key:
            return super().load_partitions(context)
        paths = self._get_paths_for_partitions(context)
        out: dict[str, Loader] = {}
        for partition in context.asset_partition_keys:
            path = paths[partition]
            if not path.exists():
                if not meta.get("allow_missing_partitions", False):
                    raise FileNotFoundError(f"{context.asset_key.to_user_string()}: no partition {partition}")
                continue
            out[partition] = lambda path=path: self._read(path, meta.get(COLUMNS))
        return out


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

    def _read(self, key: str, columns: list[str] | None = None) -> pd.DataFrame:
        body = io.BytesIO(self._client().get_object(Bucket=self.bucket, Key=key)["Body"].read())
        if columns is not None:
            columns = _present(columns, pq.read_schema(body).names)
            body.seek(0)
        return pd.read_parquet(body, columns=columns)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not isinstance(obj, pd.DataFrame | EncodedParquet):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: S3ParquetStorage stores DataFrames, "
                f"got {type(obj).__name__}"
            )
        partition = context.asset_partition_key if context.has_asset_partitions else None
        body = (obj if isinstance(obj, EncodedParquet) else EncodedParquet.of(obj)).data
        key = self._key(context.asset_key, partition)
        self._client().put_object(Bucket=self.bucket, Key=key, Body=body)
        context.add_output_metadata({"uri": f"s3://{self.bucket}/{key}"})

    def load_input(
        self, context: dg.InputContext
    ) -> pd.DataFrame | dict[str, pd.DataFrame] | dict[str, Loader]:
        meta = _input_meta(context)
        columns = meta.get(COLUMNS)
        if not context.has_asset_partitions:
            return self._read(self._key(context.asset_key, None), columns)
        if context.has_partition_key:  # a month of a partitioned consumer: that month's frame
            return self._read(self._key(context.asset_key, context.asset_partition_key), columns)
        allow_missing = bool(meta.get("allow_missing_partitions", False))
        client, out = self._client(), {}
        if meta.get(LAZY_PARTITIONS):
            for partition in context.asset_partition_keys:
                key = self._key(context.asset_key, partition)
                try:
                    client.head_object(Bucket=self.bucket, Key=key)
                except client.exceptions.ClientError as exc:
                    missing = exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")
                    if not (missing and allow_missing):
                        raise
                    continue
                out[partition] = lambda key=key: self._read(key, columns)
            return out
        for partition in context.asset_partition_keys:
            try:
                out[partition] = self._read(self._key(context.asset_key, partition), columns)
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
