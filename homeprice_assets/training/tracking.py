"""MLflow packaging of ``HomePriceModel``: save as a pyfunc, register through the registry, check inputs.

The logged model is the *whole* predictor (feature engineering, index, trees, interval), so anything that
can load a registered version (``Registry.load``) can price a home. The model class is
pickled by reference to the small ``homeprice_model`` package, which is logged with every version
(``code_paths``): loading needs neither this pipeline package nor its module layout. Third-party
requirements are pinned in ``pip_requirements``; the version's inputs, bounds and features are in its
metadata and in ``features.json`` beside the model.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ColSpec, Schema

import homeprice_model
from homeprice_model.features import INPUT_FIELDS
from homeprice_model.model import HomePriceModel, required_inputs

if TYPE_CHECKING:
    from homeprice_assets.resources.registry import Registry

_PINNED = ("mlflow", "lightgbm", "pandas", "numpy", "scipy", "shap", "cloudpickle")
# The served model's code, logged with each version: a directory MLflow copies to <model>/code/.
MODEL_CODE_PATH = Path(homeprice_model.__file__).resolve().parent
FEATURES_FILE = "features.json"


class FeatureMismatchError(ValueError):
    """The inputs do not match the model's logged input schema (missing, extra or retyped columns)."""

    def __init__(self, missing: list[str], extra: list[str], retyped: dict[str, tuple[str, str]]) -> None:
        self.missing, self.extra, self.retyped = missing, extra, retyped
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(f"unexpected column(s) {extra}")
        if retyped:
            parts.append(
                "retyped column(s) "
                + ", ".join(f"{c!r} (model expects {want}, got {got})" for c, (want, got) in retyped.items())
            )
        super().__init__("feature mismatch with the model's input schema: " + "; ".join(parts))


