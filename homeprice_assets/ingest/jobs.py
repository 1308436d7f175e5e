"""The ingest job: sale months from landed files to features, each month stopped by its own blocking checks.

A run covers one month (the landing sensor) or a range of months (``homeprice ingest``, a backfill: the
assets' single-run backfill policy). Its one step walks the months in order in one process, so the job
runs in-process: a subprocess per run would only add start-up time to light pandas work.
"""

import dagster as dg

from homeprice_assets.partitions import sale_month_partitions

INGEST_SELECTION = dg.AssetSelection.groups("ingest", "features")
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=INGEST_SELECTION,
    partitions_def=sale_month_partitions,
    executor_def=dg.in_process_executor,
    description="Land -> raw -> clean (+ quarantine) -> features for one sale month or a range of them.",
)
