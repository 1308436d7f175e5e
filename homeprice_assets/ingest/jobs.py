"""The ingest job: one sale month from landed files to features, stopped by any blocking check."""

import dagster as dg

from homeprice_assets.partitions import sale_month_partitions

INGEST_SELECTION = dg.AssetSelection.groups("ingest", "features")
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=INGEST_SELECTION,
    partitions_def=sale_month_partitions,
    description="Land -> raw -> clean (+ quarantine) -> features for one sale month.",
)
