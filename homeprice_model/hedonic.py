"""A fixed hedonic offset under the trees: ``log price = index + hedonic(x) + trees(x)``.

Trees approximate a smooth, strong effect (size, grade) by steps and flatten it at the extremes; a linear
hedonic part (with squares of size, lot and grade, as in the market index) taken off their target leaves
them the bends and interactions. Forward MdAPE 2015 / 2016, mean of seeds 7-9: 8.41 / 8.53% -> 8.35 /
8.37%, PPE10 +0.4 / +0.8 points (bench/forward_bench.py). Fitted by ``homeprice_assets.training.model``
(``hedonic_offset``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

_FEW = 16  # up to this many rows, ``value`` works on Python floats (one home: a few microseconds)


@dataclass
class HedonicOffset:
    """``value(features)``: ``coef`` times the standardised ``columns`` (and the squares of ``curved``).

    Missing values count as the training median; the offset averages zero over the rows it was fit on.
    """

    columns: tuple[str, ...]
    median: np.ndarray  # per column, in input units
    mean: np.ndarray  # per column, for standardising
    scale: np.ndarray  # per column, for standardising
    curved: tuple[int, ...]  # positions in ``columns`` that also enter squared
    coef: np.ndarray  # len(columns) linear, then len(curved) squared coefficients
    intercept: float  # minus the training mean of the linear predictor

    _terms: tuple[list[tuple[float, float, float, float]], list[tuple[int, float]]] | None = None  # cache

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_terms"}

    def value(self, features: Mapping[str, Any]) -> np.ndarray:
        """Log-price offset for each row of ``features`` (a feature table or feature arrays)."""
        arrays = [features[c] for c in self.columns]
        arrays = [a if isinstance(a, np.ndarray) else np.asarray(a, dtype=float) for a in arrays]
        if len(arrays[0]) <= _FEW:
            return np.array([self._value_one([float(a[r]) for a in arrays]) for r in range(len(arrays[0]))])
        z = self._standardised(arrays)
        k = len(self.columns)
        return z @ self.coef[:k] + z[:, list(self.curved)] ** 2 @ self.coef[k:] + self.intercept

    def contributions(self, features: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], float]:
        """``value`` split by column: each column's linear term plus its centred square, and a constant.

        They sum to ``value`` exactly, and each column's share averages zero over the rows the offset was fit
        on (standardised there: mean 0, variance 1), as a linear model's SHAP values do. Explanations add
        them to the trees' SHAP values of the same features, so a home's size still shows as a driver of
        its price when the offset, not the trees, carries most of it.
        """
        z = self._standardised([features[c] for c in self.columns])
        k = len(self.columns)
        parts = {c: z[:, i] * self.coef[i] for i, c in enumerate(self.columns)}
        constant = self.intercept
        for j, i in enumerate(self.curved):
            square = self.coef[k + j]
            parts[self.columns[i]] = parts[self.columns[i]] + square * (z[:, i] ** 2 - 1.0)
            constant += square
        return parts, float(constant)

    def _standardised(self, arrays: list[Any]) -> np.ndarray:
        """One row per home, one column per ``columns``: missing values as the median, then standardised."""
        h = np.column_stack([np.asarray(a, dtype=float) for a in arrays])
        return (np.where(np.isnan(h), self.median, h) - self.mean) / self.scale

    def _value_one(self, row: list[float]) -> float:
        """``value`` of one row on Python floats (8 us against 32 us through NumPy, measured on one home)."""
        if self._terms is None:
            k = len(self.columns)
            linear = list(
                zip(
                    self.median.tolist(),
                    self.mean.tolist(),
                    self.scale.tolist(),
                    self.coef[:k].tolist(),
                    strict=True,
                )
            )
            self._terms = (linear, list(zip(self.curved, self.coef[k:].tolist(), strict=True)))
        linear, squared = self._terms
        total = self.intercept
        z = []
        for v, (median, mean, scale, coef) in zip(row, linear, strict=True):
            zi = ((median if math.isnan(v) else v) - mean) / scale
            z.append(zi)
            total += coef * zi
        for i, coef in squared:
            total += coef * z[i] * z[i]
        return total
