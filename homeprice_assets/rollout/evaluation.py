"""Pure rollout decisions over ground truth: the candidate vs the champion, and the live champion's health.

- ``compare``: pairs the candidate's and the champion's errors (shadow: the same homes; A/B: the i-th home
  of each arm, in sale order), runs the always-valid mSPRT and a bootstrap interval of the MdAPE difference,
  and decides ``promote``, ``stop``, ``continue`` or ``inconclusive`` (fewer than ``min_pairs``: never a
  decision, whatever the evidence says).
- ``champion_health``: the live champion against the rollback rules (MdAPE vs its offline validation
  figure, PPE10 floor, interval coverage band, the service's 5xx rate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from homeprice_assets.rollout.groundtruth import live_metrics
from homeprice_assets.rollout.sequential import SequentialResult, bootstrap_mdape_difference, msprt
from homeprice_assets.rollout.settings import RollbackRules, RolloutSettings
from homeprice_assets.rollout.state import RolloutState


@dataclass
class Comparison:
    mode: str
    candidate: str
    champion: str
    decision: str  # promote | stop | continue | inconclusive
    reason: str
    n_pairs: int
    n_candidate: int
    n_champion: int
    mdape_candidate: float | None
    mdape_champion: float | None
    mean_difference: float  # of absolute log errors, candidate - champion
    statistic: float  # log Lambda_n now
    boundary: float  # log(1 / alpha)
    crossed_at: int | None
    ci_low: float
    ci_high: float
    path: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def figures(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("path")
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}


def rollout_rows(rows: pd.DataFrame, state: RolloutState) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(candidate rows, champion rows) of the running rollout: valuations asked since it started."""
    if rows.empty or not state.active:
        return rows.iloc[0:0], rows.iloc[0:0]
    since = _naive_utc(pd.Timestamp(state.started_at)) if state.started_at else pd.Timestamp.min
    created = pd.to_datetime(rows["created_at"], utc=True).dt.tz_localize(None)
    recent = rows[created >= since]
    role = "shadow" if state.mode == "shadow" else "candidate"
    cand = recent[(recent["model_version"] == state.candidate) & (recent["model_role"] == role)]
    champ = recent[(recent["model_version"] == state.champion) & (recent["model_role"] == "champion")]
    return cand.sort_values(["sale_date", "sale_id"]), champ.sort_values(["sale_date", "sale_id"])


def _naive_utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_convert(None) if ts.tzinfo is not None else ts


