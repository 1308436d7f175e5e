"""Many months in one run: the same partitions, data versions, metadata and checks as one run per month.

Five real months, of which 2013-03 breaks the quarantine rate (blocking, on ``clean_sales``) and 2013-04
lacks a required column (blocking, on ``raw_sales``); 2013-05 is fine after them. Ingested month by month
on one instance and as one range run on another, both must record exactly the same thing per month, and
the bad months alone are held back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from homeprice_assets.config import load_config
from homeprice_assets.ingest.assets import ALL_CHECKS, ingest_sales
from homeprice_assets.ingest.jobs import ingest_job
from homeprice_assets.ingest.report import (
    OUTCOMES_TAG,
    MonthWatcher,
    RunEvents,
    _outcome_from_events,
    ingest_months,
    outcome_of,
    tagged_outcomes,
)
from homeprice_assets.ingest.status import blocking_check_keys, month_status
from homeprice_assets.monitoring.sensors.landing import build_landing_sensor
from homeprice_assets.partitions import register_months
from homeprice_assets.resources.config import ProjectConfigResource
from homeprice_assets.resources.landing import LocalLandingZone, month_digest
from homeprice_assets.resources.storage import ParquetStorage
from homeprice_assets.sqlite_storage import instance_settings
from homeprice_assets_tests.helpers import ingest_month, ingest_range

MONTHS = ["2013-01", "2013-02", "2013-03", "2013-04", "2013-05"]
ASSETS = ["raw_sales", "clean_sales", "quarantined_sales", "sale_features"]
# where each home keeps things: the same relative to its own root
ROOTED = ("path", "landing_zone")


def _land(root: Path, bundled_sales: pd.DataFrame) -> LocalLandingZone:
    zone = LocalLandingZone(root=str(root / "landing"))
    for month in MONTHS:
        rows = bundled_sales[bundled_sales["sale_date"].str.startswith(month)].reset_index(drop=True)
        if month == "2013-03":
            rows.loc[0:29, "sale_price"] = "-1"  # 30 negative prices: past the 5% quarantine limit
        if month == "2013-04":
            rows = rows.drop(columns=["tot_sf"])  # living_sf's source column
        zone.write_bytes(f"sales_{month}.csv", rows.to_csv(index=False).encode())
    return zone


def _value(value: Any, root: Path) -> Any:
    value = getattr(value, "value", value)
    return value.replace(str(root), "<home>") if isinstance(value, str) else value


def _record(instance: dg.DagsterInstance, root: Path) -> dict[str, Any]:
    """Per asset and month: data version and metadata of the latest materialization; per check and month:
    passed, partition and metadata of its latest evaluation."""
    out: dict[str, Any] = {}
    for asset in ASSETS:
        key = dg.AssetKey(asset)
        out[f"{asset} partitions"] = sorted(instance.get_materialized_partitions(key))
        for month in MONTHS:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[month]), limit=1
            ).records
            if records:
                mat = records[0].asset_materialization
                out[f"{asset} {month} version"] = mat.tags["dagster/data_version"]
                out[f"{asset} {month} metadata"] = {k: _value(v, root) for k, v in mat.metadata.items()}
    for spec in ALL_CHECKS:
        for record in instance.event_log_storage.get_asset_check_execution_history(spec.key, limit=50):
            evaluation = record.event.dagster_event.event_specific_data if record.event else None
            name = f"{spec.asset_key.to_user_string()}.{spec.name} {record.partition}"
            if not isinstance(evaluation, dg.AssetCheckEvaluation) or name in out:
                continue  # planned only (its month was held back); newest first: the latest of each month
            out[name] = (
                evaluation.passed,
                evaluation.partition,
                {k: _value(v, root) for k, v in evaluation.metadata.items()},
            )
    return out


@pytest.mark.slow
def test_a_range_run_records_what_month_by_month_runs_do(tmp_path: Path, bundled_sales: pd.DataFrame) -> None:
    homes = {way: tmp_path / way for way in ("by_month", "range")}
    recorded, results = {}, {}
    for way, root in homes.items():
        zone = _land(root, bundled_sales)
        (root / "dagster").mkdir()
        storage = ParquetStorage(base_dir=str(root / "storage"))
        # the range run on the repository's storage (its step reads back what it stored from the storage's
        # memory), the months on Dagster's own: both must record the same
        overrides = instance_settings(root / "dagster" / "storage") if way == "range" else None
        with dg.instance_for_test(temp_dir=str(root / "dagster"), overrides=overrides) as instance:
            if way == "by_month":
                for month in MONTHS:
                    ingest_month(month, instance, zone, storage)
            else:
                results[way] = ingest_range(MONTHS, instance, zone, storage)
            recorded[way] = _record(instance, root)
            runs = instance.get_runs()
            assert len(runs) == (len(MONTHS) if way == "by_month" else 1), way
            if way == "range":
                checks = blocking_check_keys(None)
                states = {m: month_status(instance, m, checks).state for m in MONTHS}
                assert states == {
                    "2013-01": "ready",
                    "2013-02": "ready",
                    "2013-03": "blocked",
                    "2013-04": "blocked",
                    "2013-05": "ready",
                }
                assert month_status(instance, "2013-03", checks).failed == ("clean_sales.quarantine_rate",)
                # `homeprice ingest` advances its bar per month from the run's own log lines, in order
                seen: list[str] = []
                with MonthWatcher(instance, results[way].result.run_id, MONTHS, seen.append) as watcher:
                    watcher.poll()
                    assert seen == MONTHS
                assert seen == MONTHS  # none reported twice on the way out

    by_month, ranged = recorded["by_month"], recorded["range"]
    assert sorted(by_month) == sorted(ranged)
    for name in sorted(by_month):
        assert ranged[name] == by_month[name], name
    # the bad months alone are held back: nothing downstream of their failed blocking check
    assert by_month["raw_sales partitions"] == MONTHS
    assert by_month["clean_sales partitions"] == ["2013-01", "2013-02", "2013-03", "2013-05"]
    assert by_month["sale_features partitions"] == ["2013-01", "2013-02", "2013-05"]
    assert by_month["clean_sales.quarantine_rate 2013-03"][:2] == (False, "2013-03")
    assert by_month["raw_sales.required_columns 2013-04"][:2] == (False, "2013-04")
    assert "clean_sales.schema 2013-04" not in by_month  # never evaluated: its month was held back
    assert by_month["sale_features.price_level 2013-05"][:2] == (True, "2013-05")
    # 2013-05 was judged against the months that got through before it
    assert by_month["clean_sales.row_count 2013-05"][2]["recent_months"] == 3

    # what `homeprice ingest` says of each month of the range run
    result = results["range"]
    assert not result.success  # a blocking check failed: the run says so, as each month's run did
    outcomes = {m: outcome_of(m, result.result) for m in MONTHS}
    assert [m for m, o in outcomes.items() if o.failed] == ["2013-03", "2013-04"]
    [quarantine] = outcomes["2013-03"].reasons
    assert quarantine.startswith("clean_sales.quarantine_rate: 30 of ")
    [missing] = outcomes["2013-04"].reasons
    assert missing.startswith("raw_sales.required_columns:") and "'tot_sf'" in missing
    assert outcomes["2013-05"].state == "ran" and outcomes["2013-05"].summary.endswith("0 quarantined")


@pytest.mark.slow
def test_a_range_run_after_earlier_runs_compares_with_their_months(
    tmp_path: Path, bundled_sales: pd.DataFrame
) -> None:
    """A range run reads the row counts and price levels of the months before it once, at its start: months
    ingested by earlier runs (and the bad ones among them, held back there) count as month-by-month runs
    would count them."""
    homes = {way: tmp_path / way for way in ("by_month", "range")}
    recorded = {}
    for way, root in homes.items():
        zone = _land(root, bundled_sales)
        (root / "dagster").mkdir()
        storage = ParquetStorage(base_dir=str(root / "storage"))
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            for block in (MONTHS[:2], MONTHS[2:4], MONTHS[4:], MONTHS[1:]):  # the last: all again
                if way == "by_month":
                    for month in block:
                        ingest_month(month, instance, zone, storage)
                else:
                    ingest_range(block, instance, zone, storage)
            recorded[way] = _record(instance, root)
    by_month, ranged = recorded["by_month"], recorded["range"]
    assert sorted(by_month) == sorted(ranged)
    for name in sorted(by_month):
        assert ranged[name] == by_month[name], name
    # 2013-05 was judged on the earlier runs' months: 2013-04 never got clean sales, 2013-03 no features
    assert by_month["clean_sales.row_count 2013-05"][2]["recent_months"] == 3
    assert by_month["sale_features.price_level 2013-05"][2]["months_compared"] == ["2013-01", "2013-02"]


def test_homeprice_ingest_shows_each_month_as_it_is_done(
    instance: dg.DagsterInstance, landing: LocalLandingZone, storage: ParquetStorage, bundled_sales
) -> None:
    """The progress bar advances per month while the range run goes on (from the events the instance
    stores in this process), once per month, in order: when a month is shown, its features are stored
    and the next month's are not yet."""
    months = ["2014-01", "2014-02", "2014-03"]
    for month in months:
        rows = bundled_sales[bundled_sales["sale_date"].str.startswith(month)]
        landing.write_bytes(f"sales_{month}.csv", rows.to_csv(index=False).encode())
    resources = {"landing": landing, "settings": ProjectConfigResource(), "io_manager": storage}
    defs = dg.Definitions(assets=[ingest_sales], jobs=[ingest_job], resources=resources)
    shown: list[tuple[str, list[str]]] = []
    totals: list[int] = []

    def progress(total: int):
        totals.append(total)
        return lambda month: shown.append(
            (month, sorted(instance.get_materialized_partitions(dg.AssetKey("sale_features"))))
        )

    report = ingest_months(
        defs.resolve_job_def("ingest_job"),
        instance,
        landing,
        None,
        run_config={},
        config=load_config().data,
        progress=progress,
        register=register_months,
    )
    assert [o.state for o in report.months.values()] == ["ran"] * 3
    assert totals == [3]
    assert shown == [(m, months[: i + 1]) for i, m in enumerate(months)]


