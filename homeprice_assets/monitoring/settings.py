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
    # Calibrated on the bundled data (bench/drift_calibration.py: every month 2013-2016 against the 24 months
    # before it). Ordinary months: per-feature distances (normed Wasserstein / Jensen-Shannon) peak at
    # 0.06-0.30, highest in January-February when the age features step by a year; the same months with
    # prices and areas x1.5: log living area / living-to-lot at 0.90-1.15. With Evidently's defaults (column
    # 0.1, share 0.2) 12 of 48 ordinary months (25%) were "drifted"; with the values below 1 of 48 (2.1%) is,
    # and 12 of 12 x1.5 months are.
    # Per-column threshold passed to Evidently (None: its default, 0.1 for the distances used above 1k rows).
    stattest_threshold: float | None = Field(default=0.15, gt=0.0)
    # The asset check fails (and the drift alert fires) when this share of feature columns has drifted ...
    drift_share_threshold: float = Field(default=0.3, gt=0.0, le=1.0)
    # ... or when any one feature's distance reaches this (None: off): one strongly moved input is enough
    # to distrust the model (ordinary months peak at 0.30, x1.5 months at 0.90 or more).
    feature_score_threshold: float | None = Field(default=0.5, gt=0.0)
    # Features left out of the drift share: the time index drifts by construction every month.
    exclude_features: list[str] = Field(default_factory=lambda: ["months_since_origin"])
    # Target drift alone (prices move every month) is reported but only counts as drift when this is True.
    target_drift_counts: bool = False
    # Prediction drift: the serving champion (registered model @ alias) scores both sides when it exists.
    prediction_drift: bool = True
    champion_alias: str = "champion"  # the model's name is the registry's (resources/registry.py)
    # MLflow experiment the drift reports are logged to.
    mlflow_experiment: str = "homeprice-monitoring"


class PriceLevelSettings(_Strict):
    """The blocking ``price_level`` check on ``sale_features``: a month whose price level jumps is held back.

    Measured on the bundled data 2010-2016: the median price per sq ft of a month moves at most 12.6%
    (95th percentile 9.2%) from the median of the 6 months before it; prices x1.5 move it 50%.
    """

    max_change: float = Field(
        default=0.2, gt=0.0, le=10.0, description="largest relative move of the median price per sq ft"
    )
    lookback_months: int = Field(
        default=6, ge=1, le=60, description="recent months the month is compared with"
    )
    min_months: int = Field(
        default=3, ge=1, le=60, description="fewer recent months than this: the check passes (no history)"
    )


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
    # Runs the sensors start execute their steps inside the run's own process, instead of one process per
    # step (each re-importing the code location: 10-20 s apiece on two busy cores).
    in_process_runs: bool = Field(
        default=True, description="sensor-started runs use the in-process executor (one process per run)"
    )


class MonitoringSettings(_Strict):
    drift: DriftSettings = Field(default_factory=DriftSettings)
    price_level: PriceLevelSettings = Field(default_factory=PriceLevelSettings)
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


def alert_settings(config: ProjectConfig | None = None) -> AlertSettings:
    """The ``alerts`` section, for ``Notifier.from_settings`` called without one (the code location passes
    the loaded configuration's)."""
    from homeprice_assets.config import project_config

    return (config or project_config()).alerts
