"""The ingest assets on real months of the bundled data, materialized in-process."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from homeprice_assets.config import load_config
from homeprice_assets.ingest.landing import land_history
from homeprice_assets.ingest.report import outcome_of
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets_tests.helpers import check_results, ingest_month

CONFIG = load_config().data


def _month_rows(sales: pd.DataFrame, month: str) -> pd.DataFrame:
    return sales[sales["sale_date"].str.startswith(month)].reset_index(drop=True)


def test_real_months_flow_to_features(instance, landing, storage, bundled_sales) -> None:
    months = land_history(landing, CONFIG, since="2014-01", until="2014-03")
    assert months == ["2014-01", "2014-02", "2014-03"]
    for month in months:
        result = ingest_month(month, instance, landing, storage)
        assert result.success, month
        raw = result.output_for_node("raw_sales")
        clean = result.output_for_node("clean_sales", "clean_sales")
        feats = result.output_for_node("sale_features")
        expected = _month_rows(bundled_sales, month)
        assert len(raw) == len(clean) == len(feats) == len(expected)
        assert set(clean["sale_id"]) == set(expected["sale_id"])
        assert raw["_source_file"].unique().tolist() == [f"sales_{month}.csv"]
        checks = check_results(result)
        failed = {k: c.description for k, c in checks.items() if not c.passed}
        # back-filled history is not late: freshness is judged on the newest landed month only
        assert not failed, failed
        assert checks["freshness"].metadata["back_filled"].value == (month != "2014-03")
        assert checks["row_count"].metadata["rows"].value == len(expected)
    # the row-count check compared March against the two months before it
    assert checks["row_count"].metadata["recent_months"].value == 2
    assert set(instance.get_materialized_partitions(dg.AssetKey("sale_features"))) == set(months)


def test_rematerializing_is_idempotent(instance, landing, storage, project_home: Path) -> None:
    land_history(landing, CONFIG, since="2013-05", until="2013-05")
    first = ingest_month("2013-05", instance, landing, storage)
    first_raw = first.output_for_node("raw_sales")
    # the same month landed again under another name, and an overlapping extract: nothing new
    data = (project_home / "landing" / "sales_2013-05.csv").read_bytes()
    (project_home / "landing" / "2013-05").mkdir()
    (project_home / "landing" / "2013-05" / "copy.csv").write_bytes(data)
    second = ingest_month("2013-05", instance, landing, storage)
    assert second.success
    second_raw = second.output_for_node("raw_sales")
    assert len(second_raw) == len(first_raw)
    versions = [
        e.event_specific_data.materialization.tags["dagster/data_version"]
        for r in (first, second)
        for e in r.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("raw_sales")
    ]
    assert versions[0] == versions[1]
    pd.testing.assert_frame_equal(
        first.output_for_node("clean_sales", "clean_sales").drop(columns=["_source_file"]),
        second.output_for_node("clean_sales", "clean_sales").drop(columns=["_source_file"]),
    )
    meta = next(
        e.materialization.metadata
        for e in second.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("raw_sales")
    )
    assert meta["repeated_rows_left_out"].value == len(first_raw)


def test_bad_rows_are_quarantined_and_block_features(instance, landing, storage, bundled_sales) -> None:
    rows = _month_rows(bundled_sales, "2012-03")
    bad = rows.copy()
    bad.loc[0:29, "sale_price"] = "-1"  # 30 negative prices: far past the 5% quarantine limit
    bad.loc[30:34, "latitude"] = "0"
    landing.write_bytes("sales_2012-03.csv", bad.to_csv(index=False).encode())
    result = ingest_month("2012-03", instance, landing, storage)
    assert not result.success  # the blocking check stopped the run
    quarantine = result.output_for_node("clean_sales", "quarantined_sales")
    clean = result.output_for_node("clean_sales", "clean_sales")
    assert quarantine["rule"].value_counts().to_dict() == {
        "nonpositive_price": 30,
        "implausible_coordinates": 5,
    }
    assert set(quarantine["sale_id"]) == set(rows.loc[0:34, "sale_id"])
    assert set(clean["sale_id"]) == set(rows.loc[35:, "sale_id"])
    checks = check_results(result)
    rate = checks["quarantine_rate"]
    assert not rate.passed and rate.blocking
    assert rate.metadata["rule_nonpositive_price"].value == 30
    assert "nonpositive_price: 30" in rate.description
    # what the CLI prints for this month: the failed blocking check with its rule counts, no traceback
    outcome = outcome_of("2012-03", result)
    assert outcome.failed
    [reason] = outcome.reasons
    assert reason.startswith("clean_sales.quarantine_rate: 35 of ")
    assert "nonpositive_price: 30, implausible_coordinates: 5" in reason
    assert outcome.lines()[0].startswith(f"  2012-03  FAILED: {len(rows) - 35} clean, 35 quarantined")
    # nothing downstream of the failed blocking check was materialized
    assert not instance.get_materialized_partitions(dg.AssetKey("sale_features"))
    assert "2012-03" in instance.get_materialized_partitions(dg.AssetKey("quarantined_sales"))


def test_missing_required_column_fails_with_its_name(instance, landing, storage, bundled_sales) -> None:
    rows = _month_rows(bundled_sales, "2012-04").drop(columns=["tot_sf"])
    landing.write_bytes("sales_2012-04.csv", rows.to_csv(index=False).encode())
    result = ingest_month("2012-04", instance, landing, storage)
    assert not result.success
    check = check_results(result)["required_columns"]
    assert not check.passed
    assert "living_sf (source column 'tot_sf')" in check.metadata["missing"].value
    assert "sales_2012-04.csv: missing required column(s): 'living_sf'" in check.description
    assert not instance.get_materialized_partitions(dg.AssetKey("clean_sales"))


def test_user_columns_through_config_alone(instance, landing, storage, bundled_sales, tmp_path: Path) -> None:
    renames = {
        "sale_price": "PRICE",
        "sale_date": "DocumentDate",
        "tot_sf": "SqFtTotLiving",
        "area": "Neighborhood",
        "latitude": "Lat",
        "longitude": "Long",
        "sale_id": "ExciseTaxNbr",
    }
    rows = _month_rows(bundled_sales, "2015-07")
    theirs = rows.rename(columns=renames)
    theirs["DocumentDate"] = pd.to_datetime(theirs["DocumentDate"]).dt.strftime("%m/%d/%Y")
    landing.write_bytes("2015-07/export.csv", theirs.to_csv(index=False).encode())
    user_config = tmp_path / "homeprice.yaml"
    user_config.write_text(
        "data:\n  date_format: '%m/%d/%Y'\n  columns:\n"
        "    sale_price: PRICE\n    sale_date: DocumentDate\n    living_sf: SqFtTotLiving\n"
        "    location: Neighborhood\n    latitude: Lat\n    longitude: Long\n    sale_id: ExciseTaxNbr\n"
    )
    result = ingest_month("2015-07", instance, landing, storage, ProjectConfigResource(path=str(user_config)))
    assert result.success
    clean = result.output_for_node("clean_sales", "clean_sales")
    assert len(clean) == len(rows)
    assert clean["sale_price"].sum() == pytest.approx(rows["sale_price"].astype(float).sum())
    assert set(clean["location"]) == set(rows["area"])


def test_unknown_config_column_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  columns:\n    price: PRICE\n")
    with pytest.raises(
        ValueError, match=r"  data.columns: unknown canonical column\(s\) \['price'\]; expected"
    ) as err:
        load_config(bad)
    assert "Value error" not in str(err.value) and "(got" not in str(err.value)  # said once, no echo
