"""Unpickle shim for the removed comparable-sales feature (it measured no gain and is no longer fitted).

A model pickled by an older release with comparables switched on references
``homeprice_assets.training.comparables.Comparables``; this class keeps such a model loadable and
predicting (``HomePriceModel`` asks it for ``comp_log_ppsf`` / ``comp_dist_km``). Models of the default
configuration pickled ``comparables = None`` and never touch this module.
Delete once no registered version was trained with ``comps_k`` > 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.neighbors import KDTree

KM_PER_DEG_LAT = 111.2
COMPS_FEATURES: tuple[str, ...] = ("comp_log_ppsf", "comp_dist_km")


def _xy(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    return np.column_stack([lat * KM_PER_DEG_LAT, lon * KM_PER_DEG_LAT * np.cos(np.radians(47.6))])


@dataclass
class Comparables:
    k: int = 16
    tree: KDTree | None = None
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def fit(self, lat: np.ndarray, lon: np.ndarray, values: np.ndarray) -> Comparables:
        xy = _xy(lat, lon)
        ok = np.isfinite(xy).all(axis=1) & np.isfinite(values)
        self.tree = KDTree(xy[ok])
        self.values = np.asarray(values, dtype=float)[ok]
        self._pool_index = np.flatnonzero(ok)  # pool row -> caller's row, for leave-self-out
        return self

    def transform(self, lat: np.ndarray, lon: np.ndarray, self_rows: np.ndarray | None = None) -> np.ndarray:
        """(n, 2) array of ``COMPS_FEATURES``; ``self_rows`` (caller row numbers in the pool) are left out."""
        xy = _xy(lat, lon)
        out = np.full((len(xy), 2), np.nan)
        ok = np.isfinite(xy).all(axis=1)
        if self.tree is None or not ok.any() or len(self.values) <= self.k:
            return out
        extra = 1 if self_rows is not None else 0
        dist, idx = self.tree.query(xy[ok], k=self.k + extra)
        if self_rows is not None:
            own = np.asarray(self_rows)[ok]
            is_self = self._pool_index[idx] == own[:, None]
            # drop the row itself when found, else the farthest neighbour: k comparables either way
            drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), self.k)
            keep = np.ones_like(idx, dtype=bool)
            keep[np.arange(len(idx)), drop] = False
            idx = idx[keep].reshape(len(idx), self.k)
            dist = dist[keep].reshape(len(dist), self.k)
        out[ok, 0] = self.values[idx].mean(axis=1)
        out[ok, 1] = dist.mean(axis=1)
        return out
