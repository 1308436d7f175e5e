"""One request's homes as the model's columns, plus what the prediction log needs, sliceable by row.

Both request forms (a list of ``Home`` and the columnar ``HomeColumns``) become a ``Batch``: A/B routing
takes row subsets of it, the shadow pricer concatenates several, and the log rows are built from it on
the log's writer thread (never on the request path).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from homeprice_assets.serving import predictor
from homeprice_assets.serving.holder import LoadedModel
from homeprice_assets.serving.schemas import Home, HomeColumns

OUTPUTS = ("price", "price_lower", "price_upper")


@dataclass(frozen=True)
class Batch:
    columns: dict[str, np.ndarray]
    parcel_ids: Sequence[str | None]
    locations: Sequence[str]
    ids: np.ndarray  # positions of these rows in the request (row i answers as request_id-i)
    json_of: Callable[[int], str]  # the request fields of the row at request position i, as JSON

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_homes(cls, homes: list[Home]) -> Batch:
        return cls(
            predictor.to_columns(homes),
            [h.parcel_id for h in homes],
            [h.location for h in homes],
            np.arange(len(homes)),
            cached(lambda i: homes[i].model_dump_json(exclude_none=True)),  # pydantic-core: cheapest
        )

    @classmethod
    def from_columns(cls, homes: HomeColumns) -> Batch:
        n = len(homes)
        fields = {k: v for k, v in homes.__dict__.items() if v is not None}

        def json_of(i: int) -> str:
            return json.dumps({k: v[i] for k, v in fields.items() if v[i] is not None}, default=str)

        return cls(
            homes.to_columns(), homes.parcel_id or [None] * n, homes.location, np.arange(n), cached(json_of)
        )

    def take(self, idx: np.ndarray) -> Batch:
        if len(idx) == len(self):
            return self
        return Batch(
            {k: v[idx] for k, v in self.columns.items()},
            [self.parcel_ids[i] for i in idx.tolist()],
            [self.locations[i] for i in idx.tolist()],
            self.ids[idx],
            self.json_of,
        )


def concat_columns(batches: Sequence[Batch]) -> dict[str, np.ndarray]:
    """The rows of several batches as one set of columns (a field absent from some is NaN/NaT there)."""
    if len(batches) == 1:
        return batches[0].columns
    keys = sorted({k for b in batches for k in b.columns})
    out = {}
    for key in keys:
        parts = []
        for b in batches:
            if key in b.columns:
                parts.append(b.columns[key])
            elif key == "sale_date":
                parts.append(np.full(len(b), np.datetime64("NaT"), dtype="datetime64[D]"))
            else:
                parts.append(np.full(len(b), np.nan))
        out[key] = np.concatenate(parts)
    return out


def outputs(out: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prices, lowers, uppers) as float arrays, from columns or a frame."""
    return tuple(np.asarray(out[c], dtype=float) for c in OUTPUTS)  # type: ignore[return-value]


def cached(json_of: Callable[[int], str]) -> Callable[[int], str]:
    """``json_of`` computed once per row: the champion's and the shadow's rows share the same string."""
    memo: dict[int, str] = {}

    def get(i: int) -> str:
        found = memo.get(i)
        if found is None:
            found = memo[i] = json_of(i)
        return found

    return get


def log_rows(
    request_id: str,
    model_name: str,
    model: LoadedModel,
    batch: Batch,
    prices: np.ndarray,
    lowers: np.ndarray,
    uppers: np.ndarray,
) -> list[dict]:
    """One prediction-log row per home, under the id the caller got (``request_id-i``)."""
    return [
        {
            "request_id": f"{request_id}-{i}",
            "model_name": model_name,
            "model_version": model.version,
            "model_role": model.role,
            "parcel_id": batch.parcel_ids[k],
            "location": batch.locations[k],
            "inputs": batch.json_of(i),
            "price": float(prices[k]),
            "price_lower": float(lowers[k]),
            "price_upper": float(uppers[k]),
        }
        for k, i in enumerate(batch.ids.tolist())
    ]
