"""The model lifecycle job and its monthly schedule (a floor under data-driven retraining)."""

import dagster as dg

from homeprice_assets.training.settings import training_settings

LIFECYCLE_SELECTION = dg.AssetSelection.groups("training", "serving")
lifecycle_job = dg.define_asset_job(
    "model_lifecycle_job",
    selection=LIFECYCLE_SELECTION,
    description="Split, train, validate against the champion, promote, explain, document, package the Bento.",
)
lifecycle_schedule = dg.ScheduleDefinition(
    name="monthly_retrain",
    job=lifecycle_job,
    cron_schedule=training_settings().schedule,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrain at least monthly, whatever the sensors decide.",
)
