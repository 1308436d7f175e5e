"""Monitoring's share of the code location: the drift report, its check, the sensors and the notifier.

Merge with ``dg.Definitions.merge(core, monitoring.build_defs(config))``; the ingest job and the ``landing``,
``settings`` and ``registry`` resources come from the core definitions. Sensor intervals and the retrain
policy are read from the configuration the code location loads with.
"""

from __future__ import annotations

import dagster as dg

from homeprice_assets.monitoring.assets import drift_report
from homeprice_assets.monitoring.notify import Notifier
from homeprice_assets.monitoring.sensors import (
    build_check_alert_sensor,
    build_landing_sensor,
    build_promotion_alert_sensor,
    build_retrain_sensor,
    build_run_failure_sensor,
)
from homeprice_assets.resources.config import ProjectConfigResource


def build_defs(config: ProjectConfigResource | None = None) -> dg.Definitions:
    project = (config or ProjectConfigResource.from_env()).get()
    automation = project.monitoring.automation
    return dg.Definitions(
        assets=[drift_report],
        sensors=[
            build_landing_sensor(
                automation.landing_sensor_interval_seconds, in_process=automation.in_process_runs
            ),
            build_retrain_sensor(automation),
            build_run_failure_sensor(),
            build_check_alert_sensor(automation.check_alert_sensor_interval_seconds),
            build_promotion_alert_sensor(automation.check_alert_sensor_interval_seconds),
        ],
        resources={"notifier": Notifier.from_settings(project.alerts)},
    )
