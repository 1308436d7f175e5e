"""Declarative automation: a newly cleaned month requests its ground truth; that, the evaluation."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from homeprice_assets.config import BUNDLED_DATA, load_config
from homeprice_assets.ingest.assets import clean_sales, raw_sales
from homeprice_assets.ingest.landing import land_history
from homeprice_assets.ingest.status import latest_record
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
    """History ingested before automation starts requests nothing; each month ingested after requests its
    ground truth once its blocking checks pass, and that the evaluation. A month the checks hold back gets
    no ground truth, and a manual run of it says which check."""
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

        def ingest(month: str) -> dg.ExecuteInProcessResult:
            register_months(instance, [month])
            return dg.materialize(
                [raw_sales, clean_sales],
                partition_key=month,
                instance=instance,
                resources=resources,
                raise_on_error=False,
            )

        def truth(month: str) -> dg.ExecuteInProcessResult:
            return dg.materialize(
                [raw_sales, clean_sales, ground_truth],
                selection=[ground_truth],
                partition_key=month,
                instance=instance,
                resources=resources,
                raise_on_error=False,
            )

        land_history(resources["landing"], load_config().data, since="2014-06", until="2014-07")
        assert ingest("2014-06").success
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert result.total_requested == 0  # history ingested before the first tick: no run per month
        assert ingest("2014-07").success
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        assert _requested(result, GT) == {"2014-07"}
        assert truth("2014-07").success
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        assert result.get_num_requested(EVAL) == 1 and not _requested(result, GT)

        # 2014-08 with a fifth of its prices unreadable: quarantine_rate (blocking) fails after the month's
        # clean sales are stored
        sales = pd.read_csv(BUNDLED_DATA, dtype=str, keep_default_na=False)
        month = sales[sales["sale_date"].str.startswith("2014-08")].copy()
        month.iloc[: len(month) // 5, month.columns.get_loc("sale_price")] = "n/a"
        resources["landing"].write_bytes("sales_2014-08.csv", month.to_csv(index=False).encode())
        held = ingest("2014-08")
        assert not held.success
        assert latest_record(instance, "clean_sales", "2014-08") is not None  # stored, then judged
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
        assert not _requested(result, GT)
        refused = truth("2014-08")
        assert not refused.success
        failure = refused.failure_data_for_node("ground_truth")
        assert failure is not None and "clean_sales.quarantine_rate" in str(failure.error)
