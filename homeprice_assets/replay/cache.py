"""A fit cache shared by the policies of one replay: the same training data and settings fit once.

Every policy that retrains on month M trains on exactly the same rows with the same settings (LightGBM is
seeded), so the fitted model is the same whichever policy asked. The replay wraps the lifecycle's fit
(``training.assets.fit_price_model``) with this cache for its own process only; the ``price_model`` asset
still runs whole (MLflow run, registration, version by number). Each entry keeps the seconds the original fit
took, so a cache hit is reported as the compute it represents, never as free. Concurrent policy processes
wait on a per-key file lock instead of fitting the same model twice. Monthly updates of a policy's own
champion (``training.update``) depend on that champion, so they are timed and recorded, never shared.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class FitRecord:
    key: str
    hit: bool
    fit_seconds: float  # what the fit took when it was computed (also for a hit)
    train_end: str
    rows: int


def fit_key(training_set: pd.DataFrame, params: dict[str, Any] | None, **kwargs: Any) -> str:
    """Content hash of the training rows, the params and the fit's keyword settings."""
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(training_set, index=False).to_numpy().tobytes())
    digest.update(",".join(map(str, training_set.columns)).encode())
    settings = {k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in kwargs.items()}
    digest.update(json.dumps([params or {}, settings], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


class FitCache:
    """On-disk cache of fitted models by ``fit_key``; ``records`` lists this process's fits in order."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.records: list[FitRecord] = []

    def fit(
        self, fit: Callable[..., Any], training_set: pd.DataFrame, params: Any = None, **kwargs: Any
    ) -> Any:
        key = fit_key(training_set, params, **kwargs)
        path, meta = self.root / f"{key}.pkl", self.root / f"{key}.json"
        train_end = str(training_set["sale_month"].max()) if "sale_month" in training_set else ""
        with open(self.root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another policy fitting the same model: wait for it
            try:
                if path.is_file() and meta.is_file():
                    model = pickle.loads(path.read_bytes())
                    seconds = float(json.loads(meta.read_text())["fit_seconds"])
                    hit = True
                else:
                    started = time.perf_counter()
                    model = fit(training_set, params, **kwargs)
                    seconds = time.perf_counter() - started
                    path.write_bytes(pickle.dumps(model))
                    meta.write_text(json.dumps({"fit_seconds": seconds, "train_end": train_end}))
                    hit = False
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self.records.append(FitRecord(key, hit, seconds, train_end, len(training_set)))
        return model

    @contextlib.contextmanager
    def installed(self) -> Iterator[FitCache]:
        """Route the lifecycle's fit through this cache while the block runs (this process only)."""
        from homeprice_assets.training import assets as training_assets

        original, original_update = training_assets.fit_price_model, training_assets.update_price_model

        def cached(training_set: pd.DataFrame, params: Any = None, **kwargs: Any) -> Any:
            return self.fit(original, training_set, params, **kwargs)

        def update(champion: Any, training_set: pd.DataFrame, *args: Any, **kwargs: Any) -> Any:
            # An update depends on the policy's own champion, so it is never shared: timed and recorded only.
            started = time.perf_counter()
            model = original_update(champion, training_set, *args, **kwargs)
            train_end = str(training_set["sale_month"].max()) if "sale_month" in training_set else ""
            key = f"update:{kwargs.get('base_version')}:{train_end}"
            self.records.append(
                FitRecord(key, False, time.perf_counter() - started, train_end, len(training_set))
            )
            return model

        training_assets.fit_price_model, training_assets.update_price_model = cached, update
        try:
            yield self
        finally:
            training_assets.fit_price_model, training_assets.update_price_model = original, original_update
