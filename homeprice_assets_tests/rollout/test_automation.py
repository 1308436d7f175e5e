"""Declarative automation: a newly cleaned month requests its ground truth; that, the evaluation."""

from pathlib import Path

import dagster as dg
import pytest

from homeprice_assets.config import load_config
from homeprice_assets.ingest.assets import clean_sales, raw_sales
from homeprice_assets.ingest.landing import land_history
from homeprice_assets.partitions import register_months
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.landing import LocalLandingZone
from homeprice_assets.resources.registry import ModelRegistry
from homeprice_assets.resources.storage import ParquetStorage
from homeprice_assets.rollout.assets import PredictionLogResource, ground_truth, rollout_evaluation
from homeprice_assets_tests.helpers import project_instance

GT, EVAL = dg.AssetKey("ground_truth"), dg.AssetKey("rollout_evaluation")


def _requested(result: dg.EvaluateAutomationConditionsResult, key: dg.AssetKey) -> set[str | None]:
    return set(result.get_requested_partitions(key)) if result.get_num_requested(key) else set()


@pytest.mark.slow
def test_new_month_requests_ground_truth_then_the_evaluation(tmp_path: Path) -> None:
    home = tmp_path / "home"
    resources = {
        "landing": LocalLandingZone(root=str(home / "landing")),
        "io_manager": ParquetStorage(base_dir=str(home / "storage")),
        "settings": ProjectConfigResource(),
        "registry": ModelRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
        "prediction_log": PredictionLogResource(url=f"sqlite:///{tmp_path / 'predictions.db'}"),
    }
    defs = dg.Definitions(
        assets=[raw_sales, clean_sales, ground_truth, rollout_evaluation], resources=resources
    )
    with project_instance() as instance:
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert result.total_requested == 0  # nothing landed, nothing to do
        land_history(resources["landing"], load_config().data, since="2014-07", until="2014-07")
        register_months(instance, ["2014-07"])
        assert dg.materialize(
            [raw_sales, clean_sales], partition_key="2014-07", instance=instance, resources=resources
        ).success
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        assert _requested(result, GT) == {"2014-07"}
        assert dg.materialize(
            [raw_sales, clean_sales, ground_truth],
            selection=[ground_truth],
            partition_key="2014-07",
            instance=instance,
            resources=resources,
        ).success
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        assert result.get_num_requested(EVAL) == 1 and not _requested(result, GT)
