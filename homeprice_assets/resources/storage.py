"""Asset storage: DataFrames as Parquet files (one per partition) that people can open with any tool."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
import pandas as pd
from upath import UPath

from homeprice_assets.config import homeprice_home


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
