"""One request's homes as the model's columns, plus what the prediction log needs, sliceable by row.

Both request forms (a list of ``Home`` and the columnar ``HomeColumns``) become a ``Batch``: A/B routing
takes row subsets of it, the shadow pricer concatenates several, and the log rows are built from it on
the log's writer thread (never on the request path).

A ``predict_batch`` body of up to 100,000 homes is read column by column (``homes_from_json``, through
``BatchInput``) and answered as text (``predictions_json``): building and serializing a ``Home`` and a
``Prediction`` per row cost more than a tenth of the request (bench/serving_bench.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import bentoml
import numpy as np
import pydantic_core
from pydantic import Field

from homeprice_assets.serving import predictor
from homeprice_assets.serving.holder import LoadedModel
from homeprice_assets.serving.schemas import LIMITS, MAX_BATCH_ROWS, MAX_DATE, MIN_DATE, Home, HomeColumns

if TYPE_CHECKING:
    from _bentoml_impl.serde import Serde
    from starlette.requests import Request

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


# --------------------------------------------------------------------------- the columnar request path
# Home's fields in declaration order (the order pydantic writes them in), and how each is checked below.
_FIELDS = tuple(Home.model_fields)
_NUMBERS = frozenset({int, float, type(None)})
_INTEGERS = frozenset({int, type(None)})
_TEXT = frozenset({str, type(None)})


def _numbers(values: list[Any], lo: float, hi: float, integers: bool = False) -> np.ndarray | None:
    """float64 (None -> NaN) if every value is a JSON number (or null) within ``lo..hi``; else None."""
    if not set(map(type, values)) <= (_INTEGERS if integers else _NUMBERS):
        return None  # text, booleans, lists ...: pydantic decides (it coerces some, refuses others)
    try:
        arr = np.array(values, dtype=np.float64)
    except OverflowError:
        return None
    nan = np.isnan(arr)
    if int(nan.sum()) != values.count(None) or np.isinf(arr).any():
        return None  # NaN or Infinity written in the JSON: refused by pydantic as "not a finite number"
    with np.errstate(invalid="ignore"):
        if ((arr < lo) | (arr > hi)).any():
            return None
    return arr


def _lengths_within(values: list[str], lo: int, hi: int) -> bool:
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    return bool(len(lengths) == 0 or (lengths.min() >= lo and lengths.max() <= hi))


def _dates(values: list[Any]) -> np.ndarray | None:
    """datetime64[D] (None -> NaT) if every value is an ISO date (YYYY-MM-DD) within the limits."""
    if not set(map(type, values)) <= _TEXT:
        return None
    given = [v for v in values if v is not None]
    if not given:
        return np.full(len(values), np.datetime64("NaT"), dtype="datetime64[D]")
    if not all(len(v) == 10 for v in given):
        return None
    try:
        parsed = np.array(given, dtype="datetime64[D]")
    except ValueError:
        return None
    if (parsed.astype(str) != np.array(given)).any():
        return None  # not written as YYYY-MM-DD
    if (parsed < np.datetime64(MIN_DATE)).any() or (parsed > np.datetime64(MAX_DATE)).any():
        return None
    if len(given) == len(values):
        return parsed
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[D]")
    out[np.array([v is not None for v in values])] = parsed
    return out


def homes_from_json(body: bytes) -> Batch | None:
    """The batch of a ``{"homes": [...]}`` body, checked column by column; None if pydantic must decide.

    Takes the common case without building a ``Home`` per row: every field a JSON number, string or null
    of the declared kind and within ``Home``'s limits. Anything else (a wrong type, a value out of range,
    a missing or unknown field, text pydantic would coerce) returns None, and ``list[Home]`` validation
    then accepts or refuses it with its own messages (the field and the row). The columns equal
    ``predictor.to_columns`` of the validated homes.
    """
    try:
        data = pydantic_core.from_json(body or b"{}")
    except ValueError:
        return None
    if not isinstance(data, dict) or data.keys() != {"homes"} or not isinstance(data["homes"], list):
        return None
    rows: list[Any] = data["homes"]
    n = len(rows)
    if not 1 <= n <= MAX_BATCH_ROWS or set(map(type, rows)) != {dict}:
        return None
    if not set().union(*rows) <= set(_FIELDS):
        return None  # an unknown field: refused by pydantic (extra="forbid"), which names it
    values = {name: [r.get(name) for r in rows] for name in _FIELDS}
    locations, parcels = values["location"], values["parcel_id"]
    if set(map(type, locations)) != {str} or not _lengths_within(locations, 1, 64):
        return None
    if not set(map(type, parcels)) <= _TEXT:
        return None
    given_parcels = [p for p in parcels if p is not None]
    if not _lengths_within(given_parcels, 0, 64):
        return None
    columns: dict[str, np.ndarray] = {"location": np.array(locations, dtype=object)}
    if None in values["living_sf"]:
        return None  # required
    for name, (lo, hi) in LIMITS.items():
        arr = _numbers(values[name], lo, hi, integers=name == "waterfront")
        if arr is None:
            return None
        columns[name] = arr
    dates = _dates(values["sale_date"])
    if dates is None:
        return None
    columns["sale_date"] = dates
    if given_parcels:
        columns["parcel_id"] = np.array(parcels, dtype=object)
    return Batch(columns, parcels, locations, np.arange(n), cached(lambda i: _home_json(rows[i])))


def _home_json(row: dict[str, Any]) -> str:
    """One row's request fields as JSON for the prediction log (nulls left out, as for a ``Home``)."""
    if None in row.values():
        row = {k: v for k, v in row.items() if v is not None}
    return _ENCODE(row)


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # one encoder, not one per row


