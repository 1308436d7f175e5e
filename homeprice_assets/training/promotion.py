"""Promotion gates: pure decisions over validation metrics, so the rules can be read and tested alone."""

from __future__ import annotations

from dataclasses import dataclass

from homeprice_assets.training.settings import PromotionSettings


@dataclass(frozen=True)
class Gate:
    name: str  # also the asset check's name
    passed: bool
    reason: str
    figures: dict[str, float | str | None]


def evaluate_gates(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    churn: float | None,
    settings: PromotionSettings,
) -> list[Gate]:
    """Absolute gates (accuracy at all), relative gates (not worse than the champion) and churn.

    With no champion (the very first model) the relative and churn gates pass: only absolute gates apply.
    """
    mdape, ppe10 = challenger["mdape"], challenger["ppe10"]
    gates = [
        Gate(
            "absolute_accuracy",
            mdape <= settings.max_mdape and ppe10 >= settings.min_ppe10,
            f"challenger MdAPE {mdape:.2%} (max {settings.max_mdape:.2%}), "
            f"PPE10 {ppe10:.1%} (min {settings.min_ppe10:.1%})",
            {
                "mdape": mdape,
                "max_mdape": settings.max_mdape,
                "ppe10": ppe10,
                "min_ppe10": settings.min_ppe10,
            },
        )
    ]
    if champion is None:
        gates.append(Gate("not_worse_than_champion", True, "no champion yet: first model", {"mdape": mdape}))
    else:
        limit = champion["mdape"] * (1 + settings.max_mdape_increase)
        gates.append(
            Gate(
                "not_worse_than_champion",
                mdape <= limit,
                f"challenger MdAPE {mdape:.2%} vs champion {champion['mdape']:.2%} "
                f"(limit {limit:.2%}, margin {settings.max_mdape_increase:.0%})",
                {"mdape": mdape, "champion_mdape": champion["mdape"], "limit": limit},
            )
        )
    if settings.max_churn is None or churn is None:
        gates.append(Gate("valuation_churn", True, "churn gate off or no champion", {"churn": churn}))
    else:
        gates.append(
            Gate(
                "valuation_churn",
                churn <= settings.max_churn,
                f"{churn:.1%} of homes move >10% vs the champion (max {settings.max_churn:.0%})",
                {"churn": churn, "max_churn": settings.max_churn},
            )
        )
    return gates


def decision(gates: list[Gate]) -> tuple[bool, str]:
    """(promote?, reason) in one line for tags, metadata and alerts."""
    failed = [g for g in gates if not g.passed]
    if failed:
        return False, "blocked by " + "; ".join(f"{g.name}: {g.reason}" for g in failed)
    return True, "all gates passed: " + "; ".join(g.reason for g in gates)
