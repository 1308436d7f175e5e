"""End to end, in-process: months land, sensors drive ingest and drift, drift triggers a retrain, people hear.

The sensors are ticked by hand (as the daemon would tick them) and every run they request is executed
in-process against a real SQLite instance, with real landed files from the bundled data.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest

from homeprice_assets.config import project_config
from homeprice_assets.ingest.landing import split_by_month
from homeprice_assets.monitoring.notify import Notifier
from homeprice_assets.monitoring.settings import AutomationSettings
from homeprice_assets.training.assets import LIFECYCLE_TAG

from .conftest import Location, SmtpReceiver, WebhookReceiver, apply, build_location

REFERENCE = ["2015-12", "2016-01", "2016-02", "2016-03", "2016-04", "2016-05"]
NORMAL, SHIFTED = "2016-06", "2016-07"


# A six-month reference window keeps the test short; configuration goes in through the settings resource.
SMALL_WINDOW = {"monitoring": {"drift": {"reference_months": 6}}}


class Driver:
    """Ticks sensors with their stored cursors and runs what they request: a daemon in miniature."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.cursors: dict[str, str | None] = {}
        self.requested: dict[str, list[dg.RunRequest]] = {}

    def tick(
        self, name: str, execute: bool = True
    ) -> tuple[list[dg.RunRequest], list[dg.ExecuteInProcessResult]]:
        data = self.location.tick(name, self.cursors.get(name))
        self.cursors[name] = data.cursor
        apply(self.location, data)
        self.requested.setdefault(name, []).extend(data.run_requests)
        results = [self.location.execute(r) for r in data.run_requests] if execute else []
        assert all(r.success for r in results), [r.run_id for r in results if not r.success]
        self.last_skip = data.skip_message
        return list(data.run_requests), results


def _land(location: Location, month: str, frame: pd.DataFrame) -> None:
    location.landing.write_bytes(f"sales_{month}.csv", frame.to_csv(index=False).encode())


def _shift(frame: pd.DataFrame, factor: float = 1.5) -> pd.DataFrame:
    config = project_config().data
    out = frame.copy()
    for canonical in ("sale_price", "living_sf"):
        col = config.source_name(canonical)
        out[col] = (pd.to_numeric(out[col]) * factor).round().astype(int).astype(str)
    return out


def _drift_metadata(instance: dg.DagsterInstance) -> dict[str, object]:
    mat = instance.get_latest_materialization_event(dg.AssetKey("drift_report")).asset_materialization
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


@pytest.mark.slow
def test_normal_month_then_shifted_month(
    instance: dg.DagsterInstance,
    tmp_path: Path,
    notifier: Notifier,
    webhook: WebhookReceiver,
    smtp: SmtpReceiver,
    bundled_sales: pd.DataFrame,
) -> None:
    location = build_location(
        instance, tmp_path / "home", notifier, AutomationSettings(retrain_policy="drift"), SMALL_WINDOW
    )
    daemon = Driver(location)
    by_month = split_by_month(bundled_sales, project_config().data)

    # 1. The reference window and a normal month land: ingest runs per month, then a drift report.
    for month in [*REFERENCE, NORMAL]:
        _land(location, month, by_month[month])
    ingest, _ = daemon.tick("landing_sensor")
    assert sorted(r.partition_key for r in ingest) == [*REFERENCE, NORMAL]
    assert daemon.tick("landing_sensor")[0] == []

    [drift_run], _ = daemon.tick("retrain_sensor")
    assert (
        drift_run.asset_selection == [dg.AssetKey("drift_report")]
        and drift_run.tags["homeprice/month"] == NORMAL
    )
    normal = _drift_metadata(instance)
    assert normal["month"] == NORMAL and normal["dataset_drift"] is False
    assert normal["reference_months"].startswith(f"{REFERENCE[0]}..{REFERENCE[-1]}")
    assert Path(normal["report_html"]).is_file()
    # No drift, policy "drift": nothing is retrained and nobody is alerted.
    assert daemon.tick("retrain_sensor")[0] == []
    daemon.tick("check_alert_sensor")
    assert webhook.posts == [] and smtp.messages == []

    # 2. A month with prices and living areas x1.5 lands.
    _land(location, SHIFTED, _shift(by_month[SHIFTED]))
    [ingest_shifted], _ = daemon.tick("landing_sensor")
    assert ingest_shifted.partition_key == SHIFTED
    [drift_run], [drift_result] = daemon.tick("retrain_sensor")
    assert drift_run.tags["homeprice/month"] == SHIFTED
    shifted = _drift_metadata(instance)
    assert shifted["month"] == SHIFTED and shifted["dataset_drift"] is True
    assert "log_living_sf" in shifted["drifted_features"]
    assert shifted["feature_scores"]["log_living_sf"] > 0.5 > normal["feature_scores"]["log_living_sf"]
    [check] = drift_result.get_asset_check_evaluations()
    assert check.check_name == "drift_within_threshold" and not check.passed
    # The drift report is in MLflow too.
    run = mlflow.MlflowClient().get_run(shifted["mlflow_run_id"])
    assert run.data.metrics["dataset_drift"] == 1.0
    assert {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "drift")} == {
        "drift/drift_report.html",
        "drift/drift_summary.json",
    }

    # 3. Retraining is requested by the drift, queued behind any other lifecycle run.
    retrain, _ = daemon.tick("retrain_sensor", execute=False)
    [request] = retrain
    assert request.tags["homeprice/trigger"] == "drift" and request.tags["homeprice/month"] == SHIFTED
    assert request.tags[LIFECYCLE_TAG] == "true"
    assert {
        dg.AssetKey("training_set"),
        dg.AssetKey("price_model"),
        dg.AssetKey("promoted_model"),
    } <= set(request.asset_selection)

    # 4. The drift alert reaches Slack (webhook) and e-mail, with features, scores and links.
    daemon.tick("check_alert_sensor")
    [text] = webhook.texts()
    assert f"Drift detected in {SHIFTED}" in text and "log_living_sf=" in text
    assert f"http://dagster.test:3000/runs/{drift_result.run_id}" in text
    assert (
        f"http://mlflow.test:5000/#/experiments/{shifted['mlflow_experiment_id']}/runs/{run.info.run_id}"
        in text
    )
    [message] = smtp.messages
    assert message["Subject"].strip() == f"[homeprice] Drift detected in {SHIFTED}"
    assert (
        "log_living_sf=" in message.get_content()
        and "Target (sale_price) drift score" in message.get_content()
    )
    daemon.tick("check_alert_sensor")
    assert len(webhook.posts) == 1  # not repeated

    # Runs requested per sensor over the whole story.
    counts = {name: len(reqs) for name, reqs in daemon.requested.items()}
    print(
        "runs requested:",
        counts,
        "normal scores:",
        normal["feature_scores"],
        "shifted:",
        shifted["feature_scores"],
    )
    assert counts["landing_sensor"] == len(REFERENCE) + 2
    assert counts["retrain_sensor"] == 3

    # Policy "new_data" on the same history: the newest ready month is retrained without any drift.
    new_data = build_location(
        instance, tmp_path / "home", notifier, AutomationSettings(retrain_policy="new_data"), SMALL_WINDOW
    )
    tick = new_data.tick("retrain_sensor", None)
    assert [r.tags["homeprice/trigger"] for r in tick.run_requests] == ["new_data"]
