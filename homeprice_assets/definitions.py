"""The one code location: every asset, check, job, sensor, schedule and resource of homeprice.

Each domain folder (ingest, features, training, monitoring, serving) owns its pieces; this file wires them
to the stores named by environment variables, so the same graph runs on a laptop or in production.
"""

from __future__ import annotations

import dagster as dg

from homeprice_assets.features import assets as feature_assets
from homeprice_assets.ingest import assets as ingest_assets
from homeprice_assets.ingest.jobs import ingest_job
from homeprice_assets.monitoring import definitions as monitoring
from homeprice_assets.resources.landing import landing_zone_from_url
from homeprice_assets.resources.mlflow import MlflowTracking
from homeprice_assets.resources.storage import storage_from_url
from homeprice_assets.serving import definitions as serving
from homeprice_assets.training import assets as training_assets
from homeprice_assets.training.jobs import lifecycle_job, lifecycle_schedule


def _core() -> dg.Definitions:
    return dg.Definitions(
        assets=dg.load_assets_from_modules([ingest_assets, feature_assets, training_assets]),
        jobs=[ingest_job, lifecycle_job],
        schedules=[lifecycle_schedule],
        resources={
            "io_manager": storage_from_url(),
            "landing": landing_zone_from_url(),
            "mlflow_tracking": MlflowTracking(
                tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI").get_value(),
                ui_url=dg.EnvVar("HOMEPRICE_MLFLOW_UI_URL").get_value(),
            ),
        },
    )


defs = dg.Definitions.merge(_core(), monitoring.defs, serving.defs)
