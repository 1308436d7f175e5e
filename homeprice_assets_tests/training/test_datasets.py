"""The training/validation split asset on months ingested by the real pipeline."""

import dagster as dg
import pandas as pd

from homeprice_assets.config import load_config
from homeprice_assets.ingest.landing import land_history
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.training.assets import model_datasets
from homeprice_assets_tests.helpers import INGEST_ASSETS, ingest_month, ingest_range


def test_months_blocked_by_their_checks_are_left_out(instance, landing, storage, bundled_sales) -> None:
    months = land_history(landing, load_config().data, since="2013-01", until="2013-06")
    assert ingest_range(months, instance, landing, storage).success
    # 2013-02 is re-landed with a broken export: its clean data is now blocked, its old features are stale
    rows = bundled_sales[bundled_sales["sale_date"].str.startswith("2013-02")].reset_index(drop=True)
    rows.loc[: len(rows) // 2, "sale_price"] = "0"
    landing.write_bytes("sales_2013-02.csv", rows.to_csv(index=False).encode())
    assert not ingest_month("2013-02", instance, landing, storage).success

    result = dg.materialize(
        [*INGEST_ASSETS, model_datasets],
        selection=["training_set", "validation_set"],
        instance=instance,
        resources={"landing": landing, "io_manager": storage, "settings": ProjectConfigResource()},
    )
    train = result.output_for_node("model_datasets", "training_set")
    validation = result.output_for_node("model_datasets", "validation_set")
    assert sorted(train["sale_month"].unique()) == ["2013-01", "2013-03"]
    assert sorted(validation["sale_month"].unique()) == ["2013-04", "2013-05", "2013-06"]
    assert train["sale_date"].max() < validation["sale_date"].min()
    meta = next(e for e in result.get_asset_materialization_events() if e.asset_key.path == ["training_set"])
    assert meta.materialization.metadata["months_left_out_blocked"].value == "2013-02"
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"no_time_overlap": True}
    assert isinstance(train, pd.DataFrame) and len(train) > 0
    # model_datasets judges the months with one cache of the runs' check evaluations (a range run holds
    # every month's): the same verdicts as judging each month on its own
    from homeprice_assets.ingest.status import blocking_check_keys, month_status

    keys, runs = blocking_check_keys(None), {}
    shared = [month_status(instance, m, keys, runs) for m in months]
    assert shared == [month_status(instance, m, keys) for m in months]
    assert [s.state for s in shared] == ["ready", "blocked", "ready", "ready", "ready", "ready"]
    assert len(runs) == 2  # the range run and the re-run of 2013-02, each read once
