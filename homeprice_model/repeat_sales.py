"""Repeat sales: a parcel's previous sale, carried forward by the market index, as a feature.

What a home sold for before is the best single fact about its value that the hedonic fields miss (the
kitchen, the view, the street). The feature is the previous sale's log price *minus the market index at
that month* (``prev_sale_resid``): the parcel's quality-adjusted level, in the units the trees learn
(log price minus the index), so carrying it to any later month is implicit. ``months_since_prev_sale``
tells the trees how stale it is (a flip a few months apart is not a resale ten years on).

No leakage: a training sale sees only the same parcel's sales in strictly earlier months
(``previous_sales``); a served model keeps the last sale of each parcel in its training data
(``LastSales``) and uses it only for homes valued in a later month.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

REPEAT_FEATURES: tuple[str, ...] = ("prev_sale_resid", "months_since_prev_sale")
PARCEL_INPUT = "parcel_id"
_SMALL = 64


def parcel_keys(values: Any, n: int) -> np.ndarray:
    """Parcel ids as text (object array); missing -> None."""
    if values is None:
        return np.full(n, None, dtype=object)
    arr = np.atleast_1d(np.asarray(values, dtype=object))
    missing = pd.isna(arr)
    out = arr.astype(str).astype(object)
    out[missing] = None
    return out


def previous_sales(parcel_ids: Any, months: Any, log_prices: Any) -> tuple[np.ndarray, np.ndarray]:
    """For each row: (month, log price) of the same parcel's latest sale in a strictly earlier month.

    NaN where the parcel is unknown or sold first here. Several sales of a parcel in one month count as
    one (the last row of the month), and none of them sees another of the same month.
    """
    months = np.asarray(months, dtype=float)
    keys = parcel_keys(parcel_ids, len(months))
    frame = pd.DataFrame(
        {
            "parcel": keys,
            "month": months,
            "lp": np.asarray(log_prices, dtype=float),
            "row": np.arange(len(months)),
        }
    )
    known = frame[frame["parcel"].notna() & frame["month"].notna()]
    per_month = known.sort_values(["parcel", "month", "row"]).groupby(["parcel", "month"], sort=True).last()
    per_month = per_month.reset_index()
    grouped = per_month.groupby("parcel", sort=False)
    per_month["prev_month"] = grouped["month"].shift(1)
    per_month["prev_lp"] = grouped["lp"].shift(1)
    joined = frame.merge(
        per_month[["parcel", "month", "prev_month", "prev_lp"]], on=["parcel", "month"], how="left"
    ).sort_values("row")
    return joined["prev_month"].to_numpy(dtype=float), joined["prev_lp"].to_numpy(dtype=float)


class LastSales:
    """Each parcel's last sale (month, log price) in a model's training data: what serving looks up."""

    def __init__(self, parcels: np.ndarray, months: np.ndarray, log_prices: np.ndarray) -> None:
        self.parcels = np.asarray(parcels, dtype=object)
        self.months = np.asarray(months, dtype=float)
        self.log_prices = np.asarray(log_prices, dtype=float)
        self._lookup: dict[str, int] | None = None
        self._index: pd.Index | None = None

    @classmethod
    def from_sales(cls, parcel_ids: Any, months: Any, log_prices: Any) -> LastSales:
        months = np.asarray(months, dtype=float)
        frame = pd.DataFrame(
            {
                "parcel": parcel_keys(parcel_ids, len(months)),
                "month": months,
                "lp": np.asarray(log_prices, dtype=float),
                "row": np.arange(len(months)),
            }
        )
        frame = frame[frame["parcel"].notna() & frame["month"].notna()]
        last = frame.sort_values(["parcel", "month", "row"]).groupby("parcel", sort=True).last()
        return cls(last.index.to_numpy(dtype=object), last["month"].to_numpy(), last["lp"].to_numpy())

    def __len__(self) -> int:
        return len(self.parcels)

    def __getstate__(self) -> dict[str, Any]:
        return {"parcels": self.parcels, "months": self.months, "log_prices": self.log_prices}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["parcels"], state["months"], state["log_prices"])  # type: ignore[misc]

    def lookup(self, parcel_ids: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(month, log price) of each parcel's last sale; NaN for unknown or missing parcels."""
        keys = parcel_keys(parcel_ids, n)
        if n <= _SMALL:
            table = self._lookup
            if table is None:
                table = self._lookup = {p: i for i, p in enumerate(self.parcels)}
            pos = np.array([table.get(k, -1) if k is not None else -1 for k in keys], dtype=np.int64)
        else:
            if self._index is None:
                self._index = pd.Index(self.parcels)
            pos = self._index.get_indexer(keys)
        found = pos >= 0
        months = np.full(n, np.nan)
        log_prices = np.full(n, np.nan)
        months[found] = self.months[pos[found]]
        log_prices[found] = self.log_prices[pos[found]]
        return months, log_prices


def repeat_features(
    prev_months: np.ndarray,
    prev_log_prices: np.ndarray,
    months: np.ndarray,
    locations: np.ndarray,
    index: Any,
) -> dict[str, np.ndarray]:
    """``REPEAT_FEATURES`` for homes valued at ``months``; only previous sales in earlier months count."""
    months = np.asarray(months, dtype=float)
    prev_months = np.asarray(prev_months, dtype=float)
    n = len(months)
    resid = np.full(n, np.nan)
    gap = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(prev_months) & np.isfinite(months) & (prev_months < months)
    if ok.any():
        level = index.value(np.asarray(locations)[ok], prev_months[ok]) if index is not None else 0.0
        resid[ok] = np.asarray(prev_log_prices, dtype=float)[ok] - level
        gap[ok] = months[ok] - prev_months[ok]
    return {"prev_sale_resid": resid, "months_since_prev_sale": gap}
