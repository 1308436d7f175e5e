"""The rollout's share of the code location: ground truth, the evaluation, the actions sensor.

Merge with ``dg.Definitions.merge(core, rollout.defs)``; ``settings``, ``registry``, ``notifier`` and the
``clean_sales`` asset come from the other domains.
"""

from __future__ import annotations

import dagster as dg

from homeprice_assets.rollout.assets import PredictionLogResource, ground_truth, rollout_evaluation
from homeprice_assets.rollout.sensors import build_rollout_actions_sensor

# Evaluates the two assets' automation conditions. Without a sensor of its own, Dagster puts them on its
# default automation sensor, which starts stopped: ground truth and the evaluation would never run unattended.
rollout_automation = dg.AutomationConditionSensorDefinition(
    "rollout_automation",
    target=dg.AssetSelection.assets(ground_truth, rollout_evaluation),
    default_status=dg.DefaultSensorStatus.RUNNING,
)

defs = dg.Definitions(
    assets=[ground_truth, rollout_evaluation],
    sensors=[build_rollout_actions_sensor(), rollout_automation],
    resources={"prediction_log": PredictionLogResource()},
)
