"""The model lifecycle job and its monthly schedule (a floor under data-driven retraining)."""

import dagster as dg

from homeprice_assets.monitoring.sensors.common import IN_PROCESS_RUN_CONFIG
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


def build_lifecycle_schedule(cron: str, in_process: bool = True) -> dg.ScheduleDefinition:
    """The recurring retrain (``training.schedule``), whatever the sensors decide.

    ``in_process`` (``monitoring.automation.in_process_runs``, as for the sensors' runs): the steps run in the
    run's own process, one after another, so the promotion precedes the explanation (its step priority)
    and no step pays a fresh process importing the code location.
    """
    return dg.ScheduleDefinition(
        name="monthly_retrain",
        job=lifecycle_job,
        cron_schedule=cron,
        run_config=IN_PROCESS_RUN_CONFIG if in_process else None,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Retrain at least monthly, whatever the sensors decide.",
    )
