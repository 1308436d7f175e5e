"""Schemas of the ``training`` and ``promotion`` sections of the project configuration.

Validated when the configuration is loaded (``homeprice_assets.config.load_config``), so a typo or an
out-of-range value fails at once, naming the key and the file, never after a training run.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class UpdateSettings(BaseModel):
    """Monthly warm-start updates of the champion between full refits (``training/update.py``)."""

    model_config = ConfigDict(extra="forbid")

    max_consecutive: int = Field(
        3,
        ge=0,
        description="updates in a row before the next retrain is a full refit; 0: every retrain is full",
    )
    rounds: int = Field(50, ge=1, le=10_000, description="trees an update adds to the champion's booster")
    months: int = Field(12, ge=1, description="most recent training months the added trees learn from")


class TrainingSettings(BaseModel):
    """Which months train and validate the model, and how it is fit."""

    model_config = ConfigDict(extra="forbid")

    window_months: int | None = Field(60, ge=6, description="history used; None for all landed months")
    validation_months: int = Field(3, ge=1, description="the most recent months: validation, never training")
    calibration_months: int = Field(
        12,
        ge=1,
        description="end of training held out for the interval: its scores, by months ahead, set the "
        "interval width per horizon (12 covers a year of forward valuations)",
    )
    early_stopping_months: int = Field(3, ge=1, description="inner time-ordered slice for early stopping")
    interval_level: float = Field(0.8, gt=0, lt=1)
    params: dict[str, Any] = Field(default_factory=dict, description="over training.model.DEFAULT_PARAMS")
    # SHAP costs the same at every data size (about 6 s per 1,000 homes on the blended trees). Measured on
    # 4,000 bundled validation homes: 1,000 of them give every feature's mean |SHAP| above 0.01 within
    # 5.6% of the 4,000's (30 draws; Spearman >= 0.988), 2,000 within 3.6%; ranks of near-equal features
    # swap at either size.
    explain_sample: int = Field(1000, ge=50, description="rows of the validation set SHAP explains")
    schedule: str = Field("0 3 1 * *", description="cron of the recurring lifecycle run (a floor)")
    update: UpdateSettings = Field(default_factory=UpdateSettings)

    @field_validator("params")
    @classmethod
    def _known_params(cls, v: dict[str, Any]) -> dict[str, Any]:
        """A misspelt parameter would be passed to LightGBM, which ignores it quietly (``verbose: -1``);
        so would one in a ``blend`` booster's overrides."""
        known = known_params() if v else None
        if known is None:
            return v
        names = set(v)
        for booster in v.get("blend") or []:
            if isinstance(booster, dict):
                names.update(f"blend.{k}" for k in booster if k not in known)
        unknown = sorted(n for n in names if n not in known)
        if unknown:
            import difflib

            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name.removeprefix("blend."), sorted(known), n=1)
                hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(
                f"unknown parameter(s) {', '.join(hints)}: expected homeprice's own (see "
                "homeprice_assets/training/model.py DEFAULT_PARAMS) or LightGBM's parameters and aliases"
            )
        return v


class PromotionSettings(BaseModel):
    """Gates a challenger must pass to become champion (all on the same validation window)."""

    model_config = ConfigDict(extra="forbid")

    max_mdape: float = Field(0.15, gt=0, description="absolute: median absolute percentage error at most")
    min_ppe10: float = Field(0.35, ge=0, le=1, description="absolute: share within 10% of the price at least")
    max_mdape_increase: float = Field(
        0.02, ge=0, description="relative: challenger MdAPE at most champion MdAPE x (1 + this)"
    )
    max_churn: float | None = Field(
        0.5, ge=0, le=1, description="share of homes whose valuation moves >10% vs the champion; None: off"
    )
    max_ppe10_decrease: float | None = Field(
        0.02, ge=0, le=1, description="relative: challenger PPE10 at least champion PPE10 - this; None: off"
    )
    max_coverage_decrease: float | None = Field(
        0.05,
        ge=0,
        le=1,
        description="relative: challenger interval coverage at least the champion's - this; None: off",
    )
    max_rmse_increase: float | None = Field(
        0.03, ge=0, description="relative: challenger RMSE at most champion RMSE x (1 + this); None: off"
    )
    max_abs_prb: float | None = Field(
        0.1,
        gt=0,
        le=1,
        description="absolute: vertical equity, |PRB| (IAAO price-related bias) at most this; None: off",
    )


@lru_cache(maxsize=1)
def known_params() -> frozenset[str] | None:
    """The keys ``training.params`` may set: homeprice's own (and the index's) and LightGBM's names and
    aliases, as the installed LightGBM's own parser knows them. None (no check, with a warning) if that
    LightGBM no longer lists them where this release reads them (a private helper of LightGBM 4)."""
    from homeprice_assets.training.model import DEFAULT_PARAMS

    try:
        from lightgbm.basic import _ConfigAliases

        lightgbm_names = _ConfigAliases._get_all_param_aliases()
    except (ImportError, AttributeError, TypeError) as exc:
        warnings.warn(
            f"training.params not checked: LightGBM's parameter names are unavailable ({exc})", stacklevel=2
        )
        return None
    names = set(DEFAULT_PARAMS)
    for name, aliases in lightgbm_names.items():
        names.update((name, *aliases))
    return frozenset(names)
