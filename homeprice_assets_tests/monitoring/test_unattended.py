"""Unattended operation against a real instance and real runs: no re-ingest storm, no drift report per
historical month, alerts on evaluated checks only (each once), and a price-level jump held for a person.

Ingest runs are executed in-process as ``homeprice run`` / ``homeprice ingest`` do (one run per month,
tagged with the landed files' digest); sensors are ticked with Dagster's sensor context.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from homeprice_assets import cli
from homeprice_assets.config import project_config
from homeprice_assets.ingest.landing import land_history, split_by_month
from homeprice_assets.ingest.report import MonthOutcome, ingest_months
from homeprice_assets.ingest.status import accept_month, blocking_check_keys, month_status
from homeprice_assets.monitoring.notify import Notifier
from homeprice_assets.monitoring.settings import AutomationSettings
from homeprice_assets.partitions import register_months
from homeprice_assets.resources.landing import LANDED_DIGEST_TAG, month_digest

from .conftest import Location, WebhookReceiver, apply, build_location

MONTHS = ["2016-01", "2016-02", "2016-03", "2016-04"]
DATASETS = [dg.AssetKey("training_set"), dg.AssetKey("validation_set")]


@pytest.fixture
def location(instance: dg.DagsterInstance, tmp_path: Path, notifier: Notifier) -> Location:
    return build_location(
        instance,
        tmp_path / "home",
        notifier,
        AutomationSettings(retrain_policy="drift"),
        {"training": {"validation_months": 1}},
    )


def cli_ingest(location: Location, month: str) -> dg.ExecuteInProcessResult:
    """One month ingested in-process the way the ``homeprice`` command does it (digest tag, no run key)."""
    register_months(location.instance, [month])
    digest = month_digest(location.landing.list_files(), month)
    return location.defs.resolve_job_def("ingest_job").execute_in_process(
        instance=location.instance,
        partition_key=month,
        tags={LANDED_DIGEST_TAG: digest},
        raise_on_error=False,
    )


def _land(location: Location, month: str, frame: pd.DataFrame) -> None:
    location.landing.write_bytes(f"sales_{month}.csv", frame.to_csv(index=False).encode())


def _datasets(location: Location) -> dg.ExecuteInProcessResult:
    """``training_set`` / ``validation_set`` (no model fit): what a lifecycle run would train on."""
    result = location.defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=location.instance, asset_selection=DATASETS, raise_on_error=False
    )
    assert result.success
    return result


def _left_out(location: Location) -> str:
    mat = location.instance.get_latest_materialization_event(dg.AssetKey("training_set"))
    return str(mat.asset_materialization.metadata["months_left_out_blocked"].value)


@pytest.mark.slow
def test_no_reingest_storm_and_no_drift_per_historical_month(location: Location) -> None:
    land_history(location.landing, project_config().data, since=MONTHS[0], until=MONTHS[-1])
    assert all(cli_ingest(location, m).success for m in MONTHS)

    # Before any lifecycle run: a first retrain tick asks for one drift report, of the newest month only.
    [only] = location.tick("retrain_sensor", None).run_requests
    assert only.tags["homeprice/month"] == MONTHS[-1]
    # After a lifecycle run used these months, a first tick (fresh `homeprice dev`) requests nothing.
    _datasets(location)
    retrain = location.tick("retrain_sensor", None)
    assert retrain.run_requests == [], [r.tags for r in retrain.run_requests]

    # The landing sensor's first tick (empty cursor) knows what the command ingested: nothing is requested.
    first = location.tick("landing_sensor", None)
    assert first.run_requests == []
    assert "4 month(s) with new files were already ingested" in first.skip_message
    assert set(json.loads(first.cursor)["files"]) == {f"sales_{m}.csv" for m in MONTHS}

    # A new file requests exactly its month, once.
    land_history(location.landing, project_config().data, since="2016-05", until="2016-05")
    second = location.tick("landing_sensor", first.cursor)
    apply(location, second)
    [request] = second.run_requests
    assert request.partition_key == "2016-05" and request.tags[LANDED_DIGEST_TAG]
    assert location.execute(request).success
    assert location.tick("landing_sensor", second.cursor).run_requests == []
    # Even a daemon that lost its cursor finds nothing to do: every month's files were ingested.
    assert location.tick("landing_sensor", None).run_requests == []

    # The retrain sensor sees exactly the new month.
    [drift] = location.tick("retrain_sensor", retrain.cursor).run_requests
    assert (
        drift.asset_selection == [dg.AssetKey("drift_report")] and drift.tags["homeprice/month"] == "2016-05"
    )


@pytest.mark.slow
def test_price_level_jump_is_held_until_a_person_accepts_it(
    location: Location,
    bundled_sales: pd.DataFrame,
    webhook: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = project_config().data
    by_month = split_by_month(bundled_sales, config)
    for month in MONTHS:
        _land(location, month, by_month[month])
        assert cli_ingest(location, month).success
    jumped = by_month["2016-05"].copy()
    price = config.source_name("sale_price")
    jumped[price] = (pd.to_numeric(jumped[price]) * 1.5).round().astype(int).astype(str)
    _land(location, "2016-05", jumped)
    result = cli_ingest(location, "2016-05")
    [level] = [e for e in result.get_asset_check_evaluations() if e.check_name == "price_level"]
    assert not level.passed and level.severity == dg.AssetCheckSeverity.ERROR
    assert 0.45 < level.metadata["change"].value < 0.55 and level.metadata["max_change"].value == 0.2
    assert "homeprice accept-month 2016-05" in str(level.description)
    # Ordinary months passed it (or had too little history to be judged).
    checks = blocking_check_keys(location.defs.get_repository_def())
    assert month_status(location.instance, "2016-04", checks).state == "ready"
    status = month_status(location.instance, "2016-05", checks)
    assert status.state == "blocked" and status.failed == ("sale_features.price_level",)

    # People are asked to confirm, once.
    alerts = location.tick("check_alert_sensor", None)
    [text] = [t for t in webhook.texts() if "price_level" in t or "Price level" in t]
    assert "Price level of 2016-05 jumped +5" in text and "homeprice accept-month 2016-05" in text
    location.tick("check_alert_sensor", alerts.cursor)
    assert len([t for t in webhook.texts() if "Price level" in t]) == 1

    def reported() -> MonthOutcome:
        """What `homeprice ingest` says of the month now (its files unchanged: from the stored run)."""
        job, data = (
            location.defs.resolve_job_def("ingest_job"),
            location.defs.resources["settings"].get().data,
        )
        [outcome] = ingest_months(
            job, location.instance, location.landing, ["2016-05"], {}, data
        ).months.values()
        return outcome

    assert reported().state == "failed_before"

    # Held back: no drift report of it, and the training set leaves it out.
    retrain = location.tick("retrain_sensor", None)
    assert all(r.tags["homeprice/month"] != "2016-05" for r in retrain.run_requests)
    _datasets(location)
    assert "2016-05" in _left_out(location)

    # Nothing to accept in an ordinary month; a malformed month is refused naming the field.
    with pytest.raises(ValueError, match="nothing to accept"):
        accept_month(location.instance, "2016-04")
    # A person confirms it with the command, against this very instance.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    assert cli.main(["accept-month", "2016-05", "--note", "checked with the county"]) == 0
    assert cli.main(["accept-month", "2016-5"]) == 2
    status = month_status(location.instance, "2016-05", checks)
    assert status.state == "ready" and status.accepted == ("sale_features.price_level",)
    # `homeprice ingest` reported it failed even after the acceptance
    outcome = reported()
    assert outcome.state == "accepted" and not outcome.failed and outcome.reasons == ()
    assert outcome.warnings[-1].startswith("accepted: sale_features.price_level: ")
    # The sensor takes it up at its next tick, and the model may now train on it.
    [drift] = location.tick("retrain_sensor", retrain.cursor).run_requests
    assert drift.tags["homeprice/month"] == "2016-05"
    _datasets(location)
    assert _left_out(location) == "none"

    # Corrected files for the month are checked afresh (the acceptance named the run it overruled).
    _land(location, "2016-05", by_month["2016-05"])
    assert cli_ingest(location, "2016-05").success
    status = month_status(location.instance, "2016-05", checks)
    assert status.state == "ready" and status.accepted == ()


# ------------------------------------------------------------------------------------------- planned checks
GATE = threading.Event()


@dg.asset(
    partitions_def=dg.StaticPartitionsDefinition(["early", "late"]),
    check_specs=[
        dg.AssetCheckSpec("slow_check", asset="slow_checked", description="evaluated when the gate opens")
    ],
)
def slow_checked(context) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Stands for any asset whose check is evaluated long after its run started (drift, promotion)."""
    if context.partition_key == "early":
        assert GATE.wait(120), "the test never opened the gate"
    yield dg.Output(1)
    yield dg.AssetCheckResult(
        check_name="slow_check",
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"failed_rows": 3, "rows": 10},
    )


