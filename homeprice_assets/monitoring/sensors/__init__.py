"""Sensors that run homeprice unattended, one module per responsibility.

- ``landing``: a new or changed landed file -> the ingest run of its month (never a month already ingested);
- ``retrain``: months that became ready -> drift report and/or retraining, by policy;
- ``alerts``: failed runs, failed check evaluations and promotions -> alerts.

Every sensor keeps its progress in its cursor (JSON) and sets run keys, so a restarted daemon neither loses
nor repeats work: a lost cursor at worst re-requests runs that Dagster then drops by their run key.
"""

from homeprice_assets.monitoring.sensors.alerts import (
    build_check_alert_sensor,
    build_promotion_alert_sensor,
    build_run_failure_sensor,
    failed_rows_of,
)
from homeprice_assets.monitoring.sensors.common import MONTH_TAG, TRIGGER_TAG
from homeprice_assets.monitoring.sensors.landing import build_landing_sensor
from homeprice_assets.monitoring.sensors.retrain import MONITORING_TARGET, build_retrain_sensor

__all__ = [
    "MONITORING_TARGET",
    "MONTH_TAG",
    "TRIGGER_TAG",
    "build_check_alert_sensor",
    "build_landing_sensor",
    "build_promotion_alert_sensor",
    "build_retrain_sensor",
    "build_run_failure_sensor",
    "failed_rows_of",
]