def pip_requirements() -> list[str]:
    """Exact versions of the packages the pickled model needs, as installed here."""
    out = []
    for pkg in _PINNED:
        try:
            out.append(f"{pkg}=={importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            out.append(pkg)
    return out


def input_example(table: pd.DataFrame, rows: int = 5, model: HomePriceModel | None = None) -> pd.DataFrame:
    """Raw input fields of a few rows of a feature table: what a caller sends to the served model.

    With ``model``, only the inputs it was trained with (a model without coordinates takes none).
    """
    # parcel_id (repeat sales) is kept for the models that take it; the signature keeps a model's own inputs.
    known = (*INPUT_FIELDS, "parcel_id")
    fields = model.input_fields if model is not None else [c for c in known if c in table]
    return table[list(fields)].head(rows).reset_index(drop=True)


def _model_example(model: HomePriceModel, example: pd.DataFrame) -> pd.DataFrame:
    return example[[c for c in model.input_fields if c in example.columns]].reset_index(drop=True)


def model_signature(model: HomePriceModel, example: pd.DataFrame) -> ModelSignature:
    """Signature from ``example``, limited to the model's ``input_fields``; only the inputs no price can
    be made without (``location``, ``living_sf``) are required, ``sale_date`` and the rest are optional."""
    example = _model_example(model, example)
    output = model.predict(None, example)
    inferred = infer_signature(example, output, params={"interval_level": model.interval_level})
    required = set(required_inputs(model))
    cols = [ColSpec(type=s.type, name=s.name, required=s.name in required) for s in inferred.inputs.inputs]
    return ModelSignature(inputs=Schema(cols), outputs=inferred.outputs, params=inferred.params)


def features_json(model: HomePriceModel) -> dict[str, Any]:
    """What ``features.json`` records for a version: its tree features and the inputs it takes."""
    return {
        "features": list(model.feature_names),
        "input_fields": list(model.input_fields),
        "feature_version": model.feature_version,
    }


def model_metadata(model: HomePriceModel, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The MLmodel ``metadata`` of a version: what a service needs without unpickling (bounds, inputs)."""
    return {
        "trained_through": model.trained_through,
        "interval_level": model.interval_level,
        "feature_version": model.feature_version,
        "feature_names": list(model.feature_names),
        "input_fields": list(model.input_fields),
        "bounds": dict(model.bounds or {}),
        "homeprice_version": _version("homeprice"),
        "model_code_version": homeprice_model.MODEL_CODE_VERSION,
        **(extra or {}),
    }


class _PickledOnPurpose(logging.Filter):
    """MLflow warns at every save that a ``python_model`` object is pickled. Here that is the design: the
    class's code is logged with it (``code/homeprice_model``), so the pickle never depends on this
    repository's layout. The warning is dropped; every other MLflow message stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passing a Python object as `python_model`")


logging.getLogger("mlflow.pyfunc").addFilter(_PickledOnPurpose())


def save_price_model(
    model: HomePriceModel, path: str | Path, example: pd.DataFrame, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` as an MLflow pyfunc directory at ``path`` (for ``Registry.register``).

    The signature, metadata, code (``homeprice_model`` under ``code/``), pinned requirements and
    ``features.json``; no MLflow run or store is touched: the registry resource uploads the directory with
    its own client.
    """
    example = _model_example(model, example)
    mlflow.pyfunc.save_model(
        str(path),
        python_model=model,
        code_paths=[str(MODEL_CODE_PATH)],
        pip_requirements=pip_requirements(),
        signature=model_signature(model, example),
        input_example=example,
        metadata=model_metadata(model, metadata),
    )
    (Path(path) / FEATURES_FILE).write_text(json.dumps(features_json(model), indent=2))
    return Path(path)


def register_price_model(
    registry: Registry, model: HomePriceModel, example: pd.DataFrame, tags: dict[str, Any] | None = None
) -> str:
    """Save ``model`` as ``price_model`` does and register it as a new version (in a run of its own).

    For tools that register a model trained outside the lifecycle (benchmarks, tests, a replay); returns
    the version.
    """
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_price_model(model, Path(tmp) / "model", example)
        with registry.run(run_name=f"register-through-{model.trained_through}") as run:
            return str(registry.register(run, model_dir, tags=tags).version)


def input_schema(model: str | mlflow.pyfunc.PyFuncModel) -> Schema:
    """The logged input schema of a model URI or loaded pyfunc."""
    if isinstance(model, str):
        info = mlflow.models.get_model_info(model)
        signature = info.signature
    else:
        signature = model.metadata.signature
    if signature is None or signature.inputs is None:
        raise ValueError("the model was logged without an input signature")
    return signature.inputs


_COMPATIBLE = {
    # What MLflow's schema enforcement converts by itself. It refuses int64 -> double (unless all values
    # are 0/1), so integer columns count as retyped: cast them with ``coerce_inputs``.
    "double": {"double", "float", "integer"},
    "float": {"float", "integer"},
    "long": {"long", "integer"},
    "datetime": {"datetime", "string"},
}


def coerce_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """Raw request rows typed as the model's schema expects: numbers as float64, ``location`` as text,
    ``sale_date`` as datetime. JSON decoders hand integers over as int64, which MLflow will not take for a
    double column; serving code calls this before ``pyfunc.predict``.
    """
    out = frame.copy()
    for col in out.columns:
        if col == "location":
            out[col] = out[col].astype("string").astype(object).where(out[col].notna(), None)
        elif col == "sale_date":
            out[col] = pd.to_datetime(out[col], errors="coerce")
        elif col in INPUT_FIELDS:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    return out


# MLflow infers a column's type value by value; a column's dtype is the frame's, so an evenly spaced sample
# of its values says the same (the 43,000 bundled sales: 0.49 s -> 0.05 s).
_TYPE_SAMPLE = 5_000


def _mlflow_type(series: pd.Series) -> str:
    values = series.dropna()
    if len(values) > _TYPE_SAMPLE:
        values = values.iloc[:: -(-len(values) // _TYPE_SAMPLE)]
    try:
        return infer_signature(values.to_frame()).inputs.inputs[0].type.name
    except Exception:
        return str(series.dtype)


def check_feature_mismatch(
    frame: pd.DataFrame,
    model: str | mlflow.pyfunc.PyFuncModel | Schema,
    allow_extra: bool = False,
    require_optional: bool = True,
) -> None:
    """Raise ``FeatureMismatchError`` naming missing, extra and retyped columns of ``frame``.

    Validation data must carry every column the model was logged with (``require_optional=True``): a
    feature silently missing there would score a different model than the one trained. Serving passes
    ``require_optional=False``, accepting what the schema marks optional (``sale_date``, optional fields).
    A column is retyped when MLflow could not convert it losslessly to the logged type; an all-null column
    the schema lacks is not extra (a model trained without coordinates scores a table whose coordinates
    are null).
    """
    schema = model if isinstance(model, Schema) else input_schema(model)
    specs = {s.name: s for s in schema.inputs}
    missing = [n for n, s in specs.items() if n not in frame.columns and (require_optional or s.required)]
    # A column the model does not take counts as extra only when it holds values: data without
    # coordinates still has all-null latitude/longitude columns, which a model trained without them ignores.
    extra = [] if allow_extra else [c for c in frame.columns if c not in specs and frame[c].notna().any()]
    retyped: dict[str, tuple[str, str]] = {}
    for name, spec in specs.items():
        if name not in frame.columns or frame[name].isna().all():
            continue
        want = spec.type.name
        got = _mlflow_type(frame[name])
        if got != want and got not in _COMPATIBLE.get(want, set()):
            retyped[name] = (want, got)
    if missing or extra or retyped:
        raise FeatureMismatchError(missing, extra, retyped)


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"
