"""Promotion alerts from the real model lifecycle: a first champion is announced, a gated challenger is not.

Runs the lead's lifecycle assets in-process on 18 months of the bundled data (slow).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from homeprice_assets.config import project_config
from homeprice_assets.ingest.landing import land_history
from homeprice_assets.monitoring.notify import Notifier
from homeprice_assets.monitoring.settings import AutomationSettings

from .conftest import SmtpReceiver, WebhookReceiver, apply, build_location

# Quick fits: these runs test the alerts, not accuracy.
FAST = {"training": {"explain_sample": 200, "params": {"num_boost_round": 300, "early_stopping_rounds": 30}}}


@pytest.mark.slow
def test_promotion_succeeded_then_blocked(
    instance: dg.DagsterInstance,
    tmp_path: Path,
    notifier: Notifier,
    webhook: WebhookReceiver,
    smtp: SmtpReceiver,
) -> None:
    location = build_location(
        instance, tmp_path / "home", notifier, AutomationSettings(retrain_policy="new_data"), FAST
    )
    # the model lifecycle must be in the code location: a missing one fails here, it is never skipped
    assert dg.AssetKey("promoted_model") in location.defs.resolve_asset_graph().get_all_asset_keys()
    land_history(location.landing, project_config().data, since="2015-01", until="2016-06")
    landed = location.tick("landing_sensor", None)
    apply(location, landed)
    assert all(location.execute(r).success for r in landed.run_requests)

    # New data under policy "new_data": one retrain of the whole lifecycle; the first model becomes champion.
    [retrain] = location.tick("retrain_sensor", None).run_requests
    first = location.execute(retrain)
    assert first.success
    promo = location.tick("promotion_alert_sensor", None)
    assert "1 promotion(s) alerted" in promo.skip_message
    [text] = webhook.texts()
    assert "Promoted homeprice v1 to champion" in text and "Champion: v- -> v1" in text
    assert "mdape" in text and "(first champion)" in text
    assert f"/runs/{first.run_id}" in text and "http://mlflow.test:5000/#/experiments/" in text
    assert smtp.messages[0]["Subject"].strip() == "[homeprice] Promoted homeprice v1 to champion"

    # With a champion in the registry, the drift report measures prediction drift too.
    report = location.execute(dg.RunRequest(asset_selection=[dg.AssetKey("drift_report")]))
    assert report.success
    meta = instance.get_latest_materialization_event(
        dg.AssetKey("drift_report")
    ).asset_materialization.metadata
    assert meta["prediction_drift"].value in ("True", "False") and meta["month"].value == "2016-06"

    # A stricter absolute gate: the next challenger (as the monthly schedule would train it) is blocked.
    strict = {**FAST, "promotion": {"max_mdape": 0.01}}
    location = build_location(
        instance, tmp_path / "home", notifier, AutomationSettings(retrain_policy="new_data"), strict
    )
    second = location.execute(dg.RunRequest(asset_selection=retrain.asset_selection))
    gates = {e.check_name: e.passed for e in second.get_asset_check_evaluations()}
    assert gates["absolute_accuracy"] is False
    assert "0 promotion(s)" in location.tick("promotion_alert_sensor", promo.cursor).skip_message
    location.tick("check_alert_sensor", None)
    blocked = [t for t in webhook.texts() if "blocked" in t]
    assert len(blocked) == 1, webhook.texts()
    assert "Promotion of homeprice v2 blocked by absolute_accuracy" in blocked[0]
    assert "max_mdape=0.01" in blocked[0] and "mdape=" in blocked[0]
    assert f"/runs/{second.run_id}" in blocked[0]
    print("alerts:", *webhook.texts(), sep="\n---\n")