def test_an_unchanged_month_is_told_from_its_runs_tag_as_from_its_events(
    instance: dg.DagsterInstance, storage: ParquetStorage, tmp_path: Path, bundled_sales
) -> None:
    """A second ``homeprice ingest`` with nothing new reads each month's summary and reasons from the tag
    its run got (one query), and says exactly what the run's stored events say (the path of untagged runs)."""
    landing = _land(tmp_path, bundled_sales)
    resources = {"landing": landing, "settings": ProjectConfigResource(), "io_manager": storage}
    defs = dg.Definitions(assets=[ingest_sales], jobs=[ingest_job], resources=resources)

    def ingest() -> dict[str, Any]:
        job = defs.resolve_job_def("ingest_job")
        config = load_config().data
        return ingest_months(job, instance, landing, None, {}, config, register=register_months).months

    first = ingest()
    assert [m for m, o in first.items() if o.failed] == ["2013-03", "2013-04"]
    [run] = instance.get_runs()
    assert OUTCOMES_TAG in run.tags
    again = ingest()
    assert len(instance.get_runs()) == 1  # nothing ran again
    assert {m: o.state for m, o in again.items()} == {
        m: "failed_before" if m in ("2013-03", "2013-04") else "unchanged" for m in MONTHS
    }
    tagged = tagged_outcomes(instance, {run.run_id})[run.run_id]
    assert tagged == {m: (o.summary, o.reasons) for m, o in again.items()}
    stored = RunEvents(instance).of(run.run_id)
    for month, outcome in again.items():
        assert outcome == _outcome_from_events(month, run.run_id, stored), month
        assert (outcome.summary, outcome.reasons) == (first[month].summary, first[month].reasons), month
    assert again["2013-03"].reasons[0].startswith("clean_sales.quarantine_rate: 30 of ")


