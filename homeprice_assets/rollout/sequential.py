"""An always-valid sequential test and a bootstrap interval: is the candidate's error below the champion's?

A sequential sign test in mSPRT form (Robbins' normal mixture; Johari, Pekelis, Walsh 2017). Each pair
(shadow: the same home priced by both; A/B: the i-th sold home of each arm, in sale order) gives
``s_i = sign(error(candidate)_i - error(champion)_i)`` in {-1, 0, +1}. Under "neither is more accurate"
the signs have mean 0 and, being bounded by 1, are 1-sub-Gaussian, so with ``S_n = s_1 + ... + s_n``

    Lambda_n = (1 + n tau^2) ** -0.5 * exp(tau^2 S_n^2 / (2 (1 + n tau^2)))

is a nonnegative supermartingale (a N(0, tau^2) mixture of exp(l S_n - n l^2 / 2)), and by Ville's
inequality P(Lambda_n ever reaches 1/alpha) <= alpha: exact, with no variance to estimate, however often the
evidence is looked at (after every ground-truth month). Signs also make one badly priced mansion count as
one pair, not as the whole verdict. The sign of ``S_n`` when the boundary is first reached says which model
is better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SequentialResult:
    n: int
    log_lambda: np.ndarray  # the evidence after each difference (log scale)
    boundary: float  # log(1 / alpha)
    crossed_at: int | None  # 1-based count of differences when the boundary was first reached
    direction: int  # -1: candidate better, +1: candidate worse, 0: not crossed
    mean_difference: float

    @property
    def statistic(self) -> float:
        """The evidence now (log Lambda_n)."""
        return float(self.log_lambda[-1]) if self.n else 0.0


def msprt(differences: np.ndarray, alpha: float, tau2: float) -> SequentialResult:
    """The evidence path of the sequential sign test over ``differences`` (candidate - champion error)."""
    d = np.asarray(differences, dtype=float)
    n = len(d)
    boundary = float(np.log(1 / alpha))
    if n == 0:
        return SequentialResult(0, np.zeros(0), boundary, None, 0, 0.0)
    k = np.arange(1, n + 1, dtype=float)
    signs = np.cumsum(np.sign(d))
    log_lambda = -0.5 * np.log1p(k * tau2) + tau2 * signs**2 / (2 * (1 + k * tau2))
    over = np.flatnonzero(log_lambda >= boundary)
    crossed = int(over[0]) + 1 if len(over) else None
    direction = 0 if crossed is None else (-1 if signs[crossed - 1] < 0 else 1)
    return SequentialResult(n, log_lambda, boundary, crossed, direction, float(d.mean()))


def bootstrap_mdape_difference(
    ape_candidate: np.ndarray,
    ape_champion: np.ndarray,
    paired: bool,
    samples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of MdAPE(candidate) - MdAPE(champion): pairs resampled together (shadow), or
    each arm on its own (A/B). Below zero: the candidate is more accurate."""
    a, b = np.asarray(ape_candidate, float), np.asarray(ape_champion, float)
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    diffs = []
    step = max(1, 2_000_000 // max(len(a), len(b)))  # bounded memory: resample in blocks
    for start in range(0, samples, step):
        size = min(step, samples - start)
        ia = rng.integers(0, len(a), (size, len(a)))
        ib = ia if paired else rng.integers(0, len(b), (size, len(b)))
        diffs.append(np.median(a[ia], axis=1) - np.median(b[ib], axis=1))
    all_diffs = np.concatenate(diffs)
    tail = (1 - level) / 2
    return float(np.quantile(all_diffs, tail)), float(np.quantile(all_diffs, 1 - tail))
