"""homeprice prediction service (BentoML 1.4).

Run from the repository:   bentoml serve bento.service:HomePrice --port 3001
Follows the registry's rollout state by default (``HOMEPRICE_SERVING_MODE=follow``): the ``champion``
answers; during a rollout the ``candidate`` prices every home off the request path (``shadow``) or answers
a sticky share of homes (``ab``, by a hash of ``parcel_id`` or the ``X-Homeprice-Client`` header); a
promotion, a flip of mode or weight and a rollback swap without dropping a request. A built Bento defaults
to ``pinned``: the model baked into it.
Every prediction is logged (``HOMEPRICE_PREDICTION_LOG_URL``, SQLite under the project home by default).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
from bentoml.exceptions import BadInput, ServiceUnavailable
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from homeprice_assets.config import load_config, mlflow_tracking_uri
from homeprice_assets.resources.registry import Registry, registered_model_name
from homeprice_assets.rollout.assignment import in_candidate_arm
from homeprice_assets.serving import predictor
from homeprice_assets.serving.batch import Batch, BatchInput, log_rows, outputs, predictions_json
from homeprice_assets.serving.fastpath import FastApi
from homeprice_assets.serving.holder import LoadedModel, RolloutFollower, Serving, serving_model
from homeprice_assets.serving.middleware import JsonOnly
from homeprice_assets.serving.predlog import PredictionLog
from homeprice_assets.serving.schemas import (
    MAX_BATCH_ROWS,
    BatchPrediction,
    Explanation,
    Home,
    HomeColumns,
    LocationCount,
    Prediction,
)
from homeprice_assets.serving.shadow import ShadowJob, ShadowPricer

STATIC = Path(__file__).resolve().parent / "static"
# Inside a built Bento this file sits at <bento>/src/bento/service.py, next to <bento>/bento.yaml.
BUILT_BENTO = Path(__file__).resolve().parents[2] / "bento.yaml"


def _baked_model(model_name: str) -> str:
    """The model tag baked into this Bento (its bento.yaml), else ``$HOMEPRICE_BENTO_MODEL`` or latest."""
    if BUILT_BENTO.is_file():
        import yaml

        models = yaml.safe_load(BUILT_BENTO.read_text()).get("models") or []
        if models:
            return str(models[0]["tag"])
    return os.environ.get("HOMEPRICE_BENTO_MODEL", f"{model_name}:latest")


DEFAULT_MODE = "pinned" if BUILT_BENTO.is_file() else "follow"
ROLE = "champion"
CLIENT_KEY_HEADER = "x-homeprice-client"  # the A/B key for homes sent without a parcel_id

PREDICTIONS = bentoml.metrics.Counter(
    name="homeprice_predictions_total",
    documentation="Homes priced, by endpoint, model version and role (champion | candidate | shadow)",
    labelnames=["endpoint", "model_version", "role"],
)
PRICES = bentoml.metrics.Histogram(
    name="homeprice_predicted_price_dollars",
    documentation="Distribution of predicted prices",
    buckets=(1e5, 2e5, 3e5, 4e5, 5e5, 6e5, 7.5e5, 1e6, 1.5e6, 2e6, 3e6, 5e6, float("inf")),
)
MODEL_INFO = bentoml.metrics.Gauge(
    name="homeprice_model_loaded",
    documentation="1 for the model version serving each role",
    labelnames=["role", "model_version"],
)
ROLLOUT = bentoml.metrics.Gauge(
    name="homeprice_rollout_weight",
    documentation="Share of homes the candidate answers (ab), 1 for shadow, 0 with no rollout",
    labelnames=["mode"],
)
ERRORS = bentoml.metrics.Counter(
    name="homeprice_request_errors_total",
    documentation="Refused or failed requests",
    labelnames=["endpoint", "kind"],
)
# Live accuracy on closed sales, per model version: computed by the rollout_evaluation asset, carried by
# the registry (rollout.state.TAG_LIVE) and exported here: one Prometheus job sees serving and ground truth.
LIVE = {
    "mdape": bentoml.metrics.Gauge(
        name="homeprice_live_mdape",
        documentation="Median absolute % error of logged valuations whose sale has since closed",
        labelnames=["model_version"],
    ),
    "ppe10": bentoml.metrics.Gauge(
        name="homeprice_live_ppe10",
        documentation="Share of those valuations within 10% of the sale price",
        labelnames=["model_version"],
    ),
    "coverage": bentoml.metrics.Gauge(
        name="homeprice_live_coverage",
        documentation="Share of those sales inside the valuation's interval",
        labelnames=["model_version"],
    ),
    "n": bentoml.metrics.Gauge(
        name="homeprice_live_matched_sales",
        documentation="How many closed sales the live figures are computed on",
        labelnames=["model_version"],
    ),
}
POLL_ERRORS = bentoml.metrics.Counter(
    name="homeprice_registry_poll_errors_total",
    documentation="Registry polls or model loads that failed (the loaded model keeps serving)",
)


@functools.lru_cache(maxsize=1024)
def _predictions(endpoint: str, version: str, role: str) -> Any:
    """``PREDICTIONS``'s child for these labels: ``labels()`` takes a lock and a lookup on every call (a
    percent of a one-home request); the child it returns for the same labels is always the same object."""
    return PREDICTIONS.labels(endpoint=endpoint, model_version=version, role=role)


LOG_FAILURES = bentoml.metrics.Counter(
    name="homeprice_prediction_log_failures_total", documentation="Prediction rows that could not be logged"
)
SHADOW_FAILURES = bentoml.metrics.Counter(
    name="homeprice_shadow_failures_total", documentation="Homes the shadow candidate could not price"
)


class ColumnPredictions(BaseModel):
    """Prices for a columnar batch, one list per output (row ``i``'s request id is ``request_id-i``)."""

    price: list[float]
    price_lower: list[float]
    price_upper: list[float]
    model_version: list[str]
    model_role: list[str]
    interval_level: float
    request_id: str
    rows: int


@dataclass
class Priced:
    """One request's answers: per row the price, interval and the model that made them."""

    request_id: str
    champion: LoadedModel
    prices: np.ndarray
    lowers: np.ndarray
    uppers: np.ndarray
    models: np.ndarray  # LoadedModel per row

    def predictions(self) -> list[Prediction]:
        # Built without re-validation: the values come straight from the model (100k rows in a batch).
        return [
            Prediction.model_construct(
                price=float(p),
                price_lower=float(lo),
                price_upper=float(hi),
                interval_level=m.inner.interval_level,
                model_version=m.version,
                model_role=m.role,
                request_id=f"{self.request_id}-{i}",
            )
            for i, (p, lo, hi, m) in enumerate(
                zip(self.prices, self.lowers, self.uppers, self.models, strict=True)
            )
        ]


def _page(request: object) -> FileResponse:
    return FileResponse(STATIC / "index.html")


ui = Starlette(routes=[Route("/", _page)])


@bentoml.asgi_app(ui, path="/ui")
@bentoml.service(
    name="homeprice",
    traffic={"timeout": 120},
    http={"cors": {"enabled": False}},
    # No OpenTelemetry span per single-home request: with no exporter configured they go nowhere, and
    # making them cost about a quarter of a /predict request's CPU (bench/serving_bench.py). Every
    # prediction is in the prediction log and the metrics either way; a BENTOML_CONFIG that sets
    # tracing.excluded_urls (e.g. to []) overrides this default.
    tracing={"excluded_urls": ["/predict$"]},
)
class HomePrice:
    """Price homes with the champion model (and, in a rollout, the candidate): one, many, explained."""

    def __init__(self) -> None:
        # Everything from the environment is read here, at start, never at import: under
        # HOMEPRICE_PROFILE=production the profile's env file is applied and every store it names must answer.
        from homeprice_assets.profiles import SERVING_STORES, apply_profile, preflight

        if apply_profile(stores=SERVING_STORES).name == "production":
            preflight(SERVING_STORES)
        self.model_name = registered_model_name()
        self.page = load_config().serving  # currency and units the web page shows
        uri = mlflow_tracking_uri()
        # The log writer and the shadow pricer are background threads: with Python's default 5 ms GIL
        # switch interval a request can wait behind them; 1 ms keeps them off the request's latency.
        sys.setswitchinterval(float(os.environ.get("HOMEPRICE_GIL_SWITCH_SECONDS", "0.001")))
        self.mode = os.environ.get("HOMEPRICE_SERVING_MODE", DEFAULT_MODE)
        self.log = PredictionLog(
            os.environ.get("HOMEPRICE_PREDICTION_LOG_URL") or None,
            flush_interval_s=float(os.environ.get("HOMEPRICE_PREDICTION_LOG_FLUSH_SECONDS", "0.5")),
            on_failure=lambda n: LOG_FAILURES.inc(n),
        )
        self.shadow = ShadowPricer(predictor.predict, self._shadow_done, on_failure=SHADOW_FAILURES.inc)
        self.serving = Serving()
        self.follower: RolloutFollower | None = None
        if self.mode == "pinned":
            self._load_pinned()
        else:
            self.follower = RolloutFollower(
                Registry(tracking_uri=uri, model_name=self.model_name),
                interval_s=float(os.environ.get("HOMEPRICE_SERVING_POLL_SECONDS", "5")),
                on_change=self._changed,
                on_error=lambda _exc: POLL_ERRORS.inc(),
            )
            self.follower.poll()
            self.follower.start()

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        """Stop following, price what the shadow still holds, and write what the prediction log still
        holds: a redeploy loses no prediction."""
        if self.follower is not None:
            self.follower.stop()
        self.shadow.close()
        self.log.close()

    def _load_pinned(self) -> None:
        import bentoml.mlflow

        model = bentoml.models.get(_baked_model(self.model_name))
        pyfunc = bentoml.mlflow.load_model(model)
        version = model.info.labels.get("model_version", str(model.tag.version))
        inner = serving_model(pyfunc.unwrap_python_model())
        champion = LoadedModel(version, ROLE, str(model.tag), pyfunc, inner)
        self._changed(Serving(champion=champion), self.serving)

    def _changed(self, new: Serving, old: Serving) -> None:
        """Publish the new snapshot (one assignment), then move the gauges."""
        self.serving = new
        for role, version in old.roles().items():
            if new.roles().get(role) != version:
                MODEL_INFO.labels(role=role, model_version=version).set(0)
        for role, version in new.roles().items():
            MODEL_INFO.labels(role=role, model_version=version).set(1)
        for mode in ("shadow", "ab"):
            ROLLOUT.labels(mode=mode).set(new.info()["rollout_weight"] if new.mode == mode else 0)
        for figure, gauge in LIVE.items():
            for version in set(old.state.live) - set(new.state.live):
                with contextlib.suppress(KeyError):  # never set (no such figure for it)
                    gauge.remove(version)
            for version, figures in new.state.live.items():
                value = figures.get(figure)
                if isinstance(value, int | float):
                    gauge.labels(model_version=version).set(value)

    def __is_ready__(self) -> bool:
        """Not ready (503 on /readyz) until a model is loaded."""
        return self.serving.champion is not None

    def _snapshot(self, endpoint: str) -> Serving:
        serving = self.serving  # read once: a flip during this request does not change its models
        if serving.champion is None:
            ERRORS.labels(endpoint=endpoint, kind="not_ready").inc()
            raise ServiceUnavailable(f"no '{ROLE}' model loaded yet for {self.model_name}")
        return serving

    def _model(self, endpoint: str) -> LoadedModel:
        return self._snapshot(endpoint).champion  # type: ignore[return-value]

    def _shadow_done(self, job: ShadowJob, out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        model = job.model
        _predictions("shadow", model.version, model.role).inc(len(job.batch))
        self.log.submit(
            len(job.batch),
            functools.partial(log_rows, job.request_id, self.model_name, model, job.batch, *out),
        )

    def _arms(self, serving: Serving, batch: Batch, client_key: str | None) -> np.ndarray:
        """A/B: True for homes the candidate answers (sticky by parcel_id, else the client key header);
        homes in a location the candidate never saw stay with the champion."""
        candidate = serving.candidate
        if serving.mode != "ab" or candidate is None:
            return np.zeros(len(batch), dtype=bool)
        known = candidate.inner.locations
        return np.fromiter(
            (
                in_candidate_arm(p or client_key, serving.weight, candidate.version) and loc in known
                for p, loc in zip(batch.parcel_ids, batch.locations, strict=True)
            ),
            dtype=bool,
            count=len(batch),
        )

    def _run(self, endpoint: str, model: LoadedModel, batch: Batch) -> tuple[np.ndarray, ...]:
        try:
            return outputs(predictor.predict(model, batch.columns))
        except predictor.RequestError as exc:  # unknown location, outside the model's bounds: a 4xx
            ERRORS.labels(endpoint=endpoint, kind="bad_input").inc()
            raise BadInput(str(exc)) from exc

    def _price(self, endpoint: str, batch: Batch, client_key: str | None = None) -> Priced:
        """Price a batch with the serving snapshot: by arm in A/B, the champion otherwise (and the
        candidate off the request path in shadow); every answer is logged with its version and role."""
        serving = self._snapshot(endpoint)
        champion = serving.champion
        assert champion is not None
        request_id = uuid.uuid4().hex
        arms = self._arms(serving, batch, client_key)
        groups = [(champion, np.flatnonzero(~arms))]
        if arms.any():
            groups.insert(0, (serving.candidate, np.flatnonzero(arms)))
        n = len(batch)
        priced = Priced(
            request_id, champion, np.empty(n), np.empty(n), np.empty(n), np.empty(n, dtype=object)
        )
        answered = []
        for model, idx in groups:
            if not len(idx):
                continue
            part = batch.take(idx)
            try:
                prices, lowers, uppers = self._run(endpoint, model, part)
            except BadInput:
                if model is champion:
                    raise
                model = champion  # the candidate refuses what the champion takes (its own bounds): champion
                prices, lowers, uppers = self._run(endpoint, model, part)
            answered.append((model, idx, part, prices, lowers, uppers))
        # Counted and logged only once every arm has answered: a request refused for one home served nothing.
        for model, idx, part, prices, lowers, uppers in answered:
            priced.prices[idx], priced.lowers[idx], priced.uppers[idx] = prices, lowers, uppers
            priced.models[idx] = model
            _predictions(endpoint, model.version, model.role).inc(len(idx))
            for p in prices[:10_000]:  # a sample is enough for the distribution
                PRICES.observe(float(p))
            # The log rows are built on the log's writer thread, not here: the request only queues the job.
            self.log.submit(
                len(part),
                functools.partial(log_rows, request_id, self.model_name, model, part, prices, lowers, uppers),
            )
        if serving.mode == "shadow" and serving.candidate is not None:
            self.shadow.submit(ShadowJob(request_id, batch, serving.candidate))
        return priced

    @staticmethod
    def _client_key(ctx: bentoml.Context) -> str | None:
        try:
            return ctx.request.headers.get(CLIENT_KEY_HEADER) or None
        except Exception:  # no HTTP request (called in-process)
            return None

    def _predict_one(self, home: Home, client_key: str | None) -> Prediction:
        return self._price("predict", Batch.from_homes([home]), client_key).predictions()[0]

    def _predict_fast(self, inputs: Any, headers: list[tuple[bytes, bytes]]) -> Prediction:
        """``POST /predict`` answered by the ``FastApi`` middleware (below): ``inputs`` is the API's own
        validated input model, ``headers`` the request's raw header pairs."""
        key = CLIENT_KEY_HEADER.encode()
        client_key = next((v.decode("latin-1") for k, v in headers if k == key), None)
        return self._predict_one(inputs.home, client_key or None)

    @bentoml.api
    async def predict(self, home: Home, ctx: bentoml.Context) -> Prediction:
        """Price one home: the price, its interval, and the model version and role that made it."""
        # Over HTTP the FastApi middleware answers this route (the same contract without BentoML's API
        # dispatch, which cost more CPU than the pricing); this API defines the route, its OpenAPI
        # document, in-process calls, and the answer with HOMEPRICE_FAST_PREDICT=0. Priced on the event
        # loop: one home takes a fraction of a millisecond, less than a hop to a worker thread and back.
        return self._predict_one(home, self._client_key(ctx))

    @bentoml.api(input_spec=BatchInput)
    def predict_batch(
        self,
        homes: Annotated[list[Home], Field(min_length=1, max_length=MAX_BATCH_ROWS)],
        ctx: bentoml.Context,
    ) -> BatchPrediction:
        """Price up to 100,000 homes in one request, in one vectorized model call per serving model."""
        # Over HTTP, ``homes`` is usually the request already in columns (``BatchInput``), and the answer
        # is written as JSON text without a Prediction per row; called in-process, a BatchPrediction.
        batch = homes if isinstance(homes, Batch) else Batch.from_homes(homes)
        priced = self._price("predict_batch", batch, self._client_key(ctx))
        if isinstance(homes, Batch):
            body = predictions_json(
                priced.request_id,
                priced.prices,
                priced.lowers,
                priced.uppers,
                priced.models,
                priced.champion.version,
            )
            if body is not None:
                return Response(body, media_type="application/json")  # type: ignore[return-value]
        preds = priced.predictions()
        return BatchPrediction(predictions=preds, rows=len(preds), model_version=priced.champion.version)

    @bentoml.api
    def predict_columns(self, columns: HomeColumns, ctx: bentoml.Context) -> ColumnPredictions:
        """Price up to 100,000 homes sent as one list per field (the fastest form for large batches)."""
        priced = self._price("predict_columns", Batch.from_columns(columns), self._client_key(ctx))
        models = priced.models
        return ColumnPredictions.model_construct(
            price=priced.prices.tolist(),
            price_lower=priced.lowers.tolist(),
            price_upper=priced.uppers.tolist(),
            model_version=[m.version for m in models],
            model_role=[m.role for m in models],
            interval_level=priced.champion.inner.interval_level,
            request_id=priced.request_id,
            rows=len(models),
        )

    @bentoml.api
    def locations(self) -> list[LocationCount]:
        """The locations the model knows, with their training sales (for a location dropdown)."""
        model = self._model("locations")
        return [LocationCount(location=k, sales=int(v)) for k, v in sorted(model.inner.locations.items())]

    @bentoml.api
    def explain(self, home: Home) -> Explanation:
        """One prediction's SHAP contributions (log-price units) by the champion, largest first."""
        model = self._model("explain")
        try:
            return predictor.explain(model, predictor.to_columns([home]))
        except predictor.RequestError as exc:
            ERRORS.labels(endpoint="explain", kind="bad_input").inc()
            raise BadInput(str(exc)) from exc

    @bentoml.api
    def model_info(self) -> dict[str, Any]:
        """Versions serving each role, the rollout state (mode, weight, since) and the last action; what the
        champion takes (its bounds, whether it uses coordinates) and how the web page shows values."""
        serving = self.serving
        champion = serving.champion.inner if serving.champion else None
        return {
            "mode": self.mode,
            **{f"{role}_version": v for role, v in serving.roles().items()},
            **serving.info(),
            "model_name": self.model_name,
            "trained_through": getattr(champion, "trained_through", None),
            "uses_coordinates": "latitude" in (getattr(champion, "input_fields", None) or ["latitude"]),
            "bounds": dict(getattr(champion, "bounds", None) or {}),
            "currency_symbol": self.page.currency_symbol,
            "area_unit": self.page.area_unit,
            "shadow_pending": self.shadow.pending,
            "log_pending": self.log.pending,
        }


HomePrice.add_asgi_middleware(JsonOnly)
# Inside JsonOnly (added first, so outermost of the two): a non-JSON body is refused before the fast path.
HomePrice.add_asgi_middleware(FastApi, service=HomePrice, api="predict", handler="_predict_fast")
