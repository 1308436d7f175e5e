"""A champion moved by the rollout (or ``homeprice rollback``) is a ``promoted_model`` event: the Bento is
rebuilt around it, and the promotion alert sensor leaves the announcement to whoever moved it."""

from pathlib import Path

import dagster as dg

from homeprice_assets.definitions import defs
from homeprice_assets.monitoring.notify import Notifier
from homeprice_assets.monitoring.sensors.alerts import build_promotion_alert_sensor
from homeprice_assets.resources.registry import ModelRegistry
from homeprice_assets.rollout.sensors import champion_moved
from homeprice_assets.rollout.state import Action
from homeprice_assets_tests.helpers import project_instance
from homeprice_assets_tests.monitoring.conftest import WebhookReceiver, webhook  # noqa: F401 (fixture)


def test_a_rollback_makes_the_bento_due_and_is_not_announced_twice(
    tmp_path: Path,
    webhook: WebhookReceiver,  # noqa: F811
) -> None:
    action = Action("rollback", "3", "live PPE10 19% < 25%", {"from": "2"}, previous_champion="2")
    with project_instance() as instance:
        before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        instance.report_runless_asset_event(champion_moved(action, "rollout_actions"))
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
        assert after.get_num_requested(dg.AssetKey("bento")) == 1

        notifier = Notifier(slack_webhook_url=webhook.url, dedup_db=str(tmp_path / "alerts.sqlite"))
        registry = ModelRegistry(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        context = dg.build_sensor_context(
            instance=instance, resources={"notifier": notifier, "registry": registry}
        )
        build_promotion_alert_sensor()(context)
        assert webhook.posts == []
        event = instance.get_latest_materialization_event(dg.AssetKey("promoted_model"))
        assert event.asset_materialization.metadata["champion_version"].value == "3"
