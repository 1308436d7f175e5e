"""Serving's share of the code location: the ``bento`` asset and the sensor that rebuilds it on promotion.

Merge with ``dg.Definitions.merge(core, serving.defs)``, in place of loading ``serving.assets`` and declaring
``serving_automation`` in the core; ``registry`` and ``promoted_model`` come from the core.
"""

from __future__ import annotations

import dagster as dg

from homeprice_assets.serving.assets import bento

# Repackage the Bento whenever a new champion is promoted, however the promotion was started (a run, a
# schedule, a backfill): the asset's eager automation condition fires on each new `promoted_model`.
serving_automation = dg.AutomationConditionSensorDefinition(
    "serving_automation",
    target=dg.AssetSelection.assets(bento),
    default_status=dg.DefaultSensorStatus.RUNNING,
)

defs = dg.Definitions(assets=[bento], sensors=[serving_automation])