def compare(rows: pd.DataFrame, state: RolloutState, settings: RolloutSettings) -> Comparison:
    """The candidate against the champion on ground truth since the rollout started."""
    cand, champ = rollout_rows(rows, state)
    paired = state.mode == "shadow"
    if paired:
        both = cand.merge(champ, on="sale_id", suffixes=("_c", "_h")).sort_values(["sale_date_c", "sale_id"])
        d = both["abs_log_error_c"].to_numpy() - both["abs_log_error_h"].to_numpy()
        ape_c, ape_h = both["ape_c"].to_numpy(), both["ape_h"].to_numpy()
    else:
        n = min(len(cand), len(champ))
        d = cand["abs_log_error"].to_numpy()[:n] - champ["abs_log_error"].to_numpy()[:n]
        ape_c, ape_h = cand["ape"].to_numpy(), champ["ape"].to_numpy()
    seq: SequentialResult = msprt(d, settings.alpha, settings.mixture_variance)
    low, high = bootstrap_mdape_difference(ape_c, ape_h, paired, settings.bootstrap_samples)
    md_c = float(np.median(ape_c)) if len(ape_c) else None
    md_h = float(np.median(ape_h)) if len(ape_h) else None
    figures = (
        f"{seq.n} pairs; MdAPE candidate {_pct(md_c)} vs champion {_pct(md_h)}; "
        f"log evidence {seq.statistic:.2f} (boundary {seq.boundary:.2f})"
    )
    if seq.n < settings.min_pairs:
        decision, why = "inconclusive", f"too few pairs ({seq.n} < min_pairs {settings.min_pairs})"
    elif seq.crossed_at is None:
        decision, why = "continue", "no significant difference yet"
    elif seq.direction < 0:
        decision, why = "promote", f"candidate more accurate (boundary crossed at {seq.crossed_at} pairs)"
    else:
        decision, why = "stop", f"candidate less accurate (boundary crossed at {seq.crossed_at} pairs)"
    return Comparison(
        mode=str(state.mode),
        candidate=str(state.candidate),
        champion=str(state.champion),
        decision=decision,
        reason=f"{why}: {figures}",
        n_pairs=seq.n,
        n_candidate=len(cand),
        n_champion=len(champ),
        mdape_candidate=md_c,
        mdape_champion=md_h,
        mean_difference=seq.mean_difference,
        statistic=seq.statistic,
        boundary=seq.boundary,
        crossed_at=seq.crossed_at,
        ci_low=low,
        ci_high=high,
        path=seq.log_lambda,
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


@dataclass
class Health:
    champion: str
    month: str | None
    judged: bool
    breaches: list[str]
    metrics: dict[str, float]
    offline_mdape: float | None
    error_rate_5xx: float | None

    @property
    def broken(self) -> bool:
        return self.judged and bool(self.breaches)

    def figures(self) -> dict[str, Any]:
        return asdict(self) | {"broken": self.broken}


def champion_health(
    rows: pd.DataFrame,
    champion: str | None,
    offline_mdape: float | None,
    rules: RollbackRules,
    error_rate_5xx: float | None = None,
) -> Health:
    """The live champion on the newest ground-truth month it priced, against the rollback rules."""
    mine = (
        rows[(rows["model_version"] == champion) & (rows["model_role"] == "champion")] if len(rows) else rows
    )
    month = str(mine["sale_month"].max()) if len(mine) else None
    latest = mine[mine["sale_month"] == month] if month else mine
    metrics = live_metrics(latest)
    breaches: list[str] = []
    judged = metrics["n"] >= rules.min_sales
    if judged:
        if offline_mdape is not None and metrics["mdape"] > offline_mdape * (1 + rules.max_mdape_increase):
            factor = 1 + rules.max_mdape_increase
            breaches.append(f"live MdAPE {metrics['mdape']:.2%} > offline {offline_mdape:.2%} x {factor:g}")
        if metrics["ppe10"] < rules.min_ppe10:
            breaches.append(f"live PPE10 {metrics['ppe10']:.1%} < {rules.min_ppe10:.1%}")
        low, high = rules.coverage_band
        if not low <= metrics["coverage"] <= high:
            breaches.append(f"interval coverage {metrics['coverage']:.1%} outside [{low:.0%}, {high:.0%}]")
    if error_rate_5xx is not None and error_rate_5xx > rules.max_5xx_rate:
        judged = True
        breaches.append(f"5xx rate {error_rate_5xx:.2%} > {rules.max_5xx_rate:.2%}")
    return Health(str(champion), month, judged, breaches, metrics, offline_mdape, error_rate_5xx)


def error_rate_since(now: tuple[float, float] | None, before: tuple[float, float] | None) -> float | None:
    """Share of 5xx among the requests since the last evaluation, from (requests, 5xx) counters read then
    and now. The counters count since the service started: their totals would keep one old incident above
    the limit for every champion after it. Counters lower than before (a restart) count from zero; no
    request since: None (nothing to judge)."""
    if now is None:
        return None
    total, errors = now
    if before is not None and before[0] <= total and before[1] <= errors:
        total, errors = total - before[0], errors - before[1]
    return errors / total if total > 0 else None


def request_counts_from_metrics(text: str) -> tuple[float, float]:
    """(requests, 5xx responses) counted by the service, from its Prometheus ``/metrics`` text."""
    total = errors = 0.0
    for line in text.splitlines():
        if not line.startswith("bentoml_service_request_total{"):
            continue
        labels, _, value = line.rpartition(" ")
        try:
            count = float(value)
        except ValueError:
            continue
        total += count
        if 'http_response_code="5' in labels:
            errors += count
    return total, errors