class Input(bentoml.IODescriptor):
    # ``predict_batch``'s input, ``homes: list[Home]``, with a columnar fast path for JSON bodies: a body
    # ``homes_from_json`` takes arrives as a ``Batch`` instead of 100,000 ``Home`` objects; every other
    # body is validated by pydantic as before (same errors, same messages). Named ``Input`` and without a
    # docstring, so that its schema, its OpenAPI component (``predict_batch__Input``) and its validation
    # errors ("... validation error for Input") are those BentoML makes from the endpoint's signature.

    homes: Annotated[list[Home], Field(min_length=1, max_length=MAX_BATCH_ROWS)]

    @classmethod
    async def from_http_request(cls, request: Request, serde: Serde) -> Input:
        if serde.media_type == "application/json":
            batch = homes_from_json(await request.body())
            if batch is not None:
                return cls.model_construct(homes=batch)  # type: ignore[arg-type]
        return await super().from_http_request(request, serde)  # type: ignore[return-value]


BatchInput = Input


def predictions_json(
    request_id: str,
    prices: np.ndarray,
    lowers: np.ndarray,
    uppers: np.ndarray,
    models: np.ndarray,
    model_version: str,
) -> bytes | None:
    """``BatchPrediction``'s JSON for a priced batch, written row by row as text: no ``Prediction`` per row.

    Field order and values as pydantic writes them (floats as shortest round-trip text). None if a value
    is not finite (pydantic writes those as null; let it).
    """
    if not (np.isfinite(prices).all() and np.isfinite(lowers).all() and np.isfinite(uppers).all()):
        return None
    fixed: dict[int, str] = {}  # per model: its interval level, version and role, and the id's prefix
    for model in {id(m): m for m in models}.values():
        fixed[id(model)] = (
            f'"interval_level":{float(model.inner.interval_level)!r},"model_version":'
            f'{json.dumps(model.version)},"model_role":{json.dumps(model.role)},"request_id":'
            f"{json.dumps(request_id)[:-1]}-"
        )
    rows = ",".join(
        [
            f'{{"price":{p!r},"price_lower":{lo!r},"price_upper":{hi!r},{fixed[id(m)]}{i}"}}'
            for i, (p, lo, hi, m) in enumerate(
                zip(prices.tolist(), lowers.tolist(), uppers.tolist(), models.tolist(), strict=True)
            )
        ]
    )
    return (
        f'{{"predictions":[{rows}],"rows":{len(prices)},"model_version":{json.dumps(model_version)}}}'
    ).encode()