def test_check_alerts_wait_for_planned_checks_and_alert_each_failure_once(
    instance: dg.DagsterInstance, tmp_path: Path, notifier: Notifier, webhook: WebhookReceiver
) -> None:
    location = build_location(instance, tmp_path / "home", notifier, AutomationSettings())
    defs = dg.Definitions.merge(location.defs, dg.Definitions(assets=[slow_checked]))
    location = Location(defs, instance, location.landing, location.home)
    key = dg.AssetCheckKey(dg.AssetKey("slow_checked"), "slow_check")
    GATE.clear()

    def run(partition: str) -> None:
        with dg.DagsterInstance.from_ref(instance.get_ref()) as own:
            dg.materialize([slow_checked], instance=own, partition_key=partition, raise_on_error=False)

    early = threading.Thread(target=run, args=("early",), daemon=True)
    early.start()
    try:
        deadline = time.monotonic() + 60
        while not (history := instance.event_log_storage.get_asset_check_execution_history(key, 5)):
            assert time.monotonic() < deadline, "the early run never planned its check"
            time.sleep(0.05)
        [planned] = history
        assert planned.status.value == "PLANNED"
        # The sensor ticks while the early check is only planned, and a later run's check fails meanwhile.
        run("late")
        first = location.tick("check_alert_sensor", None)
        assert "1 failed check(s) alerted" in first.skip_message
        assert "waiting for planned check(s) ['slow_checked:slow_check']" in first.skip_message
        assert len(webhook.posts) == 1 and "slow_checked[late]" in webhook.texts()[0]
        state = json.loads(first.cursor)
        # The cursor did not move past the planned check; the late one is remembered as handled.
        assert state["after"]["slow_checked:slow_check"] < planned.id
        assert state["done"]["slow_checked:slow_check"]
        # Nothing new: nothing sent, still waiting.
        again = location.tick("check_alert_sensor", first.cursor)
        assert "0 failed check(s)" in again.skip_message and len(webhook.posts) == 1
    finally:
        GATE.set()  # the early check is evaluated now, after the ticks that saw it planned
        early.join(timeout=120)
    third = location.tick("check_alert_sensor", again.cursor)
    assert "1 failed check(s) alerted" in third.skip_message and "waiting" not in third.skip_message
    assert len(webhook.posts) == 2 and "slow_checked[early]" in webhook.texts()[1]
    state = json.loads(third.cursor)
    assert (
        state["after"]["slow_checked:slow_check"] >= planned.id
        and "slow_checked:slow_check" not in state["done"]
    )
    # Each failure exactly once.
    assert "0 failed check(s)" in location.tick("check_alert_sensor", third.cursor).skip_message
    assert len(webhook.posts) == 2
