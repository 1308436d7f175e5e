"""The rollout's share of the code location: ground truth, the evaluation, the actions sensor.

Merge with ``dg.Definitions.merge(core, rollout.defs)``; ``settings``, ``registry``, ``notifier`` and the
``clean_sales`` asset come from the other domains.
"""

from __future__ import annotations

import dagster as dg

from homeprice_assets.rollout.assets import PredictionLogResource, ground_truth, rollout_evaluation
from homeprice_assets.rollout.sensors import build_rollout_actions_sensor

defs = dg.Definitions(
    assets=[ground_truth, rollout_evaluation],
    sensors=[build_rollout_actions_sensor()],
    resources={"prediction_log": PredictionLogResource()},
)
