"""Promotion gates: pure decisions over validation metrics, so the rules can be read and tested alone.

Each gate is one function registered with its name, its description and the config key(s) under
``promotion:`` that set it; ``GATES`` is the registry ``training/assets.py`` builds its blocking asset checks
from. Adding a gate = one ``@gate`` function here + one key in ``PromotionSettings`` (and the default config).

With no champion (the very first model) the relative and churn gates pass: only absolute gates apply. A
relative gate also passes when the champion lacks the metric (scored by an older release), saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from homeprice_assets.training.settings import PromotionSettings

Figures = dict[str, float | str | None]


@dataclass(frozen=True)
class Gate:
    """One gate's verdict on one challenger."""

    name: str  # also the asset check's name
    passed: bool
    reason: str
    figures: Figures


@dataclass(frozen=True)
class GateInputs:
    challenger: Mapping[str, float]
    champion: Mapping[str, float] | None
    churn: float | None


Verdict = tuple[bool, str, Figures]


@dataclass(frozen=True)
class GateSpec:
    name: str
    description: str
    settings: tuple[str, ...]  # the PromotionSettings keys that configure it
    evaluate: Callable[[GateInputs, PromotionSettings], Verdict]

    def __call__(self, inputs: GateInputs, settings: PromotionSettings) -> Gate:
        passed, reason, figures = self.evaluate(inputs, settings)
        return Gate(self.name, bool(passed), reason, figures)


GATES: list[GateSpec] = []


def gate(name: str, description: str, *settings: str) -> Callable[[Callable], Callable]:
    """Register a gate function under ``name`` (the asset check's name) with its description."""

    def register(fn: Callable[[GateInputs, PromotionSettings], Verdict]) -> Callable:
        if any(g.name == name for g in GATES):
            raise ValueError(f"promotion gate {name!r} registered twice")
        GATES.append(GateSpec(name, description, settings, fn))
        return fn

    return register


def _against_champion(
    inputs: GateInputs,
    metric: str,
    label: str,
    margin: float | None,
    limit_of: Callable[[float, float], float],
    higher_is_better: bool,
    fmt: Callable[[float], str],
    margin_text: str,
) -> Verdict:
    """Challenger ``metric`` within ``margin`` of the champion's (``limit_of(champion, margin)``)."""
    new = inputs.challenger.get(metric)
    if margin is None:
        return True, f"{label} gate off", {metric: new}
    if inputs.champion is None:
        return (
            True,
            f"no champion yet: first model ({label} {fmt(new) if new is not None else 'n/a'})",
            {metric: new},
        )
    old = inputs.champion.get(metric)
    if old is None or new is None:
        return True, f"{label}: not measured for both models", {metric: new, f"champion_{metric}": old}
    limit = limit_of(old, margin)
    passed = new >= limit if higher_is_better else new <= limit
    reason = (
        f"challenger {label} {fmt(new)} vs champion {fmt(old)} "
        f"({'min' if higher_is_better else 'max'} {fmt(limit)}, margin {margin_text})"
    )
    return passed, reason, {metric: new, f"champion_{metric}": old, "limit": limit, "margin": margin}


def _pct(v: float) -> str:
    return f"{v:.2%}"


def _share(v: float) -> str:
    return f"{v:.1%}"


def _dollars(v: float) -> str:
    return f"${v:,.0f}"


@gate(
    "absolute_accuracy",
    "Challenger MdAPE and PPE10 within the configured absolute limits.",
    "max_mdape",
    "min_ppe10",
)
def absolute_accuracy(inputs: GateInputs, s: PromotionSettings) -> Verdict:
    mdape, ppe10 = inputs.challenger["mdape"], inputs.challenger["ppe10"]
    return (
        mdape <= s.max_mdape and ppe10 >= s.min_ppe10,
        f"challenger MdAPE {mdape:.2%} (max {s.max_mdape:.2%}), PPE10 {ppe10:.1%} (min {s.min_ppe10:.1%})",
        {"mdape": mdape, "max_mdape": s.max_mdape, "ppe10": ppe10, "min_ppe10": s.min_ppe10},
    )


