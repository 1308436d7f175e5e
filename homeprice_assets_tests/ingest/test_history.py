"""Many months' latest materializations read at once: the same records as asking month by month."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from homeprice_assets.ingest.history import latest_records, prior_months, window
from homeprice_assets.partitions import register_months

KEY = dg.AssetKey("sale_features")
LEVEL = "median_price_per_sf"


def _report(instance: dg.DagsterInstance, month: str, level: float) -> None:
    event = dg.AssetMaterialization(KEY, partition=month, metadata={LEVEL: level})
    instance.report_runless_asset_event(event)


def _newest_one_by_one(instance: dg.DagsterInstance, month: str, usable: Callable[..., bool]) -> float | None:
    """What asking for one month's history, newest first, finds."""
    for record in instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=KEY, asset_partitions=[month]), limit=30
    ).records:
        if usable(record.asset_materialization):
            return record.asset_materialization.metadata[LEVEL].value
    return None


def test_latest_records_match_month_by_month_reads(instance: dg.DagsterInstance) -> None:
    months = ["2014-01", "2014-02", "2014-03", "2014-04"]
    register_months(instance, months)
    _report(instance, "2014-01", 100.0)
    _report(instance, "2014-01", 110.0)  # re-ingested: the newer one counts
    _report(instance, "2014-02", 200.0)
    _report(instance, "2014-02", -1.0)  # no sales this time: the newest usable one counts
    _report(instance, "2014-03", -1.0)  # never usable
    # 2014-04: never materialized

    def usable(mat: dg.AssetMaterialization) -> bool:
        return mat.metadata[LEVEL].value > 0

    found = latest_records(instance, KEY, months, usable)
    levels = {m: r.asset_materialization.metadata[LEVEL].value for m, r in found.items()}
    assert levels == {"2014-01": 110.0, "2014-02": 200.0}
    assert levels == {m: v for m in months if (v := _newest_one_by_one(instance, m, usable)) is not None}
    newest = latest_records(instance, KEY, months)
    assert {m: r.asset_materialization.metadata[LEVEL].value for m, r in newest.items()} == {
        "2014-01": 110.0,
        "2014-02": -1.0,
        "2014-03": -1.0,
    }
    assert latest_records(instance, KEY, []) == {}  # none asked: none read (not every partition)


def test_prior_months_and_window_are_the_lookback_of_each_month() -> None:
    known = ["2014-03", "2014-01", "2014-02", "2014-05", "2014-04"]
    assert prior_months(known, ["2014-04", "2014-05"], 2) == {"2014-02", "2014-03", "2014-04"}
    assert prior_months(known, ["2014-01"], 3) == set()
    values = {"2014-01": 1.0, "2014-03": 3.0, "2014-04": 4.0}
    assert window(values, known, "2014-05", 3) == {"2014-03": 3.0, "2014-04": 4.0}
    assert window(values, known, "2014-01", 3) == {}
