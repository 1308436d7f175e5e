"""homeprice prediction service (BentoML 1.4).

Run from the repository:   bentoml serve bento.service:HomePrice --port 3001
Follows the registry alias ``champion`` by default and swaps to a newly promoted version without dropping
a request (``HOMEPRICE_SERVING_MODE=follow``); a built Bento defaults to ``pinned``: the model baked into it.
Every prediction is logged (``HOMEPRICE_PREDICTION_LOG_URL``, SQLite under the project home by default).
"""

from __future__ import annotations

import functools
import os
import uuid
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.exceptions import BadInput, ServiceUnavailable
from pydantic import Field
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route

from homeprice_assets.config import mlflow_tracking_uri
from homeprice_assets.serving import predictor
from homeprice_assets.serving.holder import AliasFollower, LoadedModel, ModelHolder
from homeprice_assets.serving.middleware import JsonOnly
from homeprice_assets.serving.predlog import PredictionLog
from homeprice_assets.serving.schemas import (
    MAX_BATCH_ROWS,
    BatchPrediction,
    Explanation,
    Home,
    LocationCount,
    Prediction,
)

STATIC = Path(__file__).resolve().parent / "static"
# Inside a built Bento this file sits at <bento>/src/bento/service.py, next to <bento>/bento.yaml.
BUILT_BENTO = Path(__file__).resolve().parents[2] / "bento.yaml"
MODEL_NAME = os.environ.get("HOMEPRICE_MODEL_NAME", "homeprice")


def _baked_model() -> str:
    """The model tag baked into this Bento (its bento.yaml), else ``$HOMEPRICE_BENTO_MODEL`` or latest."""
    if BUILT_BENTO.is_file():
        import yaml

        models = yaml.safe_load(BUILT_BENTO.read_text()).get("models") or []
        if models:
            return str(models[0]["tag"])
    return os.environ.get("HOMEPRICE_BENTO_MODEL", f"{MODEL_NAME}:latest")


DEFAULT_MODE = "pinned" if BUILT_BENTO.is_file() else "follow"
ROLE = "champion"