@gate(
    "not_worse_than_champion",
    "Challenger MdAPE not worse than the champion's by more than promotion.max_mdape_increase (relative).",
    "max_mdape_increase",
)
def mdape_vs_champion(inputs: GateInputs, s: PromotionSettings) -> Verdict:
    m = s.max_mdape_increase
    return _against_champion(
        inputs, "mdape", "MdAPE", m, lambda old, m: old * (1 + m), False, _pct, f"{m:.0%}"
    )


@gate(
    "ppe10_vs_champion",
    "Challenger PPE10 not below the champion's by more than promotion.max_ppe10_decrease (points).",
    "max_ppe10_decrease",
)
def ppe10_vs_champion(inputs: GateInputs, s: PromotionSettings) -> Verdict:
    m = s.max_ppe10_decrease
    return _against_champion(
        inputs, "ppe10", "PPE10", m, lambda old, m: old - m, True, _share, f"{(m or 0) * 100:.1f} points"
    )


@gate(
    "coverage_vs_champion",
    "Challenger price-interval coverage not below the champion's by more than "
    "promotion.max_coverage_decrease (points).",
    "max_coverage_decrease",
)
def coverage_vs_champion(inputs: GateInputs, s: PromotionSettings) -> Verdict:
    m = s.max_coverage_decrease
    return _against_champion(
        inputs,
        "interval_coverage",
        "interval coverage",
        m,
        lambda old, m: old - m,
        True,
        _share,
        f"{(m or 0) * 100:.1f} points",
    )


@gate(
    "rmse_vs_champion",
    "Challenger RMSE not worse than the champion's by more than promotion.max_rmse_increase (relative).",
    "max_rmse_increase",
)
def rmse_vs_champion(inputs: GateInputs, s: PromotionSettings) -> Verdict:
    m = s.max_rmse_increase
    return _against_champion(
        inputs, "rmse", "RMSE", m, lambda old, m: old * (1 + m), False, _dollars, f"{(m or 0):.0%}"
    )


@gate(
    "valuation_churn",
    "Share of homes whose valuation moves >10% vs the champion within promotion.max_churn.",
    "max_churn",
)
def valuation_churn(inputs: GateInputs, s: PromotionSettings) -> Verdict:
    churn = inputs.churn
    if s.max_churn is None or churn is None:
        return True, "churn gate off or no champion", {"churn": churn}
    return (
        churn <= s.max_churn,
        f"{churn:.1%} of homes move >10% vs the champion (max {s.max_churn:.0%})",
        {"churn": churn, "max_churn": s.max_churn},
    )


@gate(
    "vertical_equity",
    "Challenger valuations vertically equitable: |PRB| (IAAO price-related bias: change of the sale ratio "
    "each time value doubles) at most promotion.max_abs_prb; PRD reported alongside.",
    "max_abs_prb",
)
def vertical_equity(inputs: GateInputs, s: PromotionSettings) -> Verdict:
    prb, prd = inputs.challenger.get("prb"), inputs.challenger.get("prd")
    figures: Figures = {"prb": prb, "prd": prd, "max_abs_prb": s.max_abs_prb}
    if s.max_abs_prb is None:
        return True, "vertical equity gate off", figures
    if prb is None or prd is None:
        return True, "vertical equity: PRB not measured for the challenger", figures
    way = "cheap homes valued high relative to dear ones" if prb < 0 else "dear homes valued high"
    return (
        abs(prb) <= s.max_abs_prb,
        f"challenger PRB {prb:+.3f} (max |{s.max_abs_prb:.3f}|; {way}), PRD {prd:.3f} (IAAO 0.98-1.03)",
        figures,
    )


def evaluate_gates(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    churn: float | None,
    settings: PromotionSettings,
) -> list[Gate]:
    """Every registered gate's verdict, in registration order (one per blocking check)."""
    inputs = GateInputs(challenger, champion, churn)
    return [spec(inputs, settings) for spec in GATES]


def decision(gates: list[Gate]) -> tuple[bool, str]:
    """(promote?, reason) in one line for tags, metadata and alerts."""
    failed = [g for g in gates if not g.passed]
    if failed:
        return False, "blocked by " + "; ".join(f"{g.name}: {g.reason}" for g in failed)
    return True, "all gates passed: " + "; ".join(g.reason for g in gates)
