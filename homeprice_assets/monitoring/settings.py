"""Schemas of the ``monitoring`` and ``alerts`` sections of the project configuration.

This domain owns its keys; ``ProjectConfig`` validates them when the configuration is loaded, with defaults
tuned on the bundled Seattle sales, so a typo in a user's YAML fails loudly at load time.
Secrets (webhook URL, SMTP password) never live here: they come from environment variables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from homeprice_assets.config import ProjectConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DriftSettings(_Strict):
    """How the newest month is compared with the model's training window."""

    # Months before the newest one that form the reference (the training window); 0 = every earlier month.
    reference_months: int = Field(default=24, ge=0)
    # Larger references are sampled (fixed seed) to keep the report fast; distances barely move past ~20k.
    max_reference_rows: int = Field(default=20_000, ge=1_000)
    # Per-column threshold passed to Evidently (None: its default, 0.1 for the distances used above 1k rows).
    stattest_threshold: float | None = None
    # The asset check fails (and the drift alert fires) when this share of feature columns has drifted.
    # Measured on the bundled data (24-month reference): normal months 2013-2016 have 0-12% of features
    # drifted, the same months with prices and areas x1.5 18-24%; the single-feature rule below is sharper.
    drift_share_threshold: float = Field(default=0.2, gt=0.0, le=1.0)
    # ... or when any one feature's distance reaches this (None: off). Normal months peak at 0.07-0.17, the
    # x1.5 months at 0.88-1.1 (log living area): one strongly moved input is enough to distrust the model.
    feature_score_threshold: float | None = Field(default=0.5, gt=0.0)
    # Features left out of the drift share: the time index drifts by construction every month.
    exclude_features: list[str] = Field(default_factory=lambda: ["months_since_origin"])
    # Target drift alone (prices move every month) is reported but only counts as drift when this is True.
    target_drift_counts: bool = False
    # Prediction drift: the serving champion (registered model @ alias) scores both sides when it exists.
    prediction_drift: bool = True
    model_name: str = "homeprice"
    champion_alias: str = "champion"
    # MLflow experiment the drift reports are logged to.
    mlflow_experiment: str = "homeprice-monitoring"


class AutomationSettings(_Strict):
    """What makes the system retrain, and how often the sensors look."""

    # new_data: every newly featurized month whose checks passed; drift: only when drift passes its threshold;
    # both: either of the two (a new month retrains, and so does drift found on re-evaluation).
    retrain_policy: Literal["new_data", "drift", "both"] = "drift"
    landing_sensor_interval_seconds: int = Field(default=60, ge=5)
    retrain_sensor_interval_seconds: int = Field(default=60, ge=5)
    check_alert_sensor_interval_seconds: int = Field(default=60, ge=5)
    # A retrain materializes every asset of this group (the model lifecycle job's selection).
    retrain_group: str = "training"


class MonitoringSettings(_Strict):
    drift: DriftSettings = Field(default_factory=DriftSettings)
    automation: AutomationSettings = Field(default_factory=AutomationSettings)


class EmailSettings(_Strict):
    """Non-secret SMTP settings; the password comes from ``HOMEPRICE_SMTP_PASSWORD``."""

    host: str | None = None
    port: int = 25
    sender: str = "homeprice@localhost"
    to: list[str] = Field(default_factory=list)
    user: str | None = None
    starttls: bool = False
    timeout_seconds: float = 10.0


class AlertSettings(_Strict):
    dagster_base_url: str = "http://127.0.0.1:3000"
    # None: derived from an http(s) MLflow tracking URI; file/sqlite stores have no UI link of their own.
    mlflow_base_url: str | None = "http://127.0.0.1:5000"
    # The same alert key is not sent again within this many minutes (persisted across processes).
    dedup_minutes: float = Field(default=60.0, ge=0.0)
    email: EmailSettings = Field(default_factory=EmailSettings)
    timeout_seconds: float = 10.0
    # Failed checks of WARN severity (row count, freshness, null rates) alert too if True; ERROR ones always.
    alert_on_warn_checks: bool = False


def monitoring_settings(config: ProjectConfig | None = None) -> MonitoringSettings:
    """Deprecated: take the ``settings`` resource (``ProjectConfigResource``) instead."""
    from homeprice_assets.config import project_config

    return (config or project_config()).monitoring


def alert_settings(config: ProjectConfig | None = None) -> AlertSettings:
    """Deprecated: take the ``settings`` resource (``ProjectConfigResource``) instead."""
    from homeprice_assets.config import project_config

    return (config or project_config()).alerts
