"""The one code location: every asset, check, job, sensor, schedule and resource of homeprice.

Each domain folder (ingest, features, training, monitoring, serving) owns its pieces; this file wires them
to the stores named by environment variables, so the same graph runs on a laptop or in production. The
configuration is read and validated once, here: a bad key stops the code location loading, naming the key
and the file, before any run starts.
"""

from __future__ import annotations

import os

import dagster as dg

from homeprice_assets.features import assets as feature_assets
from homeprice_assets.ingest import assets as ingest_assets
from homeprice_assets.ingest.jobs import ingest_job
from homeprice_assets.monitoring import definitions as monitoring
from homeprice_assets.profiles import apply_profile
from homeprice_assets.replay import assets as replay
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.landing import landing_zone_from_url
from homeprice_assets.resources.registry import ModelRegistry
from homeprice_assets.resources.storage import storage_from_url
from homeprice_assets.rollout import definitions as rollout
from homeprice_assets.serving import definitions as serving
from homeprice_assets.training import assets as training_assets
from homeprice_assets.training.jobs import build_lifecycle_schedule, lifecycle_job


def _core(config: ProjectConfigResource) -> dg.Definitions:
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or None
    ui_url = os.environ.get("HOMEPRICE_MLFLOW_UI_URL") or None
    project = config.get()
    return dg.Definitions(
        assets=dg.load_assets_from_modules([ingest_assets, feature_assets, training_assets]),
        jobs=[ingest_job, lifecycle_job],
        schedules=[
            build_lifecycle_schedule(
                project.training.schedule, in_process=project.monitoring.automation.in_process_runs
            )
        ],
        resources={
            "settings": config,
            "io_manager": storage_from_url(),
            "landing": landing_zone_from_url(),
            "registry": ModelRegistry(tracking_uri=tracking_uri, ui_url=ui_url),
        },
    )


# Under HOMEPRICE_PROFILE=production a code location started outside the CLI (compose, Helm) refuses a missing
# or local store by name, as the CLI does; locally this changes nothing.
apply_profile()
_config = ProjectConfigResource.from_env()
defs = dg.Definitions.merge(
    _core(_config), monitoring.build_defs(_config), serving.defs, rollout.defs, replay.defs
)
