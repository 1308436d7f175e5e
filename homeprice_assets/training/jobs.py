"""The model lifecycle job and its monthly schedule (a floor under data-driven retraining)."""

import dagster as dg

from homeprice_assets.training.assets import LIFECYCLE_TAG

LIFECYCLE_SELECTION = dg.AssetSelection.groups("training", "serving")
# Every lifecycle run carries this tag (the run queue lets one such run through at a time).
LIFECYCLE_TAGS = {LIFECYCLE_TAG: "true"}
lifecycle_job = dg.define_asset_job(
    "model_lifecycle_job",
    selection=LIFECYCLE_SELECTION,
    tags=LIFECYCLE_TAGS,
    description="Split, train, validate against the champion, promote, explain, document, package the Bento.",
)


def build_lifecycle_schedule(cron: str) -> dg.ScheduleDefinition:
    """The recurring retrain (``training.schedule``), whatever the sensors decide."""
    return dg.ScheduleDefinition(
        name="monthly_retrain",
        job=lifecycle_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Retrain at least monthly, whatever the sensors decide.",
    )