def test_landing_sensor_after_a_range_run_asks_per_month(
    instance: dg.DagsterInstance, landing: LocalLandingZone, storage: ParquetStorage, bundled_sales
) -> None:
    """Months ingested together are not asked again; a changed and a new month get one run key each."""
    config = load_config().data
    months = ["2014-01", "2014-02"]
    for month in months:
        rows = bundled_sales[bundled_sales["sale_date"].str.startswith(month)]
        landing.write_bytes(f"sales_{month}.csv", rows.to_csv(index=False).encode())
    assert ingest_range(months, instance, landing, storage).success

    sensor = build_landing_sensor()
    resources = {"landing": landing, "settings": ProjectConfigResource(), "io_manager": storage}
    defs = dg.Definitions(assets=[ingest_sales], jobs=[ingest_job], sensors=[sensor], resources=resources)

    def tick(cursor: str | None) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=instance,
            instance_ref=instance.get_ref(),
            cursor=cursor,
            definitions=defs,
            sensor_name=sensor.name,
            resources=resources,
        )
        return sensor.evaluate_tick(context)

    first = tick(None)  # a first start after `homeprice ingest`: nothing to do
    assert first.run_requests == []
    path = Path(landing.root) / "sales_2014-02.csv"
    path.write_text(path.read_text() + path.read_text().splitlines()[1] + "\n")
    rows = bundled_sales[bundled_sales["sale_date"].str.startswith("2014-03")]
    landing.write_bytes("sales_2014-03.csv", rows.to_csv(index=False).encode())
    second = tick(first.cursor)
    files = landing.list_files(config)
    assert [(r.partition_key, r.run_key) for r in second.run_requests] == [
        (m, f"ingest:{m}:{month_digest(files, m)}") for m in ("2014-02", "2014-03")
    ]