PREDICTIONS = bentoml.metrics.Counter(
    name="homeprice_predictions_total", documentation="Homes priced", labelnames=["endpoint", "model_version"]
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
ERRORS = bentoml.metrics.Counter(
    name="homeprice_request_errors_total",
    documentation="Refused or failed requests",
    labelnames=["endpoint", "kind"],
)
POLL_ERRORS = bentoml.metrics.Counter(
    name="homeprice_registry_poll_errors_total",
    documentation="Registry polls or model loads that failed (the loaded model keeps serving)",
)
LOG_FAILURES = bentoml.metrics.Counter(
    name="homeprice_prediction_log_failures_total", documentation="Prediction rows that could not be logged"
)


def _log_rows(
    request_id: str,
    model: LoadedModel,
    homes: list[Home],
    prices: np.ndarray,
    lowers: np.ndarray,
    uppers: np.ndarray,
) -> list[dict]:
    """One prediction-log row per home (run on the log's writer thread)."""
    return [
        {
            "request_id": f"{request_id}-{i}",
            "model_name": MODEL_NAME,
            "model_version": model.version,
            "model_role": model.role,
            "parcel_id": h.parcel_id,
            "location": h.location,
            "inputs": h.model_dump_json(exclude_none=True),  # pydantic-core writes the JSON: cheapest
            "price": float(p),
            "price_lower": float(lo),
            "price_upper": float(hi),
        }
        for i, (h, p, lo, hi) in enumerate(zip(homes, prices, lowers, uppers, strict=True))
    ]


def _page(request: object) -> FileResponse:
    return FileResponse(STATIC / "index.html")


ui = Starlette(routes=[Route("/", _page)])


@bentoml.asgi_app(ui, path="/ui")
@bentoml.service(
    name="homeprice",
    traffic={"timeout": 120},
    http={"cors": {"enabled": False}},
)
class HomePrice:
    """Price homes with the champion model: one, many, explained, with intervals."""

    def __init__(self) -> None:
        import mlflow

        mlflow.set_tracking_uri(mlflow_tracking_uri())
        self.mode = os.environ.get("HOMEPRICE_SERVING_MODE", DEFAULT_MODE)
        self.holder = ModelHolder()
        self.log = PredictionLog(
            os.environ.get("HOMEPRICE_PREDICTION_LOG_URL") or None,
            flush_interval_s=float(os.environ.get("HOMEPRICE_PREDICTION_LOG_FLUSH_SECONDS", "0.5")),
            on_failure=lambda n: LOG_FAILURES.inc(n),
        )
        self.follower: AliasFollower | None = None
        if self.mode == "pinned":
            self._load_pinned()
        else:
            self.follower = AliasFollower(
                self.holder,
                MODEL_NAME,
                alias=ROLE,
                role=ROLE,
                interval_s=float(os.environ.get("HOMEPRICE_SERVING_POLL_SECONDS", "5")),
                on_swap=self._swapped,
                on_error=lambda _exc: POLL_ERRORS.inc(),
            )
            self.follower.poll()
            self.follower.start()

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        """Stop following and write what the prediction log still holds: a redeploy loses no prediction."""
        if self.follower is not None:
            self.follower.stop()
        self.log.close()

    def _load_pinned(self) -> None:
        import bentoml.mlflow

        model = bentoml.models.get(_baked_model())
        pyfunc = bentoml.mlflow.load_model(model)
        version = model.info.labels.get("model_version", str(model.tag.version))
        self._swapped(LoadedModel(version, ROLE, str(model.tag), pyfunc, pyfunc.unwrap_python_model()), None)

    def _swapped(self, new: LoadedModel, old: LoadedModel | None) -> None:
        if old is not None:
            MODEL_INFO.labels(role=old.role, model_version=old.version).set(0)
        self.holder.put(new)
        MODEL_INFO.labels(role=new.role, model_version=new.version).set(1)

    def __is_ready__(self) -> bool:
        """Not ready (503 on /readyz) until a model is loaded."""
        return self.holder.get(ROLE) is not None

    def _model(self, endpoint: str) -> LoadedModel:
        model = self.holder.get(ROLE)
        if model is None:
            ERRORS.labels(endpoint=endpoint, kind="not_ready").inc()
            raise ServiceUnavailable(f"no '{ROLE}' model loaded yet for {MODEL_NAME}")
        return model

    def _price(self, endpoint: str, homes: list[Home]) -> tuple[LoadedModel, list[Prediction]]:
        model = self._model(endpoint)
        frame = predictor.to_frame(homes)
        try:
            out = predictor.predict(model, frame)
        except predictor.UnknownLocationError as exc:
            ERRORS.labels(endpoint=endpoint, kind="bad_input").inc()
            raise BadInput(str(exc)) from exc
        request_id = uuid.uuid4().hex
        level = model.inner.interval_level
        prices, lowers, uppers = (out[c].to_numpy(float) for c in ("price", "price_lower", "price_upper"))
        # Built without re-validation: the values come straight from the model (100k rows in a batch).
        preds = [
            Prediction.model_construct(
                price=float(p),
                price_lower=float(lo),
                price_upper=float(hi),
                interval_level=level,
                model_version=model.version,
                model_role=model.role,
                request_id=f"{request_id}-{i}",
            )
            for i, (p, lo, hi) in enumerate(zip(prices, lowers, uppers, strict=True))
        ]
        PREDICTIONS.labels(endpoint=endpoint, model_version=model.version).inc(len(preds))
        for p in prices[:10_000]:  # a sample is enough for the distribution
            PRICES.observe(float(p))
        # The log rows are built on the log's writer thread, not here: the request only queues the job.
        self.log.submit(
            len(homes), functools.partial(_log_rows, request_id, model, homes, prices, lowers, uppers)
        )
        return model, preds

    @bentoml.api
    def predict(self, home: Home) -> Prediction:
        """Price one home: the price, its interval and the model version that made it."""
        return self._price("predict", [home])[1][0]

    @bentoml.api
    def predict_batch(
        self, homes: Annotated[list[Home], Field(min_length=1, max_length=MAX_BATCH_ROWS)]
    ) -> BatchPrediction:
        """Price up to 100,000 homes in one request, in one vectorized model call."""
        model, preds = self._price("predict_batch", homes)
        return BatchPrediction(predictions=preds, rows=len(preds), model_version=model.version)

    @bentoml.api
    def locations(self) -> list[LocationCount]:
        """The locations the model knows, with their training sales (for a location dropdown)."""
        model = self._model("locations")
        return [LocationCount(location=k, sales=int(v)) for k, v in sorted(model.inner.locations.items())]

    @bentoml.api
    def explain(self, home: Home) -> Explanation:
        """One prediction's SHAP contributions (log-price units), largest first."""
        model = self._model("explain")
        try:
            return predictor.explain(model, predictor.to_frame([home]))
        except predictor.UnknownLocationError as exc:
            ERRORS.labels(endpoint="explain", kind="bad_input").inc()
            raise BadInput(str(exc)) from exc

    @bentoml.api
    def model_info(self) -> dict[str, str]:
        """The model version serving each role, and where it came from."""
        return {
            "mode": self.mode,
            **{f"{role}_version": v for role, v in self.holder.roles().items()},
            "model_name": MODEL_NAME,
        }


HomePrice.add_asgi_middleware(JsonOnly)
