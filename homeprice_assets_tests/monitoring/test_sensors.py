"""Sensors evaluated with Dagster's test context on real landed files and real materializations."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from homeprice_assets.config import project_config
from homeprice_assets.ingest.landing import land_history, split_by_month
from homeprice_assets.monitoring.notify import Notifier
from homeprice_assets.monitoring.sensors import failed_rows_of
from homeprice_assets.monitoring.settings import AutomationSettings

from .conftest import Location, SmtpReceiver, WebhookReceiver, apply, build_location


@pytest.fixture
def location(instance: dg.DagsterInstance, tmp_path: Path, notifier: Notifier) -> Location:
    return build_location(instance, tmp_path / "home", notifier, AutomationSettings(retrain_policy="drift"))


def test_landing_sensor_requests_each_new_or_changed_month_once(location: Location) -> None:
    months = land_history(location.landing, project_config().data, since="2014-05", until="2014-06")
    assert months == ["2014-05", "2014-06"]

    first = location.tick("landing_sensor", None)
    assert [r.partition_key for r in first.run_requests] == ["2014-05", "2014-06"]
    assert all(r.job_name in (None, "ingest_job") for r in first.run_requests)
    assert all(r.tags["homeprice/trigger"] == "landing" for r in first.run_requests)
    [add] = first.dynamic_partitions_requests
    assert add.partitions_def_name == "sale_month" and list(add.partition_keys) == ["2014-05", "2014-06"]
    cursor = json.loads(first.cursor)["files"]
    assert set(cursor) == {"sales_2014-05.csv", "sales_2014-06.csv"}
    apply(location, first)

    second = location.tick("landing_sensor", first.cursor)
    assert second.run_requests == [] and second.cursor == first.cursor
    assert "no new files" in second.skip_message

    # A changed file is requested again (new run key); a new month comes with its partition.
    path = location.home / "landing" / "sales_2014-06.csv"
    path.write_text(path.read_text() + path.read_text().splitlines()[1] + "\n")
    location.landing.write_bytes("incoming/2014-07/extra.csv", b"sale_id,sale_price\n1,100\n")
    third = location.tick("landing_sensor", second.cursor)
    assert [r.partition_key for r in third.run_requests] == ["2014-06", "2014-07"]
    old_key = next(r.run_key for r in first.run_requests if r.partition_key == "2014-06")
    assert third.run_requests[0].run_key != old_key
    assert [list(r.partition_keys) for r in third.dynamic_partitions_requests] == [["2014-07"]]
    assert location.tick("landing_sensor", third.cursor).run_requests == []


def test_landing_sensor_is_restart_safe(location: Location) -> None:
    land_history(location.landing, project_config().data, since="2015-01", until="2015-03")
    first = location.tick("landing_sensor", None)
    # A daemon restarted with its stored cursor requests nothing new ...
    assert location.tick("landing_sensor", first.cursor).run_requests == []
    # ... and one that lost its cursor asks again under the same run keys, which Dagster drops as duplicates.
    again = location.tick("landing_sensor", None)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in first.run_requests]
    assert len(first.run_requests) == 3


def _land_month(location: Location, month: str, frame: pd.DataFrame) -> None:
    location.landing.write_bytes(f"sales_{month}.csv", frame.to_csv(index=False).encode())


def _ingest_via_sensor(location: Location, cursor: str | None) -> tuple[str, list[dg.ExecuteInProcessResult]]:
    data = location.tick("landing_sensor", cursor)
    apply(location, data)
    return data.cursor, [location.execute(r) for r in data.run_requests]


@pytest.mark.slow
def test_retrain_sensor_waits_for_blocking_checks_and_failed_checks_alert(
    location: Location, bundled_sales: pd.DataFrame, webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    by_month = split_by_month(bundled_sales, project_config().data)
    for month in ("2014-04", "2014-05"):
        _land_month(location, month, by_month[month])
    cursor, results = _ingest_via_sensor(location, None)
    assert all(r.success for r in results)

    tick = location.tick("retrain_sensor", None)
    # Policy "drift": the newest ready month gets a drift report; nothing is retrained on new data alone.
    [request] = tick.run_requests
    assert request.asset_selection == [dg.AssetKey("drift_report")]
    assert request.tags["homeprice/month"] == "2014-05"
    assert location.tick("retrain_sensor", tick.cursor).run_requests == []
    # A lost cursor re-asks under the same run key, which Dagster drops: restarts neither lose nor repeat.
    assert [r.run_key for r in location.tick("retrain_sensor", None).run_requests] == [request.run_key]

    # A month with 10% negative prices: quarantine_rate (blocking) fails and holds it back.
    bad = by_month["2014-06"].copy()
    bad.loc[bad.index[: len(bad) // 10], "sale_price"] = "-5"
    _land_month(location, "2014-06", bad)
    cursor, [result] = _ingest_via_sensor(location, cursor)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["quarantine_rate"].passed
    held = location.tick("retrain_sensor", tick.cursor)
    assert held.run_requests == [] and json.loads(held.cursor)["pending"] == []

    alerts = location.tick("check_alert_sensor", None)
    assert "1 failed check(s) alerted" in alerts.skip_message
    [text] = webhook.texts()
    n_bad = len(bad) // 10
    assert "quarantine_rate" in text and "clean_sales[2014-06]" in text
    assert f"{n_bad} of {len(bad)} rows" in text and f"nonpositive_price: {n_bad}" in text
    assert f"/runs/{result.run_id}" in text
    assert "quarantine_rate" in smtp.messages[0]["Subject"]
    # Evaluated again: the cursor has moved past it, nothing is re-sent.
    assert "0 failed check(s)" in location.tick("check_alert_sensor", alerts.cursor).skip_message
    assert len(webhook.posts) == 1

    # Fixed data for the month lands: the month becomes ready and is measured.
    _land_month(location, "2014-06", by_month["2014-06"])
    cursor, [fixed] = _ingest_via_sensor(location, cursor)
    assert fixed.success
    [drift_request] = location.tick("retrain_sensor", held.cursor).run_requests
    assert drift_request.tags["homeprice/month"] == "2014-06"


def test_run_failure_sensor_alerts(location: Location, webhook: WebhookReceiver, smtp: SmtpReceiver) -> None:
    location.instance.add_dynamic_partitions("sale_month", ["2013-03"])  # no files landed for it
    result = location.defs.resolve_job_def("ingest_job").execute_in_process(
        instance=location.instance, partition_key="2013-03", raise_on_error=False
    )
    assert not result.success
    sensor = location.sensor("run_failure_alert_sensor")
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_instance=location.instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"notifier": location.defs.resources["notifier"]},
    ).for_run_failure()
    sensor(context)
    [text] = webhook.texts()
    assert "Run failed: ingest_job" in text and "partition 2013-03" in text
    assert "Failed steps: ingest_sales" in text and "no sales files for 2013-03" in text
    assert f"http://dagster.test:3000/runs/{result.run_id}" in text
    assert smtp.messages[0]["Subject"].strip() == "[homeprice] Run failed: ingest_job"


def test_failed_rows_read_from_check_metadata() -> None:
    assert failed_rows_of({"quarantined_rows": 7, "raw_rows": 70}) == (7, 70)
    assert failed_rows_of({"nonpositive_price": 2, "implausible_coordinates": 3, "min_price": 1.0}) == (
        5,
        None,
    )
    assert failed_rows_of({"problems": "x"}) == (None, None)


def test_monitoring_definitions_merge_into_the_code_location() -> None:
    from homeprice_assets import definitions as top

    dg.Definitions.validate_loadable(top.defs)
    repo = top.defs.get_repository_def()
    assert {s.name for s in repo.sensor_defs} >= {
        "landing_sensor",
        "retrain_sensor",
        "run_failure_alert_sensor",
        "check_alert_sensor",
        "promotion_alert_sensor",
    }
    assert (
        dg.AssetCheckKey(dg.AssetKey("drift_report"), "drift_within_threshold")
        in repo.asset_graph.asset_check_keys
    )


def test_landing_sensor_names_what_it_sets_aside_once(location: Location) -> None:
    """A file that belongs to no month is never ignored silently: the sensor logs it once, by its reason."""
    land_history(location.landing, project_config().data, since="2014-05", until="2014-05")
    location.landing.write_bytes("README.txt", b"exports from the county, monthly\n")
    first = location.tick("landing_sensor", None)
    assert [r.partition_key for r in first.run_requests] == ["2014-05"]
    told = json.loads(first.cursor)["set_aside"]
    assert list(told) == ["README.txt"] and "not a sales file" in told["README.txt"]
    again = location.tick("landing_sensor", first.cursor)
    assert json.loads(again.cursor)["set_aside"] == told  # remembered: not logged again
