"""The ``rollout`` section of the project configuration: how a validated challenger earns live traffic.

``mode`` decides what passing the offline gates means: ``direct`` makes the challenger champion at once (the
behaviour before rollouts existed); ``shadow`` and ``ab`` make it the ``candidate`` and let live ground truth
(later sales of the homes it priced) decide. The rollback rules watch the live champion in every mode.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Mode = Literal["direct", "shadow", "ab"]


class RollbackRules(BaseModel):
    """When the live champion counts as broken (any one rule), judged on each ground-truth evaluation."""

    model_config = ConfigDict(extra="forbid")

    max_mdape_increase: float = Field(
        0.25,
        ge=0,
        description="live MdAPE above the version's offline validation MdAPE x (1 + this) breaks",
    )
    min_ppe10: float = Field(0.25, ge=0, le=1, description="live PPE10 below this breaks")
    coverage_band: tuple[float, float] = Field(
        (0.6, 0.95), description="live 80% interval coverage outside [low, high] breaks"
    )
    max_5xx_rate: float = Field(
        0.05, ge=0, le=1, description="share of service responses that were 5xx above this breaks"
    )
    min_sales: int = Field(30, ge=1, description="fewer matched sales than this: not judged (no breach)")
    failure_limit: int = Field(2, ge=1, description="consecutive broken months before champion -> previous")

    @model_validator(mode="after")
    def _band(self) -> RollbackRules:
        low, high = self.coverage_band
        if not 0 <= low < high <= 1:
            raise ValueError(f"rollback.coverage_band: need 0 <= low < high <= 1, got {self.coverage_band}")
        return self


class RolloutSettings(BaseModel):
    """Rollout mode, traffic share, ground-truth join and the sequential comparison."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = Field("direct", description="direct | shadow | ab: what a challenger that passes becomes")
    weight: float = Field(0.2, gt=0, lt=1, description="A/B: share of homes the candidate prices")
    embargo_days: int = Field(
        30, ge=0, le=365, description="a prediction counts only if made this long before the sale"
    )
    horizon_months: int = Field(12, ge=1, le=60, description="... and at most this long before it")
    min_pairs: int = Field(200, ge=10, description="fewer compared sales: 'inconclusive', never a decision")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="error rate of the always-valid sequential test")
    mixture_variance: float = Field(
        0.01,
        gt=0,
        le=1,
        description="sequential sign test: mixing variance tau^2 of the mean sign (0.1^2: tuned to a "
        "55/45 split of which model prices a home better)",
    )
    bootstrap_samples: int = Field(2000, ge=100, le=100_000, description="paired bootstrap resamples")
    live_window_months: int = Field(
        3,
        ge=1,
        le=24,
        description="live error per version (exported to Prometheus by the service) over this many of the "
        "latest sale months with matched sales",
    )
    metrics_url: str | None = Field(
        None, description="the service's /metrics URL, for the 5xx-rate rule (None: rule off)"
    )
    rollback: RollbackRules = Field(default_factory=RollbackRules)
